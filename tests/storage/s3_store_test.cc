// S3Store behaviours beyond the BlobStore contract: credential errors from a
// signature-verifying server, prefix isolation, configuration, and retries
// against a scripted HTTP server.
#include "storage/s3_store.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/s3rver_process.h"

namespace dcasgd::storage {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kBucket[] = "s3store-bucket";

class S3StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<testing::S3rverProcess>> server =
        testing::S3rverProcess::Start(kBucket);
    if (!server.ok() && testing::AllowSkipS3()) GTEST_SKIP() << server.status();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  S3Config Config() const {
    S3Config config;
    config.endpoint = server_->endpoint();
    config.access_key_id = testing::S3rverProcess::kAccessKeyId;
    config.secret_access_key = testing::S3rverProcess::kSecretAccessKey;
    config.bucket = kBucket;
    config.prefix = "data/fm";
    config.max_attempts = 1;
    return config;
  }

  std::unique_ptr<S3Store> Open(const S3Config& config) {
    absl::StatusOr<std::unique_ptr<S3Store>> store = S3Store::Create(config);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  std::unique_ptr<testing::S3rverProcess> server_;
};

TEST_F(S3StoreTest, WrongSecretIsPermissionDeniedNamingBucketAndCode) {
  S3Config config = Config();
  config.secret_access_key = "not-the-secret";
  std::unique_ptr<S3Store> store = Open(config);
  ASSERT_NE(store, nullptr);
  for (const absl::Status& status :
       {store->Put("k", "v"), store->Get("k").status(), store->List("").status()}) {
    EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied) << status;
    EXPECT_THAT(std::string(status.message()),
                AllOf(HasSubstr(kBucket), HasSubstr("403"), HasSubstr("SignatureDoesNotMatch")));
  }
}

TEST_F(S3StoreTest, UnknownAccessKeyIsPermissionDenied) {
  S3Config config = Config();
  config.access_key_id = "NOBODY";
  std::unique_ptr<S3Store> store = Open(config);
  ASSERT_NE(store, nullptr);
  const absl::Status status = store->Get("k").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied) << status;
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr(kBucket), HasSubstr("403"), HasSubstr("InvalidAccessKeyId")));
}

TEST_F(S3StoreTest, MissingBucketIsNotFoundNamingTheBucket) {
  S3Config config = Config();
  config.bucket = "no-such-bucket";
  std::unique_ptr<S3Store> store = Open(config);
  ASSERT_NE(store, nullptr);
  const absl::Status status = store->Get("k").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("no-such-bucket"));
}

TEST_F(S3StoreTest, PrefixesIsolateStoresInOneBucket) {
  S3Config a_config = Config();
  a_config.prefix = "/run-a/";  // slashes are trimmed
  S3Config b_config = Config();
  b_config.prefix = "run-ab";  // shares a string prefix with "run-a"
  std::unique_ptr<S3Store> a = Open(a_config);
  std::unique_ptr<S3Store> b = Open(b_config);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(a->Put("x", "from a").ok());
  ASSERT_TRUE(b->Put("x", "from b").ok());
  absl::StatusOr<std::vector<BlobInfo>> listed = a->List("");
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].key, "x");
  EXPECT_EQ(*a->Get("x"), "from a");
  EXPECT_EQ(a->Describe("x"), std::string("s3://") + kBucket + "/run-a/x");
}

TEST_F(S3StoreTest, ListPagesOneObjectAtATime) {
  S3Config config = Config();
  config.list_page_size = 1;
  std::unique_ptr<S3Store> store = Open(config);
  ASSERT_NE(store, nullptr);
  for (const char* key : {"c", "a", "b/1", "b/2"}) ASSERT_TRUE(store->Put(key, key).ok());
  absl::StatusOr<std::vector<BlobInfo>> listed = store->List("");
  ASSERT_TRUE(listed.ok()) << listed.status();
  std::vector<std::string> keys;
  for (const BlobInfo& info : *listed) keys.push_back(info.key);
  EXPECT_THAT(keys, ElementsAre("a", "b/1", "b/2", "c"));
}

TEST_F(S3StoreTest, ConcurrentCallsShareTheStore) {
  std::unique_ptr<S3Store> store = Open(Config());
  ASSERT_NE(store, nullptr);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};  // counted across threads
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&store, &failures, t] {
      for (int i = 0; i < 5; ++i) {
        const std::string key = "t" + std::to_string(t) + "/" + std::to_string(i);
        if (!store->Put(key, key).ok()) ++failures;
        absl::StatusOr<std::string> got = store->Get(key);
        if (!got.ok() || *got != key) ++failures;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  absl::StatusOr<std::vector<BlobInfo>> listed = store->List("");
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->size(), 20u);
}

