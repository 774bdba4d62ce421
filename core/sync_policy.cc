#include "core/sync_policy.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "base/check.h"

namespace dcasgd {

SyncPolicy::SyncPolicy(SyncConfig config, const WorkerRegistry* registry, Applier* applier)
    : config_(config), registry_(registry), applier_(applier) {
  DCASGD_CHECK(registry_ != nullptr);
  DCASGD_CHECK(applier_ != nullptr);
}

SyncPolicy::~SyncPolicy() { CancelWaiting(); }

void SyncPolicy::ApplyNow(HeldPush& push, uint64_t version) {
  DCASGD_CHECK(!holds_pushes());
  if (config_.max_staleness >= 0) {
    // Counted from the weights the gradient was computed on (its base).
    absl::StatusOr<uint64_t> base_version = registry_->BaseVersion(push.worker, push.base_step);
    absl::Status s = base_version.status();
    const uint64_t pull_version = base_version.ok() ? *base_version : 0;
    const uint64_t staleness = version >= pull_version ? version - pull_version : 0;
    if (s.ok() && staleness > static_cast<uint64_t>(config_.max_staleness)) {
      s = absl::AbortedError(absl::StrCat("gradient of worker ", push.worker, " is ", staleness,
                                          " versions stale, above max_staleness ",
                                          config_.max_staleness, ": pull and recompute"));
    }
    if (!s.ok()) {
      push.done(s);
      return;
    }
  }
  push.done(applier_->Apply(push));
}

void SyncPolicy::Hold(std::unique_ptr<HeldPush> push) {
  DCASGD_CHECK(holds_pushes());
  const WorkerId worker = push->worker;
  {
    // One waiting push per worker (an SSGD round takes one anyway): what
    // the sizing rule's waiting term counts.
    absl::MutexLock lock(&mu_);
    bool duplicate = false;
    for (const auto& w : waiting_) duplicate |= (w->worker == worker);
    if (!duplicate) waiting_.push_back(std::move(push));
  }
  if (push != nullptr) {
    push->done(absl::FailedPreconditionError(
        config_.mode == SyncMode::kSsgd
            ? absl::StrCat("worker ", worker,
                           " already pushed in this SSGD round; wait for its reply")
            : absl::StrCat("worker ", worker,
                           " already has a push waiting for the SSP bound; wait for its reply")));
    return;
  }
  Release();
}

void SyncPolicy::Release() {
  switch (config_.mode) {
    case SyncMode::kAsync:
      return;
    case SyncMode::kSsp:
      ReleaseSsp();
      return;
    case SyncMode::kSsgd:
      MaybeCompleteRound();
      return;
  }
}

void SyncPolicy::ReleaseSsp() {
  // Apply every waiting push whose worker is within the bound of the slowest
  // active worker; applying one may release others, so loop.
  while (true) {
    std::vector<std::unique_ptr<HeldPush>> runnable;
    std::vector<std::unique_ptr<HeldPush>> orphaned;
    {
      absl::MutexLock lock(&mu_);
      if (waiting_.empty()) return;
      const absl::flat_hash_map<WorkerId, uint64_t> clocks = registry_->Clocks();
      uint64_t min_clock = std::numeric_limits<uint64_t>::max();
      for (const auto& [id, clock] : clocks) min_clock = std::min(min_clock, clock);
      for (auto it = waiting_.begin(); it != waiting_.end();) {
        auto clock = clocks.find((*it)->worker);
        if (clock == clocks.end()) {
          orphaned.push_back(std::move(*it));
          it = waiting_.erase(it);
        } else if (clock->second <= min_clock + config_.ssp_bound) {
          runnable.push_back(std::move(*it));
          it = waiting_.erase(it);
        } else if (config_.ssp_policy == SspPolicy::kReject) {
          orphaned.push_back(std::move(*it));  // rejected below
          it = waiting_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& w : orphaned) {
      const bool known = registry_->Check(w->worker).ok();
      w->done(known ? absl::AbortedError(absl::StrCat(
                          "worker ", w->worker, " is more than ", config_.ssp_bound,
                          " pushes ahead of the slowest worker (SSP bound): pull and retry"))
                    : absl::FailedPreconditionError(absl::StrCat(
                          "worker ", w->worker,
                          " left or its lease expired while its push waited: Join again")));
    }
    if (runnable.empty()) return;
    for (auto& w : runnable) w->done(applier_->Apply(*w));
  }
}

void SyncPolicy::MaybeCompleteRound() {
  std::vector<std::unique_ptr<HeldPush>> round;
  std::vector<PushResult> results;
  {
    absl::MutexLock lock(&mu_);
    if (waiting_.empty()) return;
    const bool complete = registry_->All([this](WorkerId id) ABSL_NO_THREAD_SAFETY_ANALYSIS {
      // Runs under mu_ (held above), which the analysis cannot see through
      // the callback.
      for (const auto& p : waiting_) {
        if (p->worker == id) return true;
      }
      return false;
    });
    if (!complete) return;  // the round still waits for an active worker
    round.swap(waiting_);
    results = applier_->ApplyRound(round);
  }
  DCASGD_CHECK(results.size() == round.size());
  for (size_t i = 0; i < round.size(); ++i) round[i]->done(std::move(results[i]));
}

void SyncPolicy::CancelWaiting() {
  std::vector<std::unique_ptr<HeldPush>> cancelled;
  {
    absl::MutexLock lock(&mu_);
    cancelled.swap(waiting_);
  }
  for (auto& w : cancelled) {
    w->done(absl::UnavailableError("the shard is shutting down; retry against the new shard"));
  }
}

}  // namespace dcasgd
