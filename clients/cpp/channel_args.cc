#include "clients/cpp/channel_args.h"

#include "grpc/grpc.h"

namespace dcasgd {
namespace client {

void SetResilienceArgs(grpc::ChannelArguments* args, bool pair) {
  args->SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, kInitialReconnectBackoffMs);
  args->SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, kMaxReconnectBackoffMs);
  args->SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, kMinConnectTimeoutMs);
  args->SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, pair ? kPairKeepaliveTimeMs : kKeepaliveTimeMs);
  args->SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, pair ? kPairKeepaliveTimeoutMs : kKeepaliveTimeoutMs);
  args->SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Keep pinging an idle connection (the default stops after two pings
  // without data).
  args->SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
}

}  // namespace client
}  // namespace dcasgd
