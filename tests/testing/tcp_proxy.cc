#include "tests/testing/tcp_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

namespace dcasgd::testing {
namespace {

constexpr int kHttp2FrameHeader = 9;
constexpr uint8_t kDataFrame = 0;
constexpr uint8_t kHeadersFrame = 1;

bool WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TcpProxy>> TcpProxy::Start(int target_port) {
  std::unique_ptr<TcpProxy> proxy(new TcpProxy());
  proxy->target_port_ = target_port;
  proxy->listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  if (proxy->listen_fd_ < 0) return absl::InternalError("socket() failed");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (::bind(proxy->listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::listen(proxy->listen_fd_, 16) != 0 ||
      ::getsockname(proxy->listen_fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    return absl::InternalError(absl::StrCat("cannot listen: ", std::strerror(errno)));
  }
  proxy->port_ = ntohs(address.sin_port);
  proxy->acceptor_ = std::thread([p = proxy.get()] { p->AcceptLoop(); });
  return proxy;
}

TcpProxy::~TcpProxy() {
  stopping_.store(true);
  ::shutdown(listen_fd_, SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();
  ::close(listen_fd_);
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
    threads.swap(threads_);
  }
  for (std::thread& t : threads) t.join();
}

void TcpProxy::AcceptLoop() {
  while (!stopping_.load()) {
    const int client = ::accept(listen_fd_, nullptr, nullptr);
    if (client < 0) {
      if (errno == EINTR) continue;
      return;  // shut down
    }
    const int server = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<uint16_t>(target_port_));
    if (server < 0 ||
        ::connect(server, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      // The server is down: the client sees a closed connection.
      if (server >= 0) ::close(server);
      ::close(client);
      continue;
    }
    absl::MutexLock lock(&mu_);
    open_fds_.push_back(client);
    open_fds_.push_back(server);
    threads_.emplace_back([this, client, server] { Forward(client, server); });
  }
}

void TcpProxy::Forward(int client, int server) {
  std::string from_server;  // bytes of an incomplete HTTP/2 frame
  char buffer[64 * 1024];
  bool open = true;
  while (open && !stopping_.load()) {
    pollfd fds[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
    if (::poll(fds, 2, 100) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      const ssize_t n = ::recv(client, buffer, sizeof(buffer), 0);
      if (n <= 0 || !WriteAll(server, buffer, static_cast<size_t>(n))) open = false;
    }
    if (open && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      const ssize_t n = ::recv(server, buffer, sizeof(buffer), 0);
      if (n <= 0) {
        open = false;
        break;
      }
      from_server.append(buffer, static_cast<size_t>(n));
      // Forward whole frames; cut before an answer's first frame when armed:
      // HEADERS on a new stream, DATA on a long-lived one (a round of an
      // Exchange stream).
      size_t start = 0;
      while (from_server.size() - start >= kHttp2FrameHeader) {
        const auto* h = reinterpret_cast<const uint8_t*>(from_server.data() + start);
        const size_t length = (size_t{h[0]} << 16) | (size_t{h[1]} << 8) | h[2];
        const uint32_t stream =
            ((uint32_t{h[5]} & 0x7f) << 24) | (uint32_t{h[6]} << 16) | (uint32_t{h[7]} << 8) | h[8];
        if (from_server.size() - start < kHttp2FrameHeader + length) break;
        if ((h[3] == kHeadersFrame || h[3] == kDataFrame) && stream != 0 &&
            armed_.exchange(false)) {
          cuts_.fetch_add(1);
          open = false;
          break;
        }
        if (!WriteAll(client, from_server.data() + start, kHttp2FrameHeader + length)) {
          open = false;
          break;
        }
        start += kHttp2FrameHeader + length;
      }
      from_server.erase(0, start);
    }
  }
  absl::MutexLock lock(&mu_);
  for (int fd : {client, server}) {
    ::shutdown(fd, SHUT_RDWR);
    ::close(fd);
    open_fds_.erase(std::remove(open_fds_.begin(), open_fds_.end(), fd), open_fds_.end());
  }
}

}  // namespace dcasgd::testing
