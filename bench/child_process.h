#ifndef DCASGD_BENCH_CHILD_PROCESS_H_
#define DCASGD_BENCH_CHILD_PROCESS_H_

// The benchmarks' child processes (shards, a witness, raw servers), found
// through the port file each writes once it serves. Header-only: shared by
// the bench binaries and nothing else.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace dcasgd {
namespace bench {

// A child process killed (SIGKILL) when this object goes, or when the
// benchmark itself dies (PR_SET_PDEATHSIG). Not thread-safe.
class ChildProcess {
 public:
  // Starts argv; the child must write "grpc <port>\n" to `port_file`.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(std::vector<std::string> argv,
                                                             const std::string& port_file) {
    std::remove(port_file.c_str());
    // Built before fork: the child may only make async-signal-safe calls.
    std::vector<char*> args;
    for (std::string& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    const pid_t pid = fork();
    if (pid < 0) return absl::InternalError("fork failed");
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      const int devnull = open("/dev/null", O_WRONLY);
      if (devnull >= 0) dup2(devnull, STDERR_FILENO);
      execv(args[0], args.data());
      _exit(127);
    }
    std::unique_ptr<ChildProcess> child(new ChildProcess(pid));
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      std::ifstream in(port_file);
      std::string word;
      int port = 0;
      if (in >> word >> port && word == "grpc" && port > 0) {
        child->address_ = absl::StrCat("127.0.0.1:", port);
        return child;
      }
      int status;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        child->pid_ = -1;
        return absl::InternalError(absl::StrCat(argv[0], " exited before serving"));
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    return absl::DeadlineExceededError(absl::StrCat(argv[0], " wrote no port file"));
  }

  ~ChildProcess() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    int status;
    waitpid(pid_, &status, 0);
  }

  const std::string& address() const { return address_; }
  pid_t pid() const { return pid_; }

 private:
  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  pid_t pid_;
  std::string address_;
};

// A directory for this run's port files, made once and removed when the
// process exits (children exec or _exit, so only the maker removes it).
inline std::string TempDir() {
  static char path[] = "/tmp/dcasgd_bench.XXXXXX";  // no destructor: safe at exit
  static const bool made = [] {
    if (mkdtemp(path) == nullptr) return false;
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(path, ignored);
    });
    return true;
  }();
  return made ? std::string(path) : std::string("/tmp");
}

// User + system CPU seconds of process `pid` (all its threads; 0: this
// process) from /proc; 0 when it is gone.
inline double CpuSeconds(pid_t pid = 0) {
  std::ifstream in(pid == 0 ? std::string("/proc/self/stat")
                            : absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t name_end = stat.rfind(')');
  if (name_end == std::string::npos) return 0;
  std::istringstream fields(stat.substr(name_end + 1));
  std::string field;
  double ticks = 0;
  // After the name: state is field 3, utime 14 and stime 15 (proc(5)).
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i >= 14) ticks += std::strtod(field.c_str(), nullptr);
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// The running binary (to re-execute itself as a raw server).
inline std::string SelfPath() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, n) : std::string();
}

// A loopback port that was free a moment ago, for a child that must know
// its peer's address before either starts; -1 when none could be had.
inline int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
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

}  // namespace bench
}  // namespace dcasgd

#endif  // DCASGD_BENCH_CHILD_PROCESS_H_
