#ifndef DCASGD_TESTS_TESTING_TCP_PROXY_H_
#define DCASGD_TESTS_TESTING_TCP_PROXY_H_

// Test fixture support: a TCP proxy on loopback that forwards the bytes of
// gRPC (HTTP/2) connections to a server and, on demand, cuts a connection at
// the worst moment for a push: after the server applied it and before its
// answer reaches the client.
//
//   auto proxy = TcpProxy::Start(shard->grpc_port());
//   ... connect the client to 127.0.0.1:(*proxy)->port() ...
//   (*proxy)->CutAtNextReply();  // the next answer is lost
//
// The server-to-client direction is read as HTTP/2 frames (9-byte header:
// 24-bit length, type, flags, stream id); a HEADERS (type 1) or DATA (type
// 0) frame on a stream is the start of an answer (DATA alone for a round of
// a long-lived Exchange stream). Heartbeats or other calls in flight
// would also count as answers: tests that arm the proxy make one call at a
// time.

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace dcasgd::testing {

// Thread-safe.
class TcpProxy {
 public:
  // Listens on 127.0.0.1 (a free port) and forwards every connection to
  // 127.0.0.1:`target_port`.
  static absl::StatusOr<std::unique_ptr<TcpProxy>> Start(int target_port);
  // Closes every connection and joins the threads.
  ~TcpProxy();
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  int port() const { return port_; }
  // The next answer the server starts (a HEADERS frame on a stream) is not
  // forwarded: both sides of its connection are closed instead. One-shot.
  void CutAtNextReply() { armed_.store(true); }
  // How many connections were cut so far.
  int cuts() const { return cuts_.load(); }

 private:
  TcpProxy() = default;
  void AcceptLoop();
  void Forward(int client, int server);

  int listen_fd_ = -1;
  int port_ = 0;
  int target_port_ = 0;
  // Atomics: set by the test thread, read by the forwarding threads.
  std::atomic<bool> armed_{false};
  std::atomic<int> cuts_{0};
  std::atomic<bool> stopping_{false};

  absl::Mutex mu_;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  std::vector<int> open_fds_ ABSL_GUARDED_BY(mu_);
  std::thread acceptor_;
};

}  // namespace dcasgd::testing

#endif  // DCASGD_TESTS_TESTING_TCP_PROXY_H_
