#include "core/worker_registry.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/secret.h"

namespace dcasgd {

struct WorkerRegistry::Worker {
  std::string name;
  std::string session;  // secret: never in a message, log or metric
  std::shared_ptr<WorkerLiveness> liveness = std::make_shared<WorkerLiveness>();
  absl::Time deadline;
  uint64_t pull_version = 0;  // shard version at the last pull (or join)
  uint64_t clock = 0;         // SSP: pushes applied
  // Push deduplication: the last step applied, the version and staleness it
  // got, and the step of a push being applied or waiting (0: none).
  uint64_t last_step = 0;
  uint64_t last_step_version = 0;
  uint64_t last_step_staleness = 0;
  uint64_t step_in_flight = 0;
};

WorkerRegistry::WorkerRegistry(absl::Duration lease, uint32_t max_workers, uint32_t shard_index,
                               Clock* clock, RandomSource* random)
    : lease_(lease),
      max_workers_(max_workers),
      shard_index_(shard_index),
      clock_(clock),
      random_(random) {
  DCASGD_CHECK(clock_ != nullptr);
  DCASGD_CHECK(random_ != nullptr);
}

WorkerRegistry::~WorkerRegistry() = default;

void WorkerRegistry::EndLease(WorkerMap& workers, WorkerMap::iterator it,
                              std::vector<WorkerId>* ended) {
  it->second->liveness->live.store(false, std::memory_order_release);
  ended->push_back(it->first);
  workers.erase(it);
}

absl::StatusOr<JoinResult> WorkerRegistry::Join(const std::string& name, uint64_t version,
                                                std::vector<WorkerId>* ended) {
  if (name.empty()) {
    return absl::InvalidArgumentError("worker_name must not be empty (use the pod name)");
  }
  absl::MutexLock lock(&mu_);
  // At most max_workers records (and so backups): make room from expired
  // leases the reaper has not ended yet, else refuse.
  size_t others = 0;
  for (const auto& [id, w] : workers_) others += w->name != name;
  if (others >= max_workers_) {
    const absl::Time now = clock_->Now();
    for (auto it = workers_.begin(); it != workers_.end();) {
      if (it->second->name != name && it->second->deadline < now) {
        EndLease(workers_, it++, ended);
        --others;
      } else {
        ++it;
      }
    }
  }
  if (others >= max_workers_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "shard ", shard_index_, " already has ", others,
        " workers, its --max_workers (the backups of that many are budgeted): retry when "
        "one leaves, or restart the shards with a larger --max_workers"));
  }
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (it->second->name == name) {
      EndLease(workers_, it++, ended);
    } else {
      ++it;
    }
  }
  auto worker = std::make_unique<Worker>();
  worker->name = name;
  worker->deadline = clock_->Now() + lease_;
  worker->pull_version = version;
  // A newcomer starts at the slowest active clock, so SSP does not make the
  // others wait while it catches up from zero.
  uint64_t min_clock = std::numeric_limits<uint64_t>::max();
  for (const auto& [id, w] : workers_) min_clock = std::min(min_clock, w->clock);
  worker->clock = workers_.empty() ? 0 : min_clock;
  // Random ids, not a counter: a counter restarts at 1 with the shard, and
  // a worker joining after a restart could get the id another worker still
  // uses (one lease and one backup for two workers).
  WorkerId id = 0;
  while (id == 0 || workers_.contains(id)) id = random_->Next64();
  // The session is drawn from the kernel's CSPRNG whatever `random_` is: a
  // scripted or predictable session would be no secret.
  worker->session = NewSecret(RandomSource::Secure());
  JoinResult joined{id, worker->session, lease_};
  workers_.emplace(id, std::move(worker));
  return joined;
}

absl::Status WorkerRegistry::Authenticate(WorkerId worker, absl::string_view session) const {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker);
  if (it == workers_.end() || it->second->deadline < clock_->Now()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "worker ", worker, " is unknown or its lease expired (backups freed): Join again"));
  }
  if (!SecretMatches(session, it->second->session)) {
    return absl::UnauthenticatedError(
        absl::StrCat("session ", session.empty() ? "missing" : "wrong", " for worker ", worker,
                     ": send the session its Join returned, or Join again"));
  }
  return absl::OkStatus();
}

