#include "base/file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"

namespace dcasgd {
namespace {

std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

absl::Status FileError(int error, absl::string_view label, absl::string_view path,
                       absl::string_view step) {
  return absl::ErrnoToStatus(error,
                             absl::StrCat(label, label.empty() ? "" : " ", path, ": ", step));
}

// fsync(2), retried when a signal interrupts it.
int FsyncRetryingEintr(int fd) {
  int rc;
  do {
    rc = fsync(fd);
  } while (rc != 0 && errno == EINTR);
  return rc;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AtomicFileWriter>> AtomicFileWriter::Create(std::string path,
                                                                           std::string label) {
  std::string temp = absl::StrCat(path, ".tmp.", getpid());
  int fd;
  do {
    fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    return FileError(errno, label, path, absl::StrCat("create ", temp));
  }
  return std::unique_ptr<AtomicFileWriter>(
      new AtomicFileWriter(std::move(path), std::move(label), std::move(temp), fd));
}

AtomicFileWriter::AtomicFileWriter(std::string path, std::string label, std::string temp, int fd)
    : path_(std::move(path)), label_(std::move(label)), temp_(std::move(temp)), fd_(fd) {}

AtomicFileWriter::~AtomicFileWriter() {
  if (!committed_) Discard();
}

absl::Status AtomicFileWriter::Error(int error, absl::string_view step) const {
  return FileError(error, label_, path_, step);
}

void AtomicFileWriter::Discard() {
  if (fd_ < 0) return;
  close(fd_);
  fd_ = -1;
  unlink(temp_.c_str());
}

absl::Status AtomicFileWriter::Write(absl::string_view bytes) {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(path_, ": writer is spent"));
  while (!bytes.empty()) {
    const ssize_t n = write(fd_, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      Discard();
      return Error(error, absl::StrCat("write ", temp_));
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::Commit(bool durable) {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(path_, ": writer is spent"));
  if (durable && FsyncRetryingEintr(fd_) != 0) {
    const int error = errno;
    Discard();
    return Error(error, absl::StrCat("fsync ", temp_));
  }
  // close(2) is not retried on EINTR: on Linux the descriptor is released
  // either way.
  const int closed = close(fd_);
  fd_ = -1;
  if (closed != 0) {
    const int error = errno;
    unlink(temp_.c_str());
    return Error(error, absl::StrCat("close ", temp_));
  }
  if (rename(temp_.c_str(), path_.c_str()) != 0) {
    const int error = errno;
    unlink(temp_.c_str());
    return Error(error, absl::StrCat("rename ", temp_, " over it"));
  }
  committed_ = true;
  if (!durable) return absl::OkStatus();
  const std::string dir = DirectoryOf(path_);
  int dir_fd;
  do {
    dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  } while (dir_fd < 0 && errno == EINTR);
  if (dir_fd < 0) return Error(errno, absl::StrCat("renamed, but open of ", dir));
  const int rc = FsyncRetryingEintr(dir_fd);
  const int error = errno;
  close(dir_fd);
  if (rc != 0) return Error(error, absl::StrCat("renamed, but fsync of ", dir));
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents,
                                 bool durable) {
  absl::StatusOr<std::unique_ptr<AtomicFileWriter>> file = AtomicFileWriter::Create(path);
  if (!file.ok()) return file.status();
  if (absl::Status s = (*file)->Write(contents); !s.ok()) return s;
  return (*file)->Commit(durable);
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, " does not exist"));
    return absl::ErrnoToStatus(errno, absl::StrCat(path, ": open"));
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  return contents.str();
}

}  // namespace dcasgd