TEST(S3StoreCreate, RejectsBadConfig) {
  S3Config config;
  EXPECT_EQ(S3Store::Create(config).status().code(), absl::StatusCode::kInvalidArgument);
  config.bucket = "b";
  config.list_page_size = 0;
  EXPECT_EQ(S3Store::Create(config).status().code(), absl::StatusCode::kInvalidArgument);
  config.list_page_size = 1001;
  EXPECT_EQ(S3Store::Create(config).status().code(), absl::StatusCode::kInvalidArgument);
  config.list_page_size = 10;
  config.max_attempts = 0;
  EXPECT_EQ(S3Store::Create(config).status().code(), absl::StatusCode::kInvalidArgument);
  config.max_attempts = 1;
  EXPECT_TRUE(S3Store::Create(config).ok());
}

TEST(S3StoreCreate, DefaultEndpointIsAwsInTheRegion) {
  S3Config config;
  config.bucket = "b";
  config.region = "eu-central-1";
  absl::StatusOr<std::unique_ptr<S3Store>> store = S3Store::Create(config);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->Describe("k"), "s3://b/k");
}

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = ::getenv(name)) old_ = old;
    if (value == nullptr) {
      ::unsetenv(name);
    } else {
      ::setenv(name, value, 1);
    }
  }
  ~ScopedEnv() {
    if (old_.has_value()) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(S3ConfigFromEnv, ReadsTheAwsConventions) {
  ScopedEnv id("AWS_ACCESS_KEY_ID", "AKID");
  ScopedEnv secret("AWS_SECRET_ACCESS_KEY", "SECRET");
  ScopedEnv token("AWS_SESSION_TOKEN", "TOKEN");
  ScopedEnv region("AWS_REGION", "ap-south-1");
  ScopedEnv endpoint("AWS_ENDPOINT_URL", "http://generic:1");
  ScopedEnv s3_endpoint("AWS_ENDPOINT_URL_S3", "http://s3-specific:2");
  absl::StatusOr<S3Config> config = S3ConfigFromEnv("bkt", "/a/b/");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->access_key_id, "AKID");
  EXPECT_EQ(config->secret_access_key, "SECRET");
  EXPECT_EQ(config->session_token, "TOKEN");
  EXPECT_EQ(config->region, "ap-south-1");
  EXPECT_EQ(config->endpoint, "http://s3-specific:2");
  EXPECT_EQ(config->bucket, "bkt");
  EXPECT_EQ(config->prefix, "a/b");
}

TEST(S3ConfigFromEnv, FallsBackToGenericEndpointAndDefaultRegion) {
  ScopedEnv id("AWS_ACCESS_KEY_ID", "AKID");
  ScopedEnv secret("AWS_SECRET_ACCESS_KEY", "SECRET");
  ScopedEnv region("AWS_REGION", nullptr);
  ScopedEnv endpoint("AWS_ENDPOINT_URL", "http://generic:1");
  ScopedEnv s3_endpoint("AWS_ENDPOINT_URL_S3", nullptr);
  absl::StatusOr<S3Config> config = S3ConfigFromEnv("bkt", "");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->region, "us-east-1");
  EXPECT_EQ(config->endpoint, "http://generic:1");
}

TEST(S3ConfigFromEnv, MissingCredentialsAreFailedPrecondition) {
  ScopedEnv id("AWS_ACCESS_KEY_ID", "AKID");
  ScopedEnv secret("AWS_SECRET_ACCESS_KEY", nullptr);
  absl::StatusOr<S3Config> config = S3ConfigFromEnv("bkt", "");
  EXPECT_EQ(config.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("AWS_SECRET_ACCESS_KEY"));
  EXPECT_EQ(S3ConfigFromEnv("", "").status().code(), absl::StatusCode::kInvalidArgument);
}

// A loopback HTTP server that answers each request from a script: the i-th
// request gets responses[min(i, size-1)]. An empty response string means
// "accept, read the request, then never answer" (a hung server).
class ScriptedHttpServer {
 public:
  explicit ScriptedHttpServer(std::vector<std::string> responses)
      : responses_(std::move(responses)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::listen(listen_fd_, 16);
    socklen_t len = sizeof(addr);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~ScriptedHttpServer() {
    stop_ = true;
    thread_.join();
    ::close(listen_fd_);
    for (int fd : hung_) ::close(fd);
  }

  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int requests() {
    absl::MutexLock lock(&mu_);
    return requests_;
  }

  static std::string Response(int status, const std::string& body) {
    return "HTTP/1.1 " + std::to_string(status) +
           " X\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\nConnection: close\r\n\r\n" + body;
  }

 private:
  void Serve() {
    while (!stop_) {
      pollfd pfd{listen_fd_, POLLIN, 0};
      if (::poll(&pfd, 1, 20) <= 0) continue;
      const int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) continue;
      std::string request;
      char buffer[4096];
      while (request.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = ::read(fd, buffer, sizeof(buffer));
        if (n <= 0) break;
        request.append(buffer, static_cast<size_t>(n));
      }
      std::string response;
      {
        absl::MutexLock lock(&mu_);
        response = responses_[std::min<size_t>(requests_, responses_.size() - 1)];
        ++requests_;
      }
      if (response.empty()) {
        hung_.push_back(fd);
        continue;
      }
      (void)!::write(fd, response.data(), response.size());
      ::close(fd);
    }
  }

