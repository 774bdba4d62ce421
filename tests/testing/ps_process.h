#ifndef DCASGD_TESTS_TESTING_PS_PROCESS_H_
#define DCASGD_TESTS_TESTING_PS_PROCESS_H_

// Test fixture support: runs the built dcasgd-ps as a child process on
// loopback port 0 and finds its ports through --port_file.
//
//   auto ps = PsProcess::Start({"--update_rule=asgd"});
//   ASSERT_TRUE(ps.ok()) << ps.status();
//   auto channel = grpc::CreateChannel((*ps)->address(), ...);
//   (*ps)->Kill(SIGTERM);
//   EXPECT_EQ((*ps)->WaitExit().value(), 0);
//   ASSERT_TRUE((*ps)->Restart().ok());  // same flags, same checkpoint dir

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace dcasgd::testing {

// DCASGD_BINARY_DIR "/services/ps/dcasgd-ps", or $DCASGD_PS_BINARY when set.
std::string PsBinaryPath();
// DCASGD_BINARY_DIR "/services/witness/dcasgd-witness", or
// $DCASGD_WITNESS_BINARY when set.
std::string WitnessBinaryPath();

// One dcasgd-ps child process. Not thread-safe.
class PsProcess {
 public:
  // Starts dcasgd-ps with --listen=127.0.0.1:0 --metrics_address=127.0.0.1:0
  // --port_file=<temp> followed by `flags` (which may override the first two,
  // e.g. --metrics_address= to turn metrics off), and waits (polling, up to
  // `startup_timeout`) for the port file. UNAVAILABLE with the server's log
  // when it exits first or does not come up in time. The child's stderr goes
  // to log_path().
  static absl::StatusOr<std::unique_ptr<PsProcess>> Start(
      std::vector<std::string> flags, absl::Duration startup_timeout = absl::Seconds(30));
  // As Start, for another dcasgd server binary with the same --listen,
  // --metrics_address and --port_file flags (dcasgd-witness).
  static absl::StatusOr<std::unique_ptr<PsProcess>> StartBinary(
      std::string binary, std::vector<std::string> flags,
      absl::Duration startup_timeout = absl::Seconds(30));

  PsProcess(const PsProcess&) = delete;
  PsProcess& operator=(const PsProcess&) = delete;
  // SIGKILLs the process if it still runs, reaps it and removes the temporary
  // directory (port file and log; a --checkpoint_dir given by the test is
  // left alone).
  ~PsProcess();

  // "127.0.0.1:<grpc port>".
  std::string address() const;
  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }  // 0 when metrics are off
  int health_port() const { return health_port_; }    // 0 without --health_listen
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  const std::string& log_path() const { return log_path_; }
  // The server's stderr so far.
  std::string Log() const;

  // Sends `signal` (e.g. SIGTERM) to the process. FAILED_PRECONDITION when
  // it is not running.
  absl::Status Kill(int signal);
  // Waits (bounded) for the process to exit and reaps it. Returns its exit
  // code, or 128 + the signal number when a signal killed it.
  // DEADLINE_EXCEEDED when it is still running after `timeout`.
  absl::StatusOr<int> WaitExit(absl::Duration timeout = absl::Seconds(30));

  // Starts the binary again with the same flags (hence the same checkpoint
  // dir), after the previous process exited (it is SIGKILLed if not). The
  // ports change.
  absl::Status Restart(absl::Duration startup_timeout = absl::Seconds(30));

 private:
  PsProcess() = default;
  absl::Status Launch(absl::Duration startup_timeout);

  std::string binary_;  // empty: PsBinaryPath()
  std::vector<std::string> flags_;
  std::string temp_dir_;
  std::string port_file_;
  std::string log_path_;
  pid_t pid_ = -1;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
  int health_port_ = 0;
};

// Starts `shard_count` shards with --shard_index=i --shard_count=N plus
// `flags`. With a non-empty `checkpoint_root`, shard i checkpoints to
// <checkpoint_root>/ps-<i>.
absl::StatusOr<std::vector<std::unique_ptr<PsProcess>>> StartShards(
    int shard_count, const std::vector<std::string>& flags,
    const std::string& checkpoint_root = "");
// Their addresses, in shard order.
std::vector<std::string> Addresses(const std::vector<std::unique_ptr<PsProcess>>& shards);

// A fresh empty directory under $TMPDIR (or /tmp); the caller removes it.
absl::StatusOr<std::string> MakeTempDir(const std::string& prefix);
// Removes `path` and everything below it (errors ignored).
void RemoveTree(const std::string& path);

// A loopback port that was free a moment ago (bind to 0, read it, close),
// for a child that must be given its port, or its peer's, before it
// starts; -1 when none could be had.
int FreePort();

// GET http://127.0.0.1:<port><path> with a plain socket (HTTP/1.0). Returns
// the body of a 200 answer; UNAVAILABLE otherwise.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);

// Polls `condition` every `interval` until it is true (OK) or `timeout`
// passed (DEADLINE_EXCEEDED).
absl::Status WaitFor(const std::function<bool()>& condition, absl::Duration timeout,
                     absl::Duration interval = absl::Milliseconds(10));

}  // namespace dcasgd::testing

#endif  // DCASGD_TESTS_TESTING_PS_PROCESS_H_
