#include "core/worker_registry.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/secret.h"

namespace dcasgd {

struct WorkerRegistry::Worker {
  // The weights a worker was sent: by the reply to push `step`, or (0) by
  // its last pull or its join, at shard version `version`.
  struct Base {
    uint64_t step = 0;
    uint64_t version = 0;
  };

  explicit Worker(uint32_t depth) : liveness(std::make_shared<WorkerLiveness>(depth)) {}

  // Makes `version` the base of `step`, the newest; keeps depth + 1.
  void Keep(uint64_t step, uint64_t version) {
    if (liveness->pipeline_depth == 0) {
      bases.assign(1, Base{step, version});
      return;
    }
    bases.erase(std::remove_if(bases.begin(), bases.end(),
                               [step](const Base& b) { return b.step == step; }),
                bases.end());
    bases.push_back(Base{step, version});
    if (bases.size() > liveness->pipeline_depth + size_t{1}) bases.erase(bases.begin());
  }

  std::string name;
  std::string session;  // secret: never in a message, log or metric
  std::shared_ptr<WorkerLiveness> liveness;
  absl::Time deadline;
  // Oldest first; the last is the pull version (shard version at the last
  // pull, reply or join). Never empty.
  std::vector<Base> bases;
  uint64_t clock = 0;  // SSP: pushes applied
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
                                                std::vector<WorkerId>* ended,
                                                uint32_t pipeline_depth) {
  if (name.empty()) {
    return absl::InvalidArgumentError("worker_name must not be empty (use the pod name)");
  }
  if (pipeline_depth > kMaxPipelineDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat("pipeline_depth ", pipeline_depth, " is above the limit of ",
                     kMaxPipelineDepth, " (each level is one more backup of the model)"));
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
  auto worker = std::make_unique<Worker>(pipeline_depth);
  worker->name = name;
  worker->deadline = clock_->Now() + lease_;
  worker->Keep(0, version);
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

void WorkerRegistry::RenewAll() {
  absl::MutexLock lock(&mu_);
  const absl::Time deadline = clock_->Now() + lease_;
  for (auto& [id, worker] : workers_) worker->deadline = deadline;
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
  if (pull_version != nullptr) *pull_version = it->second->bases.back().version;
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
  return it == workers_.end() ? 0 : it->second->bases.back().version;
}

absl::StatusOr<uint64_t> WorkerRegistry::BaseVersion(WorkerId worker, uint64_t base_step) const {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker);
  if (it == workers_.end() || it->second->deadline < clock_->Now()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "worker ", worker, " is unknown or its lease expired (backups freed): Join again"));
  }
  const Worker& w = *it->second;
  if (w.liveness->pipeline_depth == 0 && (base_step == 0 || base_step == w.bases.back().step)) {
    return w.bases.back().version;
  }
  std::string kept;
  for (const Worker::Base& b : w.bases) {
    if (w.liveness->pipeline_depth > 0 && b.step == base_step) return b.version;
    absl::StrAppend(&kept, kept.empty() ? "" : ", ", b.step);
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "push of worker ", worker, " names base step ", base_step, ", which shard ", shard_index_,
      " does not keep (pipeline depth ", w.liveness->pipeline_depth, "; kept bases: ", kept,
      ", 0 being the last pull): nothing applied; Pull and recompute"));
}

uint64_t WorkerRegistry::ExtraBackups(absl::string_view except) const {
  absl::MutexLock lock(&mu_);
  uint64_t extra = 0;
  for (const auto& [id, w] : workers_) {
    if (w->name != except) extra += w->liveness->pipeline_depth;
  }
  return extra;
}

bool WorkerRegistry::RecordPull(WorkerId worker, uint64_t version) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker);
  if (it == workers_.end()) return false;
  it->second->Keep(0, version);
  return true;
}

bool WorkerRegistry::RenewBase(WorkerId worker, uint64_t step) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker);
  if (it == workers_.end()) return false;
  Worker& w = *it->second;
  auto base = std::find_if(w.bases.begin(), w.bases.end(),
                           [step](const Worker::Base& b) { return b.step == step; });
  if (w.liveness->pipeline_depth > 0 && base != w.bases.end()) {
    std::rotate(base, base + 1, w.bases.end());
  }
  return true;
}

void WorkerRegistry::RecordApplied(WorkerId worker, uint64_t version, bool pulled, uint64_t step) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker);
  if (it == workers_.end()) return;
  ++it->second->clock;
  if (pulled) it->second->Keep(step, version);
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

