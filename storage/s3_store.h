#ifndef DCASGD_STORAGE_S3_STORE_H_
#define DCASGD_STORAGE_S3_STORE_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "storage/blob_store.h"

namespace dcasgd::storage {

struct S3Config {
  // "scheme://host[:port]". Empty means AWS: "https://s3.REGION.amazonaws.com".
  std::string endpoint;
  std::string region = "us-east-1";
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  // optional; sent as x-amz-security-token
  std::string bucket;
  std::string prefix;  // key prefix inside the bucket, without leading/trailing '/'

  // ListObjectsV2 max-keys per page (1..1000).
  int list_page_size = 1000;
  // Attempts per request (>= 1): retried on connection errors, timeouts,
  // HTTP 5xx and 429, with exponential backoff from initial_backoff, doubling,
  // capped at max_backoff.
  int max_attempts = 5;
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(5);
  absl::Duration connect_timeout = absl::Seconds(10);
  // Whole-request timeout; also applies when a server stops sending.
  absl::Duration request_timeout = absl::Seconds(120);
  // How backoff waits; null means absl::SleepFor. Tests inject a recorder.
  std::function<void(absl::Duration)> sleep;
};

// Reads the AWS conventions: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
// AWS_SESSION_TOKEN (optional), AWS_REGION (default us-east-1),
// AWS_ENDPOINT_URL_S3 or else AWS_ENDPOINT_URL (default: AWS). Leading and
// trailing '/' of `prefix` are dropped. FAILED_PRECONDITION when the key id or
// secret is missing; INVALID_ARGUMENT when `bucket` is empty.
absl::StatusOr<S3Config> S3ConfigFromEnv(absl::string_view bucket, absl::string_view prefix);

// A BlobStore over an S3-compatible service (AWS S3, MinIO, Ceph RGW, GCS's S3
// interface, s3rver) using libcurl with SigV4 signing and path-style URLs.
// Keys map to objects "PREFIX/KEY". Thread-safe: concurrent calls use separate
// curl handles from a small pool (so connections are reused). Calls block for
// the network round trips, including backoff between retries.
// HTTP errors: 403 -> PERMISSION_DENIED naming the bucket, the HTTP status
// and the S3 error code (e.g. SignatureDoesNotMatch, InvalidAccessKeyId);
// 404 -> NOT_FOUND naming bucket and key; 416 -> OUT_OF_RANGE; 400 ->
// INVALID_ARGUMENT; retryable failures that persist -> UNAVAILABLE.
class S3Store final : public BlobStore {
 public:
  // INVALID_ARGUMENT for an empty bucket or out-of-range page size/attempts.
  static absl::StatusOr<std::unique_ptr<S3Store>> Create(S3Config config);
  ~S3Store() override;

  absl::StatusOr<std::vector<BlobInfo>> List(absl::string_view prefix) override;
  absl::StatusOr<std::string> Get(absl::string_view key,
                                  std::optional<ByteRange> range = std::nullopt) override;
  absl::Status Put(absl::string_view key, absl::string_view bytes) override;
  std::string Describe(absl::string_view key) const override;

  const S3Config& config() const { return config_; }

 private:
  struct Request;
  struct Response;

  explicit S3Store(S3Config config);

  std::string ObjectKey(absl::string_view key) const;
  // Runs `request` with retries; returns the final response (any HTTP status)
  // or UNAVAILABLE if every attempt failed at the transport level or with a
  // retryable status.
  absl::StatusOr<Response> Perform(const Request& request);
  absl::StatusOr<Response> PerformOnce(const Request& request, void* curl);
  // Maps a non-2xx response to a status naming `object`.
  absl::Status HttpError(const Response& response, absl::string_view object) const;

  void* AcquireHandle();
  void ReleaseHandle(void* curl);

  // Constant after construction.
  const S3Config config_;
  const std::string endpoint_;  // resolved, without trailing '/'
  const std::string sigv4_param_;

  // State below is protected by pool_mu_.
  absl::Mutex pool_mu_;
  std::vector<void*> idle_handles_ ABSL_GUARDED_BY(pool_mu_);  // CURL*
};

}  // namespace dcasgd::storage

#endif  // DCASGD_STORAGE_S3_STORE_H_
