#ifndef DCASGD_CLIENTS_CPP_CHANNEL_ARGS_H_
#define DCASGD_CLIENTS_CPP_CHANNEL_ARGS_H_

// The channel settings every dcasgd client uses, so that a shard that comes
// back is used again within about a second and a hung shard is noticed.

#include "grpcpp/support/channel_arguments.h"

namespace dcasgd {
namespace client {

// Reconnect backoff: gRPC's defaults (1 s growing by 1.6x to 2 min, with a
// 20 s minimum connect timeout) leave a restarted shard unused for several
// times the outage; here reconnection is tried at least every second.
inline constexpr int kInitialReconnectBackoffMs = 100;
inline constexpr int kMaxReconnectBackoffMs = 1000;
inline constexpr int kMinConnectTimeoutMs = 1000;
// Keepalive: a ping every 10 s (also without calls), and a connection whose
// ping gets no answer within 5 s (a stopped or vanished shard) is closed, so
// calls on it fail with UNAVAILABLE and are retried instead of hanging until
// their deadline. Shards accept pings this often (services/ps/ps_server.cc).
inline constexpr int kKeepaliveTimeMs = 10000;
inline constexpr int kKeepaliveTimeoutMs = 5000;

// Adds the settings above to `args`.
void SetResilienceArgs(grpc::ChannelArguments* args);

}  // namespace client
}  // namespace dcasgd

#endif  // DCASGD_CLIENTS_CPP_CHANNEL_ARGS_H_
