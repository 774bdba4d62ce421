#ifndef DCASGD_TESTS_TESTING_S3RVER_PROCESS_H_
#define DCASGD_TESTS_TESTING_S3RVER_PROCESS_H_

// Test fixture support: runs the S3-compatible server @20minutes/s3rver
// (scripts/s3rver, which verifies SigV4 signatures) as a child process on a
// free loopback port with a fresh temporary directory and one bucket.
//
// Tests that need it must FAIL when it cannot start (node or the npm package
// missing), and may GTEST_SKIP only when AllowSkipS3() is true:
//
//   auto server = S3rverProcess::Start("bucket");
//   if (!server.ok() && AllowSkipS3()) GTEST_SKIP() << server.status();
//   ASSERT_TRUE(server.ok()) << server.status();

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace dcasgd::testing {

class S3rverProcess {
 public:
  // s3rver's built-in credentials.
  static constexpr const char* kAccessKeyId = "S3RVER";
  static constexpr const char* kSecretAccessKey = "S3RVER";

  // Starts `node --openssl-legacy-provider scripts/s3rver/start.js` (node from
  // $DCASGD_NODE or PATH) with `-p 0` and --configure-bucket `bucket`, waits
  // until it reports its port and answers HTTP. FAILED_PRECONDITION with a
  // how-to-fix message when node or the package is missing; UNAVAILABLE (with
  // the server's log) when it exits or does not answer within
  // `startup_timeout`.
  static absl::StatusOr<std::unique_ptr<S3rverProcess>> Start(
      const std::string& bucket, absl::Duration startup_timeout = absl::Seconds(30));

  S3rverProcess(const S3rverProcess&) = delete;
  S3rverProcess& operator=(const S3rverProcess&) = delete;
  // Stops the server (SIGTERM, then SIGKILL after 5 s), reaps it and removes
  // its temporary directory.
  ~S3rverProcess();

  const std::string& endpoint() const { return endpoint_; }  // "http://127.0.0.1:PORT"
  const std::string& bucket() const { return bucket_; }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }

 private:
  S3rverProcess() = default;

  pid_t pid_ = -1;
  int port_ = 0;
  std::string bucket_;
  std::string endpoint_;
  std::string temp_dir_;
  std::string log_path_;
};

// True when the environment sets DCASGD_ALLOW_SKIP_S3=1.
bool AllowSkipS3();

}  // namespace dcasgd::testing

#endif  // DCASGD_TESTS_TESTING_S3RVER_PROCESS_H_
