#include "tests/testing/s3rver_process.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace dcasgd::testing {
namespace {

constexpr char kListening[] = "S3rver listening on 127.0.0.1:";

std::string FindNode() {
  if (const char* node = std::getenv("DCASGD_NODE"); node != nullptr && *node != '\0') {
    return ::access(node, X_OK) == 0 ? node : "";
  }
  const char* path = std::getenv("PATH");
  if (path == nullptr) return "";
  for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
    const std::string candidate = absl::StrCat(dir, "/node");
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

size_t DiscardBody(char*, size_t size, size_t nmemb, void*) { return size * nmemb; }

// True once anything answers HTTP on `endpoint` (any status counts).
bool Answers(const std::string& endpoint) {
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return false;
  curl_easy_setopt(curl, CURLOPT_URL, (endpoint + "/").c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 2000L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &DiscardBody);
  const CURLcode code = curl_easy_perform(curl);
  long status = 0;  // NOLINT(runtime/int): curl's type
  if (code == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(curl);
  return code == CURLE_OK && status > 0;
}

}  // namespace

bool AllowSkipS3() {
  const char* allow = std::getenv("DCASGD_ALLOW_SKIP_S3");
  return allow != nullptr && std::string(allow) == "1";
}

absl::StatusOr<std::unique_ptr<S3rverProcess>> S3rverProcess::Start(
    const std::string& bucket, absl::Duration startup_timeout) {
  const std::string script_dir = absl::StrCat(DCASGD_SOURCE_DIR, "/scripts/s3rver");
  const std::string node = FindNode();
  if (node.empty()) {
    return absl::FailedPreconditionError(
        "cannot start the S3 test server: `node` is not on PATH (install Node.js, e.g. "
        "scripts/install-deps.sh test, then scripts/s3rver/install.sh; or set "
        "DCASGD_ALLOW_SKIP_S3=1 to skip S3 tests)");
  }
  const std::string package =
      absl::StrCat(script_dir, "/node_modules/@20minutes/s3rver/package.json");
  if (::access(package.c_str(), R_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot start the S3 test server: @20minutes/s3rver is not installed in ", script_dir,
        "/node_modules; run scripts/s3rver/install.sh (or set DCASGD_ALLOW_SKIP_S3=1 to skip "
        "S3 tests)"));
  }

  const char* tmp = std::getenv("TMPDIR");
  std::string temp_template =
      absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/dcasgd-s3rver-XXXXXX");
  if (::mkdtemp(temp_template.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp ", temp_template, ": ", std::strerror(errno)));
  }
  std::unique_ptr<S3rverProcess> server(new S3rverProcess());
  server->bucket_ = bucket;
  server->temp_dir_ = temp_template;
  server->log_path_ = absl::StrCat(temp_template, "/s3rver.log");
  const std::string data_dir = absl::StrCat(temp_template, "/data");
  const std::string start_js = absl::StrCat(script_dir, "/start.js");

  std::vector<std::string> args = {
      node, "--openssl-legacy-provider", start_js, "-d", data_dir, "-a", "127.0.0.1", "-p",
      "0",  "--configure-bucket",        bucket};
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const int log_fd =
      ::open(server->log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return absl::InternalError(
        absl::StrCat("open ", server->log_path_, ": ", std::strerror(errno)));
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log_fd);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    // Child: die with the test process, log to the file, become node.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(log_fd);
  server->pid_ = pid;

  const absl::Time deadline = absl::Now() + startup_timeout;
  while (true) {
    int wstatus = 0;
    if (::waitpid(pid, &wstatus, WNOHANG) == pid) {
      server->pid_ = -1;
      return absl::UnavailableError(absl::StrCat("S3 test server exited during startup (status ",
                                                 wstatus, "); log:\n",
                                                 ReadFile(server->log_path_)));
    }
    if (server->port_ == 0) {
      const std::string log = ReadFile(server->log_path_);
      const size_t at = log.find(kListening);
      if (at != std::string::npos) {
        const size_t begin = at + sizeof(kListening) - 1;
        const size_t end = log.find_first_not_of("0123456789", begin);
        int port = 0;
        if (end != std::string::npos && absl::SimpleAtoi(log.substr(begin, end - begin), &port) &&
            port > 0) {
          server->port_ = port;
          server->endpoint_ = absl::StrCat("http://127.0.0.1:", port);
        }
      }
    }
    if (server->port_ != 0 && Answers(server->endpoint_)) return server;
    if (absl::Now() > deadline) {
      return absl::UnavailableError(absl::StrCat("S3 test server did not answer within ",
                                                 absl::FormatDuration(startup_timeout), "; log:\n",
                                                 ReadFile(server->log_path_)));
    }
    absl::SleepFor(absl::Milliseconds(20));  // poll interval
  }
}

S3rverProcess::~S3rverProcess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    const absl::Time deadline = absl::Now() + absl::Seconds(5);
    bool reaped = false;
    while (absl::Now() < deadline) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        reaped = true;
        break;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    if (!reaped) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(temp_dir_, ec);
}

}  // namespace dcasgd::testing
