#ifndef DCASGD_SERVICES_WORKER_WORKER_H_
#define DCASGD_SERVICES_WORKER_WORKER_H_

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "services/worker/worker_options.h"

namespace dcasgd {

// Runs the role in `options` until it ends or `stop`: sets up metrics, the
// shard and coordinator clients, the data source and the model. Returns the
// first unrecoverable error (e.g. PERMISSION_DENIED naming the bucket for a
// wrong S3 secret, DATA_LOSS naming a corrupt data shard).
absl::Status RunWorker(const WorkerOptions& options, const absl::Notification* stop);

// One grpc.health.v1 Check of `address` (service ""); OK when SERVING.
absl::Status CheckShardHealth(const std::string& address, absl::Duration timeout);

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_WORKER_WORKER_H_
