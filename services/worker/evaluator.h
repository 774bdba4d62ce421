#ifndef DCASGD_SERVICES_WORKER_EVALUATOR_H_
#define DCASGD_SERVICES_WORKER_EVALUATOR_H_

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "clients/cpp/ps_client.h"
#include "coordinator/coordinator_client.h"
#include "services/worker/data_source.h"
#include "services/worker/model/model.h"
#include "services/worker/worker_metrics.h"
#include "services/worker/worker_options.h"

namespace dcasgd {

// The evaluator role: periodically pulls the model as an evaluator (no backup),
// computes test loss and accuracy on the test shards, logs and exports them.
// Returns after the coordinator reports the job done and one final evaluation
// of the finished model is logged ("final test accuracy"), or on `stop`.
// DEADLINE_EXCEEDED when neither the model version nor the data schedule
// moves for options.stall_timeout (no worker is training); DATA_LOSS when
// the pulled weights are not finite. Blocks; all pointers must outlive the
// call.
absl::Status RunEvaluator(const WorkerOptions& options, PsClient* ps,
                          CoordinatorClient* coordinator, DataSource* data,
                          const model::Model* model, WorkerMetrics* metrics,
                          const absl::Notification* stop);

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_WORKER_EVALUATOR_H_
