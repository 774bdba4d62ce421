#include "core/file_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dcasgd {
namespace {

absl::Status Errno(int error, const std::string& path, absl::string_view step) {
  return absl::ErrnoToStatus(error, absl::StrCat(path, ": ", step));
}

std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents,
                                 bool durable) {
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno(errno, path, absl::StrCat("create ", tmp));
  size_t done = 0;
  while (done < contents.size()) {
    const ssize_t n = write(fd, contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      close(fd);
      unlink(tmp.c_str());
      return Errno(error, path, absl::StrCat("write ", tmp));
    }
    done += static_cast<size_t>(n);
  }
  if ((durable && fsync(fd) != 0) || close(fd) != 0) {
    const int error = errno;
    unlink(tmp.c_str());
    return Errno(error, path, absl::StrCat("fsync/close ", tmp));
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    unlink(tmp.c_str());
    return Errno(error, path, absl::StrCat("rename ", tmp, " over it"));
  }
  if (!durable) return absl::OkStatus();
  const std::string dir = DirectoryOf(path);
  const int dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return Errno(errno, path, absl::StrCat("renamed, but open of ", dir));
  const int rc = fsync(dir_fd);
  const int error = errno;
  close(dir_fd);
  if (rc != 0) return Errno(error, path, absl::StrCat("renamed, but fsync of ", dir));
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, " does not exist"));
    return Errno(errno, path, "open");
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  return contents.str();
}

}  // namespace dcasgd