absl::Status WorkerRegistry::Heartbeat(WorkerId worker) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker);
  if (it == workers_.end() || it->second->deadline < clock_->Now()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "worker ", worker, " is unknown or its lease expired (backups freed): Join again"));
  }
  it->second->deadline = clock_->Now() + lease_;
  return absl::OkStatus();
}

absl::Status WorkerRegistry::Leave(WorkerId worker) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker);
  if (it == workers_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", worker, " is unknown or its lease already expired"));
  }
  std::vector<WorkerId> ended;
  EndLease(workers_, it, &ended);
  return absl::OkStatus();
}

std::vector<WorkerId> WorkerRegistry::ExpireLeases() {
  std::vector<WorkerId> expired;
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (it->second->deadline < now) {
      EndLease(workers_, it++, &expired);
    } else {
      ++it;
    }
  }
  return expired;
}

absl::Status WorkerRegistry::Check(WorkerId worker, uint64_t* pull_version) const {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker);
  if (it == workers_.end() || it->second->deadline < clock_->Now()) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", worker,
                     " is unknown or its lease expired (backups freed): Join again, "
                     "pull, and recompute the gradient"));
  }
  if (pull_version != nullptr) *pull_version = it->second->pull_version;
  return absl::OkStatus();
}

std::shared_ptr<WorkerLiveness> WorkerRegistry::Liveness(WorkerId worker) const {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker);
  return it == workers_.end() ? nullptr : it->second->liveness;
}

uint64_t WorkerRegistry::PullVersion(WorkerId worker) const {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker);
  return it == workers_.end() ? 0 : it->second->pull_version;
}

void WorkerRegistry::RecordPull(WorkerId worker, uint64_t version) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker);
  if (it != workers_.end()) it->second->pull_version = version;
}

void WorkerRegistry::RecordApplied(WorkerId worker, uint64_t version, bool pulled) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker);
  if (it == workers_.end()) return;
  ++it->second->clock;
  if (pulled) it->second->pull_version = version;
}

uint32_t WorkerRegistry::size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<uint32_t>(workers_.size());
}

absl::flat_hash_map<WorkerId, uint64_t> WorkerRegistry::Clocks() const {
  absl::flat_hash_map<WorkerId, uint64_t> clocks;
  absl::MutexLock lock(&mu_);
  for (const auto& [id, w] : workers_) clocks[id] = w->clock;
  return clocks;
}

bool WorkerRegistry::All(absl::FunctionRef<bool(WorkerId)> pushed) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [id, w] : workers_) {
    if (!pushed(id)) return false;
  }
  return true;
}

absl::StatusOr<StepClaim> WorkerRegistry::ClaimStep(WorkerId worker, uint64_t step) {
  DCASGD_CHECK(step != 0);
  absl::MutexLock lock(&mu_);
  StepClaim claim;
  auto it = workers_.find(worker);
  if (it == workers_.end() || it->second->deadline < clock_->Now()) return claim;
  Worker& w = *it->second;
  if (step > w.last_step && w.step_in_flight != step) {
    if (w.step_in_flight != 0) {
      // An earlier push of this worker is still being applied or waits for a
      // round: steps arrive in order, so this one waits its turn.
      return absl::UnavailableError(absl::StrCat("push step ", step, " of worker ", worker,
                                                 " arrived while step ", w.step_in_flight,
                                                 " is still being applied; retry"));
    }
    w.step_in_flight = step;
    return claim;
  }
  if (step == w.step_in_flight) {
    return absl::UnavailableError(absl::StrCat("push step ", step, " of worker ", worker,
                                               " is being applied now; retry for its result"));
  }
  if (step < w.last_step) {
    return absl::AlreadyExistsError(absl::StrCat(
        "push step ", step, " of worker ", worker, " is older than its last applied step ",
        w.last_step, ": a late duplicate, already applied or superseded; nothing applied"));
  }
  claim.outcome = StepClaim::Outcome::kReplay;
  claim.version = w.last_step_version;
  claim.staleness = w.last_step_staleness;
  return claim;
}

void WorkerRegistry::FinishStep(WorkerId worker, uint64_t step, bool applied, uint64_t version,
                                uint64_t staleness) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker);
  if (it == workers_.end()) return;
  Worker& w = *it->second;
  if (w.step_in_flight == step) w.step_in_flight = 0;
  if (applied && step > w.last_step) {
    w.last_step = step;
    w.last_step_version = version;
    w.last_step_staleness = staleness;
  }
}

}  // namespace dcasgd
