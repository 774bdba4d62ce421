#ifndef DCASGD_BASE_FILE_H_
#define DCASGD_BASE_FILE_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dcasgd {

// A file written in full and then put in the place of `path` atomically: a
// temporary file in the same directory is written, fsync'd, renamed over
// `path` and, when durable, the directory is fsync'd so the rename survives a
// crash. Until Commit() succeeds `path` is unchanged, and a writer destroyed
// before that removes its temporary file. Every system call is retried on
// EINTR. Errors name `path` (after `label`, e.g. "checkpoint") and the
// failing step, with the errno's status code (ENOSPC: RESOURCE_EXHAUSTED).
// Not thread-safe: one writer per file being written.
class AtomicFileWriter {
 public:
  // Creates the temporary file "<path>.tmp.<pid>".
  static absl::StatusOr<std::unique_ptr<AtomicFileWriter>> Create(std::string path,
                                                                  std::string label = "");
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  // Appends all of `bytes` to the temporary file (unbuffered: callers batch).
  absl::Status Write(absl::string_view bytes);
  // Makes the file the new `path`: fsync (durable only), close, rename, fsync
  // of the directory (durable only). After an error the temporary file is
  // removed and the writer is spent.
  absl::Status Commit(bool durable = true);

  const std::string& path() const { return path_; }

 private:
  AtomicFileWriter(std::string path, std::string label, std::string temp, int fd);
  // `step` of `path` failed with `error`.
  absl::Status Error(int error, absl::string_view step) const;
  // Closes and removes the temporary file (an abandoned write).
  void Discard();

  const std::string path_;
  const std::string label_;  // prefix of error messages, may be empty
  const std::string temp_;
  int fd_;  // -1 once closed
  bool committed_ = false;
};

// Replaces `path` with `contents` through an AtomicFileWriter. `durable`
// false skips both fsyncs: for files such as port files that must appear
// whole but need not survive a crash.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents,
                                 bool durable = true);

// The whole file. NOT_FOUND when it does not exist.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

}  // namespace dcasgd

#endif  // DCASGD_BASE_FILE_H_
