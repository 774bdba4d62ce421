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
// Keepalive towards a member of a replicated shard ("a|b"): the other member
// can take over, so a hung primary is left within about 2-3 s (a ping after
// 1 s without data, 2 s to answer) rather than 15 s; its replica is promoted
// after --failover_timeout_ms (docs/design.md, "Replicated shards"). The
// timeout is 2 s rather than 1 s so that a busy but healthy member on a
// loaded machine is not left by mistake (which would cost an attempt).
inline constexpr int kPairKeepaliveTimeMs = 1000;
inline constexpr int kPairKeepaliveTimeoutMs = 2000;

// Adds the settings above to `args`; `pair` selects the keepalive for a
// member of a replicated shard.
void SetResilienceArgs(grpc::ChannelArguments* args, bool pair = false);

}  // namespace client
}  // namespace dcasgd

#endif  // DCASGD_CLIENTS_CPP_CHANNEL_ARGS_H_
