#ifndef DCASGD_SERVICES_WORKER_WORKER_H_
#define DCASGD_SERVICES_WORKER_WORKER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "auth/tls.h"
#include "clients/cpp/ps_client.h"
#include "services/worker/worker_options.h"

namespace dcasgd {

// Runs the role in `options` until it ends or `stop`: sets up metrics, the
// shard and coordinator clients, the data source and the model. Returns the
// first unrecoverable error (e.g. PERMISSION_DENIED naming the bucket for a
// wrong S3 secret, DATA_LOSS naming a corrupt data shard).
absl::Status RunWorker(const WorkerOptions& options, const absl::Notification* stop);

// Connects (a worker joins every shard), riding out shards that are down or
// restarting for up to 5 minutes (a worker started during an outage); `name`
// is for log lines. Returns early with the last error on `stop`.
absl::StatusOr<std::unique_ptr<PsClient>> ConnectWithRetry(const ClientOptions& options,
                                                           const std::string& name,
                                                           const absl::Notification* stop);

// --pipeline_depth=auto from what the shards report (ShardStatus.rule and
// .sync): 1 when every shard runs dcasgd-c or dcasgd-a with sync "async" (the
// one extra step of staleness is what those rules compensate), else 0 (ASGD
// would apply it uncompensated; SSGD and SSP count their own clocks). Sets
// `why` to a line for the log.
uint32_t AutoPipelineDepth(const std::vector<ShardStatus>& shards, std::string* why);

// One grpc.health.v1 Check of `address` (service "") over `credentials`' TLS
// (health needs no token); OK when SERVING.
absl::Status CheckShardHealth(const std::string& address, absl::Duration timeout,
                              const auth::ClientCredentials& credentials);

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_WORKER_WORKER_H_
