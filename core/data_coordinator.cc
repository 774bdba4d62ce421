#include "core/data_coordinator.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/check.h"

namespace dcasgd {

DataCoordinator::DataCoordinator(absl::Duration lease, Clock* clock)
    : lease_(lease), clock_(clock) {
  DCASGD_CHECK(clock_ != nullptr);
  DCASGD_CHECK(lease_ > absl::ZeroDuration());
}

void DataCoordinator::ReclaimExpired() {
  const absl::Time now = clock_->Now();
  std::vector<Item> expired;
  for (auto it = leased_.begin(); it != leased_.end();) {
    if (it->second.deadline < now) {
      expired.push_back(it->second.item);
      leased_.erase(it++);
    } else {
      ++it;
    }
  }
  // Oldest work first, so the epoch in progress is finished before the next.
  std::sort(expired.begin(), expired.end(), [](const Item& a, const Item& b) {
    return a.epoch != b.epoch ? a.epoch > b.epoch : a.shard > b.shard;
  });
  for (const Item& item : expired) {
    pending_.push_front(item);
    ++reissued_;
  }
}

absl::StatusOr<AcquireResult> DataCoordinator::Acquire(const std::string& worker_name,
                                                       uint32_t num_data_shards, uint32_t epochs) {
  if (worker_name.empty()) {
    return absl::InvalidArgumentError("worker_name must not be empty");
  }
  if (num_data_shards == 0 || epochs == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("a job needs at least one data shard and one epoch, got ", num_data_shards,
                     " shards and ", epochs, " epochs"));
  }
  absl::MutexLock lock(&mu_);
  if (!configured_) {
    configured_ = true;
    num_data_shards_ = num_data_shards;
    epochs_ = epochs;
    completed_per_epoch_.assign(epochs, 0);
    for (uint32_t e = 0; e < epochs; ++e) {
      for (uint32_t s = 0; s < num_data_shards; ++s) pending_.push_back(Item{e, s});
    }
  } else if (num_data_shards != num_data_shards_ || epochs != epochs_) {
    return absl::FailedPreconditionError(
        absl::StrCat("the coordinator runs a job of ", num_data_shards_, " data shards x ", epochs_,
                     " epochs; this worker asks for ", num_data_shards, " x ", epochs,
                     ": use the same data set and epochs, or restart shard 0 for a new job"));
  }
  ReclaimExpired();
  if (!pending_.empty()) {
    Item item = pending_.front();
    pending_.pop_front();
    DataLease lease;
    lease.lease_id = next_lease_id_++;
    lease.data_shard = item.shard;
    lease.epoch = item.epoch;
    lease.lease = lease_;
    leased_.emplace(lease.lease_id, Outstanding{item, worker_name, clock_->Now() + lease_});
    return AcquireResult(lease);
  }
  if (leased_.empty()) return AcquireResult(JobDone{});
  // Everything is out: the earliest deadline is when work may come back.
  absl::Time earliest = absl::InfiniteFuture();
  for (const auto& [id, o] : leased_) earliest = std::min(earliest, o.deadline);
  absl::Duration after =
      std::clamp(earliest - clock_->Now(), absl::Milliseconds(100), absl::Seconds(1));
  return AcquireResult(RetryLater{after});
}

absl::Status DataCoordinator::Renew(uint64_t lease_id) {
  absl::MutexLock lock(&mu_);
  ReclaimExpired();
  auto it = leased_.find(lease_id);
  if (it == leased_.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data lease ", lease_id, " is unknown or expired; its shard was handed out again"));
  }
  it->second.deadline = clock_->Now() + lease_;
  return absl::OkStatus();
}

absl::Status DataCoordinator::Complete(uint64_t lease_id) {
  absl::MutexLock lock(&mu_);
  ReclaimExpired();
  auto it = leased_.find(lease_id);
  if (it == leased_.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data lease ", lease_id, " is unknown or expired; its shard was handed out again"));
  }
  ++completed_per_epoch_[it->second.item.epoch];
  ++completed_;
  leased_.erase(it);
  return absl::OkStatus();
}

JobProgress DataCoordinator::Progress() {
  absl::MutexLock lock(&mu_);
  ReclaimExpired();
  JobProgress p;
  p.configured = configured_;
  p.num_data_shards = num_data_shards_;
  p.epochs = epochs_;
  p.completed = completed_;
  p.leased = static_cast<uint32_t>(leased_.size());
  p.reissued = reissued_;
  p.current_epoch = epochs_;
  for (uint32_t e = 0; e < epochs_; ++e) {
    if (completed_per_epoch_[e] < num_data_shards_) {
      p.current_epoch = e;
      break;
    }
  }
  p.done = configured_ && completed_ == uint64_t{num_data_shards_} * epochs_;
  return p;
}

}  // namespace dcasgd