void WorkerRegistry::RecordStep(WorkerId worker, uint64_t step, uint64_t version,
                                uint64_t staleness) {
  if (step == 0) return;
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker);
  if (it == workers_.end()) return;
  Worker& w = *it->second;
  if (step > w.last_step) {
    w.last_step = step;
    w.last_step_version = version;
    w.last_step_staleness = staleness;
  }
}

absl::Status WorkerRegistry::End(const std::vector<WorkerId>& workers) {
  absl::MutexLock lock(&mu_);
  for (WorkerId id : workers) {
    if (!workers_.contains(id)) {
      return absl::FailedPreconditionError(
          absl::StrCat("shard ", shard_index_, " does not know worker ", id, " to end"));
    }
  }
  std::vector<WorkerId> ended;
  for (WorkerId id : workers) {
    auto it = workers_.find(id);
    if (it != workers_.end()) EndLease(workers_, it, &ended);
  }
  return absl::OkStatus();
}

absl::Status WorkerRegistry::Admit(const WorkerRecord& record, const std::vector<WorkerId>& ended) {
  absl::MutexLock lock(&mu_);
  for (WorkerId id : ended) {
    if (!workers_.contains(id)) {
      return absl::FailedPreconditionError(
          absl::StrCat("shard ", shard_index_, " does not know worker ", id, " that a Join ended"));
    }
  }
  const bool replaces = std::find(ended.begin(), ended.end(), record.worker_id) != ended.end();
  if (record.worker_id == 0 || (workers_.contains(record.worker_id) && !replaces)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "shard ", shard_index_, " cannot admit worker ", record.worker_id, ": the id is taken"));
  }
  std::vector<WorkerId> unused;
  for (WorkerId id : ended) {
    auto it = workers_.find(id);
    if (it != workers_.end()) EndLease(workers_, it, &unused);
  }
  auto worker = std::make_unique<Worker>(record.pipeline_depth);
  worker->name = record.worker_name;
  worker->session = record.session;
  worker->deadline = clock_->Now() + lease_;
  for (const WorkerRecord::Base& b : record.bases) worker->Keep(b.step, b.version);
  uint64_t min_clock = std::numeric_limits<uint64_t>::max();
  for (const auto& [id, w] : workers_) min_clock = std::min(min_clock, w->clock);
  worker->clock = workers_.empty() ? 0 : min_clock;
  workers_.emplace(record.worker_id, std::move(worker));
  return absl::OkStatus();
}

std::vector<WorkerRecord> WorkerRegistry::Records() const {
  std::vector<WorkerRecord> out;
  {
    absl::MutexLock lock(&mu_);
    out.reserve(workers_.size());
    for (const auto& [id, w] : workers_) {
      WorkerRecord& r = out.emplace_back();
      r.worker_id = id;
      r.worker_name = w->name;
      r.session = w->session;
      r.pipeline_depth = w->liveness->pipeline_depth;
      for (const Worker::Base& b : w->bases) r.bases.push_back({b.step, b.version});
      r.ssp_clock = w->clock;
      r.last_step = w->last_step;
      r.last_step_version = w->last_step_version;
      r.last_step_staleness = w->last_step_staleness;
    }
  }
  std::sort(out.begin(), out.end(),
            [](const WorkerRecord& a, const WorkerRecord& b) { return a.worker_id < b.worker_id; });
  return out;
}

absl::Status WorkerRegistry::Load(const std::vector<WorkerRecord>& records) {
  absl::MutexLock lock(&mu_);
  if (!workers_.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "shard ", shard_index_, " already has workers; load records into a fresh one"));
  }
  WorkerMap loaded;
  for (const WorkerRecord& r : records) {
    if (r.worker_id == 0 || loaded.contains(r.worker_id) || r.bases.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("worker record ", r.worker_id, " has id 0, repeats an id or has no base"));
    }
    auto worker = std::make_unique<Worker>(r.pipeline_depth);
    worker->name = r.worker_name;
    worker->session = r.session;
    worker->clock = r.ssp_clock;
    worker->deadline = clock_->Now() + lease_;
    worker->bases.clear();
    for (const WorkerRecord::Base& b : r.bases) worker->bases.push_back({b.step, b.version});
    worker->last_step = r.last_step;
    worker->last_step_version = r.last_step_version;
    worker->last_step_staleness = r.last_step_staleness;
    loaded.emplace(r.worker_id, std::move(worker));
  }
  workers_.swap(loaded);
  return absl::OkStatus();
}

}  // namespace dcasgd
