#include "storage/blob_store.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "storage/local_dir_store.h"
#include "storage/s3_store.h"

namespace dcasgd::storage {

absl::StatusOr<std::unique_ptr<BlobStore>> OpenBlobStore(absl::string_view uri) {
  if (uri.empty()) return absl::InvalidArgumentError("blob store URI is empty");
  absl::string_view rest = uri;
  if (absl::ConsumePrefix(&rest, "s3://")) {
    const size_t slash = rest.find('/');
    const absl::string_view bucket = rest.substr(0, slash);
    const absl::string_view prefix =
        slash == absl::string_view::npos ? absl::string_view() : rest.substr(slash + 1);
    if (bucket.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("S3 URI has no bucket: \"", uri, "\""));
    }
    absl::StatusOr<S3Config> config = S3ConfigFromEnv(bucket, prefix);
    if (!config.ok()) return config.status();
    absl::StatusOr<std::unique_ptr<S3Store>> store = S3Store::Create(*std::move(config));
    if (!store.ok()) return store.status();
    return std::unique_ptr<BlobStore>(*std::move(store));
  }
  if (absl::ConsumePrefix(&rest, "file://")) {
    if (rest.empty() || rest.front() != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat("file URI must name an absolute path (file:///dir): \"", uri, "\""));
    }
    return std::unique_ptr<BlobStore>(new LocalDirStore(std::string(rest)));
  }
  if (const size_t scheme = uri.find("://"); scheme != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported blob store URI scheme \"", uri.substr(0, scheme), "\" in \"", uri,
                     "\" (use s3://bucket/prefix, file:///dir or a directory path)"));
  }
  return std::unique_ptr<BlobStore>(new LocalDirStore(std::string(uri)));
}

}  // namespace dcasgd::storage
