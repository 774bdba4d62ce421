#include "storage/local_dir_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace dcasgd::storage {
namespace {

namespace fs = std::filesystem;

// Temporary files of in-flight Puts start with this and are never listed.
constexpr absl::string_view kTempPrefix = ".dcasgd-tmp-";

absl::Status ErrnoStatus(int err, absl::string_view what, absl::string_view object) {
  const std::string message = absl::StrCat(what, " ", object, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

// Closes the descriptor on scope exit.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // Closes now and reports close()'s errno (0 on success).
  int Close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc == 0 ? 0 : errno;
  }

 private:
  int fd_;
};

}  // namespace

absl::Status ValidateBlobKey(absl::string_view key) {
  if (key.empty()) return absl::InvalidArgumentError("object key is empty");
  if (key.front() == '/' || key.back() == '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("object key must not start or end with '/': \"", key, "\""));
  }
  size_t begin = 0;
  while (begin <= key.size()) {
    size_t end = key.find('/', begin);
    if (end == absl::string_view::npos) end = key.size();
    const absl::string_view segment = key.substr(begin, end - begin);
    if (segment.empty() || segment == "." || segment == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat("object key has an empty, '.' or '..' segment: \"", key, "\""));
    }
    begin = end + 1;
  }
  if (key.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError("object key contains a NUL byte");
  }
  return absl::OkStatus();
}

LocalDirStore::LocalDirStore(std::string root)
    : root_([&root] {
        absl::string_view r = root;
        while (r.size() > 1 && absl::ConsumeSuffix(&r, "/")) {
        }
        return std::string(r);
      }()) {}

std::string LocalDirStore::Describe(absl::string_view key) const {
  return absl::StrCat(root_, "/", key);
}

absl::StatusOr<std::vector<BlobInfo>> LocalDirStore::List(absl::string_view prefix) {
  std::vector<BlobInfo> out;
  std::error_code ec;
  if (!fs::exists(root_, ec)) return out;
  fs::recursive_directory_iterator it(root_, ec);
  if (ec) return ErrnoStatus(ec.value(), "cannot list", root_);
  for (const fs::recursive_directory_iterator end; it != end; it.increment(ec)) {
    if (ec) return ErrnoStatus(ec.value(), "cannot list", root_);
    const fs::directory_entry& entry = *it;
    if (!entry.is_regular_file(ec)) continue;
    if (absl::StartsWith(entry.path().filename().string(), kTempPrefix)) continue;
    const std::string key = entry.path().lexically_relative(root_).generic_string();
    if (!absl::StartsWith(key, prefix)) continue;
    const uintmax_t size = entry.file_size(ec);
    if (ec) continue;  // vanished between listing and stat
    out.push_back(BlobInfo{key, static_cast<uint64_t>(size)});
  }
  if (ec) return ErrnoStatus(ec.value(), "cannot list", root_);
  std::sort(out.begin(), out.end(),
            [](const BlobInfo& a, const BlobInfo& b) { return a.key < b.key; });
  return out;
}

absl::StatusOr<std::string> LocalDirStore::Get(absl::string_view key,
                                               std::optional<ByteRange> range) {
  if (absl::Status valid = ValidateBlobKey(key); !valid.ok()) return valid;
  if (range.has_value() && range->length == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("empty byte range requested from ", Describe(key)));
  }
  const std::string path = Describe(key);
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus(errno, "cannot open", path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "cannot stat", path);
  if (!S_ISREG(st.st_mode)) return absl::NotFoundError(absl::StrCat(path, " is not a file"));
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  uint64_t offset = 0;
  uint64_t length = size;
  if (range.has_value()) {
    if (range->offset >= size) {
      return absl::OutOfRangeError(
          absl::StrCat("range starts at ", range->offset, " but ", path, " has ", size, " bytes"));
    }
    offset = range->offset;
    length = std::min(range->length, size - offset);
  }
  std::string out(length, '\0');
  uint64_t done = 0;
  while (done < length) {
    const ssize_t n =
        ::pread(fd.get(), out.data() + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "cannot read", path);
    }
    if (n == 0) {
      return absl::DataLossError(absl::StrCat(path, " shrank while being read"));
    }
    done += static_cast<uint64_t>(n);
  }
  return out;
}

absl::Status LocalDirStore::Put(absl::string_view key, absl::string_view bytes) {
  if (absl::Status valid = ValidateBlobKey(key); !valid.ok()) return valid;
  const fs::path path(Describe(key));
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  if (ec) return ErrnoStatus(ec.value(), "cannot create directory for", path.string());

  // Unique among concurrent Puts of this process; the pid separates processes.
  static std::atomic<uint64_t> temp_counter{0};
  const fs::path temp =
      path.parent_path() / absl::StrCat(kTempPrefix, path.filename().string(), ".", ::getpid(), ".",
                                        temp_counter.fetch_add(1));
  FileDescriptor fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) return ErrnoStatus(errno, "cannot create", temp.string());
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::unlink(temp.c_str());
      return ErrnoStatus(err, "cannot write", temp.string());
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0 || fd.Close() != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    return ErrnoStatus(err, "cannot flush", temp.string());
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    return ErrnoStatus(err, "cannot rename into place", path.string());
  }
  return absl::OkStatus();
}

}  // namespace dcasgd::storage
