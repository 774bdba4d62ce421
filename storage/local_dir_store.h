#ifndef DCASGD_STORAGE_LOCAL_DIR_STORE_H_
#define DCASGD_STORAGE_LOCAL_DIR_STORE_H_

#include <string>

#include "storage/blob_store.h"

namespace dcasgd::storage {

// A BlobStore over a directory: key "a/b" is the file ROOT/a/b. Put writes a
// temporary file in the same directory and renames it over the target, so
// readers see the old or the new object, never a partial one; it creates
// missing parent directories. Listing skips the temporary files of in-flight
// Puts. The root need not exist until the first Put (List then returns
// nothing, Get NOT_FOUND). Thread-safe (holds no mutable state).
class LocalDirStore final : public BlobStore {
 public:
  explicit LocalDirStore(std::string root);

  absl::StatusOr<std::vector<BlobInfo>> List(absl::string_view prefix) override;
  absl::StatusOr<std::string> Get(absl::string_view key,
                                  std::optional<ByteRange> range = std::nullopt) override;
  absl::Status Put(absl::string_view key, absl::string_view bytes) override;
  std::string Describe(absl::string_view key) const override;

  const std::string& root() const { return root_; }

 private:
  const std::string root_;  // no trailing '/'
};

}  // namespace dcasgd::storage

#endif  // DCASGD_STORAGE_LOCAL_DIR_STORE_H_