  const std::vector<std::string> responses_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::thread thread_;
  std::vector<int> hung_;          // only touched by the serving thread, then ~
  std::atomic<bool> stop_{false};  // set by the destructor, read by Serve()
  absl::Mutex mu_;
  int requests_ ABSL_GUARDED_BY(mu_) = 0;
};

S3Config RetryConfig(const std::string& endpoint, std::vector<absl::Duration>* sleeps) {
  S3Config config;
  config.endpoint = endpoint;
  config.access_key_id = "id";
  config.secret_access_key = "secret";
  config.bucket = "b";
  config.max_attempts = 4;
  config.initial_backoff = absl::Milliseconds(10);
  config.max_backoff = absl::Milliseconds(25);
  config.connect_timeout = absl::Seconds(2);
  config.request_timeout = absl::Seconds(5);
  config.sleep = [sleeps](absl::Duration d) { sleeps->push_back(d); };
  return config;
}

TEST(S3StoreRetry, RetriesServerErrorsWithExponentialBackoff) {
  const std::string slow_down =
      ScriptedHttpServer::Response(503, "<Error><Code>SlowDown</Code></Error>");
  ScriptedHttpServer server(
      {slow_down, ScriptedHttpServer::Response(500, ""), ScriptedHttpServer::Response(200, "ok")});
  std::vector<absl::Duration> sleeps;
  absl::StatusOr<std::unique_ptr<S3Store>> store =
      S3Store::Create(RetryConfig(server.endpoint(), &sleeps));
  ASSERT_TRUE(store.ok()) << store.status();
  absl::StatusOr<std::string> got = (*store)->Get("k");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "ok");
  EXPECT_EQ(server.requests(), 3);
  EXPECT_THAT(sleeps, ElementsAre(absl::Milliseconds(10), absl::Milliseconds(20)));
}

TEST(S3StoreRetry, GivesUpAfterMaxAttemptsAsUnavailable) {
  ScriptedHttpServer server(
      {ScriptedHttpServer::Response(503, "<Error><Code>SlowDown</Code></Error>")});
  std::vector<absl::Duration> sleeps;
  absl::StatusOr<std::unique_ptr<S3Store>> store =
      S3Store::Create(RetryConfig(server.endpoint(), &sleeps));
  ASSERT_TRUE(store.ok()) << store.status();
  const absl::Status status = (*store)->Put("k", "v");
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(std::string(status.message()), AllOf(HasSubstr("503"), HasSubstr("SlowDown")));
  EXPECT_EQ(server.requests(), 4);
  // Doubling, capped at max_backoff.
  EXPECT_THAT(sleeps,
              ElementsAre(absl::Milliseconds(10), absl::Milliseconds(20), absl::Milliseconds(25)));
}

TEST(S3StoreRetry, ClientErrorsAreNotRetried) {
  ScriptedHttpServer server({ScriptedHttpServer::Response(
      404, "<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>")});
  std::vector<absl::Duration> sleeps;
  absl::StatusOr<std::unique_ptr<S3Store>> store =
      S3Store::Create(RetryConfig(server.endpoint(), &sleeps));
  ASSERT_TRUE(store.ok()) << store.status();
  const absl::Status status = (*store)->Get("dir/k").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr("bucket \"b\""), HasSubstr("key \"dir/k\""), HasSubstr("NoSuchKey")));
  EXPECT_EQ(server.requests(), 1);
  EXPECT_TRUE(sleeps.empty());
}

TEST(S3StoreRetry, TimeoutsAreRetriedThenUnavailable) {
  ScriptedHttpServer server({""});  // never answers
  std::vector<absl::Duration> sleeps;
  S3Config config = RetryConfig(server.endpoint(), &sleeps);
  config.max_attempts = 2;
  config.request_timeout = absl::Milliseconds(300);
  absl::StatusOr<std::unique_ptr<S3Store>> store = S3Store::Create(config);
  ASSERT_TRUE(store.ok()) << store.status();
  const absl::Status status = (*store)->Get("k").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_EQ(server.requests(), 2);
  EXPECT_EQ(sleeps.size(), 1u);
}

TEST(S3StoreRetry, ConnectionRefusedIsRetriedThenUnavailable) {
  // Bind then close a socket: its port is (for the moment) refused.
  int port = 0;
  {
    ScriptedHttpServer probe({ScriptedHttpServer::Response(200, "")});
    port = std::stoi(probe.endpoint().substr(probe.endpoint().rfind(':') + 1));
  }
  std::vector<absl::Duration> sleeps;
  absl::StatusOr<std::unique_ptr<S3Store>> store =
      S3Store::Create(RetryConfig("http://127.0.0.1:" + std::to_string(port), &sleeps));
  ASSERT_TRUE(store.ok()) << store.status();
  const absl::Status status = (*store)->Get("k").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("4 attempts"));
  EXPECT_EQ(sleeps.size(), 3u);
}

}  // namespace
}  // namespace dcasgd::storage
