#include "tests/testing/ps_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

#ifndef DCASGD_BINARY_DIR
#error "tests are compiled with DCASGD_BINARY_DIR"
#endif

namespace dcasgd::testing {
namespace {

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Parses "grpc <port>\nmetrics <port>\n" and an optional "health <port>".
bool ParsePortFile(const std::string& text, int* grpc_port, int* metrics_port, int* health_port) {
  bool have_grpc = false;
  bool have_metrics = false;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> words = absl::StrSplit(line, ' ');
    if (words.size() != 2) return false;
    if (words[0] == "grpc") have_grpc = absl::SimpleAtoi(words[1], grpc_port);
    if (words[0] == "metrics") have_metrics = absl::SimpleAtoi(words[1], metrics_port);
    if (words[0] == "health" && !absl::SimpleAtoi(words[1], health_port)) return false;
  }
  return have_grpc && have_metrics;
}

int DecodeWaitStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

std::string PsBinaryPath() {
  if (const char* path = std::getenv("DCASGD_PS_BINARY"); path != nullptr && *path != '\0') {
    return path;
  }
  return DCASGD_BINARY_DIR "/services/ps/dcasgd-ps";
}

std::string WitnessBinaryPath() {
  if (const char* path = std::getenv("DCASGD_WITNESS_BINARY"); path != nullptr && *path != '\0') {
    return path;
  }
  return DCASGD_BINARY_DIR "/services/witness/dcasgd-witness";
}

absl::StatusOr<std::string> MakeTempDir(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern =
      absl::StrCat((tmp != nullptr && *tmp != '\0') ? tmp : "/tmp", "/", prefix, "-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::UnavailableError(absl::StrCat("mkdtemp '", pattern, "': ", std::strerror(errno)));
  }
  return pattern;
}

void RemoveTree(const std::string& path) {
  if (path.empty()) return;
  std::error_code ignored;
  std::filesystem::remove_all(path, ignored);
}

absl::StatusOr<std::unique_ptr<PsProcess>> PsProcess::Start(std::vector<std::string> flags,
                                                            absl::Duration startup_timeout) {
  return StartBinary("", std::move(flags), startup_timeout);
}

absl::StatusOr<std::unique_ptr<PsProcess>> PsProcess::StartBinary(std::string binary,
                                                                  std::vector<std::string> flags,
                                                                  absl::Duration startup_timeout) {
  std::unique_ptr<PsProcess> process(new PsProcess());
  process->binary_ = std::move(binary);
  absl::StatusOr<std::string> dir = MakeTempDir("dcasgd-ps");
  if (!dir.ok()) return dir.status();
  process->temp_dir_ = *dir;
  process->port_file_ = process->temp_dir_ + "/ports";
  process->log_path_ = process->temp_dir_ + "/stderr.log";
  process->flags_ = std::move(flags);
  if (absl::Status s = process->Launch(startup_timeout); !s.ok()) return s;
  return process;
}

absl::Status PsProcess::Launch(absl::Duration startup_timeout) {
  std::remove(port_file_.c_str());
  const std::string binary = binary_.empty() ? PsBinaryPath() : binary_;
  const std::string program = binary.substr(binary.rfind('/') + 1);
  if (access(binary.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(program, " not built at '", binary, "': build the ", program, " target"));
  }
  std::vector<std::string> args = {binary, "--listen=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
                                   absl::StrCat("--port_file=", port_file_)};
  args.insert(args.end(), flags_.begin(), flags_.end());
  // Everything the child needs is prepared before fork: after it, only
  // async-signal-safe calls.
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const int log_fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return absl::UnavailableError(absl::StrCat("open '", log_path_, "': ", std::strerror(errno)));
  }
  const pid_t pid = fork();
  if (pid < 0) {
    close(log_fd);
    return absl::UnavailableError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    dup2(log_fd, STDERR_FILENO);
    dup2(log_fd, STDOUT_FILENO);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(log_fd);
  pid_ = pid;

  const absl::Time deadline = absl::Now() + startup_timeout;
  while (true) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::UnavailableError(absl::StrCat(program, " exited with ", DecodeWaitStatus(status),
                                                 " before serving; its log:\n", Log()));
    }
    if (ParsePortFile(ReadFileOrEmpty(port_file_), &grpc_port_, &metrics_port_, &health_port_)) {
      return absl::OkStatus();
    }
    if (absl::Now() > deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
      pid_ = -1;
      return absl::UnavailableError(absl::StrCat(program, " did not write its port file within ",
                                                 absl::FormatDuration(startup_timeout),
                                                 "; its log:\n", Log()));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

PsProcess::~PsProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
  // A sanitizer build's shard writes its reports to this log, which is about
  // to go: keep them in the test's output (ctest shows it for a failure).
  const std::string log = Log();
  if (absl::StrContains(log, "Sanitizer") || absl::StrContains(log, "runtime error:")) {
    std::fprintf(stderr, "--- log of dcasgd-ps %s, which reported a sanitizer error ---\n%s\n",
                 address().c_str(), log.c_str());
  }
  RemoveTree(temp_dir_);
}

std::string PsProcess::address() const { return absl::StrCat("127.0.0.1:", grpc_port_); }

std::string PsProcess::Log() const { return ReadFileOrEmpty(log_path_); }

absl::Status PsProcess::Kill(int signal) {
  if (pid_ <= 0) return absl::FailedPreconditionError("dcasgd-ps is not running");
  if (kill(pid_, signal) != 0) {
    return absl::UnavailableError(absl::StrCat("kill: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> PsProcess::WaitExit(absl::Duration timeout) {
  if (pid_ <= 0) return absl::FailedPreconditionError("dcasgd-ps is not running");
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int status = 0;
    const pid_t done = waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      pid_ = -1;
      return DecodeWaitStatus(status);
    }
    if (done < 0) {
      pid_ = -1;
      return absl::UnavailableError(absl::StrCat("waitpid: ", std::strerror(errno)));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "dcasgd-ps still running after ", absl::FormatDuration(timeout), "; log:\n", Log()));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
}

absl::Status PsProcess::Restart(absl::Duration startup_timeout) {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  grpc_port_ = 0;
  metrics_port_ = 0;
  health_port_ = 0;
  return Launch(startup_timeout);
}

absl::StatusOr<std::vector<std::unique_ptr<PsProcess>>> StartShards(
    int shard_count, const std::vector<std::string>& flags, const std::string& checkpoint_root) {
  std::vector<std::unique_ptr<PsProcess>> shards;
  for (int i = 0; i < shard_count; ++i) {
    std::vector<std::string> shard_flags = {absl::StrCat("--shard_index=", i),
                                            absl::StrCat("--shard_count=", shard_count)};
    if (!checkpoint_root.empty()) {
      shard_flags.push_back(absl::StrCat("--checkpoint_dir=", checkpoint_root, "/ps-", i));
    }
    shard_flags.insert(shard_flags.end(), flags.begin(), flags.end());
    absl::StatusOr<std::unique_ptr<PsProcess>> shard = PsProcess::Start(std::move(shard_flags));
    if (!shard.ok()) return shard.status();
    shards.push_back(*std::move(shard));
  }
  return shards;
}

std::vector<std::string> Addresses(const std::vector<std::unique_ptr<PsProcess>>& shards) {
  std::vector<std::string> addresses;
  for (const auto& shard : shards) addresses.push_back(shard->address());
  return addresses;
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = -1;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

absl::StatusOr<std::string> HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("socket: ", std::strerror(errno)));
  timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int error = errno;
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("connect 127.0.0.1:", port, ": ", std::strerror(error)));
  }
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      close(fd);
      return absl::UnavailableError(absl::StrCat("send: ", std::strerror(errno)));
    }
    sent += static_cast<size_t>(n);
  }
  std::string response;
  char buffer[16384];
  while (true) {
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n == 0) break;
    if (n < 0) {
      const int error = errno;
      close(fd);
      return absl::UnavailableError(absl::StrCat("recv: ", std::strerror(error)));
    }
    response.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (body == std::string::npos) {
    return absl::UnavailableError(absl::StrCat("malformed HTTP answer: ", response));
  }
  const std::string status_line = response.substr(0, response.find("\r\n"));
  if (!absl::StrContains(status_line, " 200")) {
    return absl::UnavailableError(absl::StrCat("GET ", path, ": ", status_line));
  }
  return response.substr(body + 4);
}

absl::Status WaitFor(const std::function<bool()>& condition, absl::Duration timeout,
                     absl::Duration interval) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("condition not met within ", absl::FormatDuration(timeout)));
    }
    absl::SleepFor(interval);
  }
  return absl::OkStatus();
}

}  // namespace dcasgd::testing
