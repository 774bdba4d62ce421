#ifndef DCASGD_STORAGE_BLOB_STORE_H_
#define DCASGD_STORAGE_BLOB_STORE_H_

// BlobStore: the object storage a worker reads its data set from and the
// data-preparation tool writes it to. Two implementations: LocalDirStore (a
// directory, the embedded default) and S3Store (any S3-compatible service).
//
// Keys are relative to the store's root (a directory, or a bucket + prefix),
// use '/' as separator, and must be non-empty, must not start or end with
// '/', and must not contain empty, "." or ".." segments: such keys are
// INVALID_ARGUMENT.
//
// Errors (absl::Status; every message names the object, e.g.
// "s3://bucket/prefix/key" or "/dir/key"):
//   NOT_FOUND          the object (or S3 bucket) does not exist
//   PERMISSION_DENIED  credentials rejected (S3 403, with the S3 error code)
//   OUT_OF_RANGE       a range that starts at or past the end of the object
//   UNAVAILABLE        network/server trouble that outlasted the retries
//   INVALID_ARGUMENT   a malformed key or range
//   INTERNAL / UNKNOWN anything else the backend reported
// Implementations are thread-safe: concurrent calls on one store are allowed.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dcasgd::storage {

struct BlobInfo {
  std::string key;  // relative to the store's root
  uint64_t size = 0;
};

// Bytes [offset, offset + length) of an object; length must be > 0. A range
// running past the end of the object is clipped to the end.
struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;
};

class BlobStore {
 public:
  virtual ~BlobStore() = default;

  // Every object whose key starts with `prefix` ("" = all), sorted by key.
  // Follows the backend's paging to the end; blocks until done.
  virtual absl::StatusOr<std::vector<BlobInfo>> List(absl::string_view prefix) = 0;

  // The object's bytes, or only `range` of them.
  virtual absl::StatusOr<std::string> Get(absl::string_view key,
                                          std::optional<ByteRange> range = std::nullopt) = 0;

  // Creates or replaces the object with `bytes`. Readers never observe a
  // partially written object.
  virtual absl::Status Put(absl::string_view key, absl::string_view bytes) = 0;

  // A human-readable name of the object for messages, e.g.
  // "s3://bucket/prefix/train/shard-00000-of-00020.dsd".
  virtual std::string Describe(absl::string_view key) const = 0;
};

// Opens the store named by `uri`:
//   "s3://BUCKET[/PREFIX]"  S3Store configured from the environment (see
//                           S3ConfigFromEnv in s3_store.h)
//   "file:///ABS/DIR", "DIR" LocalDirStore rooted at DIR (need not exist yet)
// INVALID_ARGUMENT for an empty uri, an unknown scheme or an s3 uri without a
// bucket; FAILED_PRECONDITION when S3 credentials are missing.
absl::StatusOr<std::unique_ptr<BlobStore>> OpenBlobStore(absl::string_view uri);

// INVALID_ARGUMENT unless `key` obeys the key rules above.
absl::Status ValidateBlobKey(absl::string_view key);

}  // namespace dcasgd::storage

#endif  // DCASGD_STORAGE_BLOB_STORE_H_
