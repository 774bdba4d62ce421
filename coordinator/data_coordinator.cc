#include "coordinator/data_coordinator.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/check.h"
#include "base/random.h"
#include "base/secret.h"

namespace dcasgd {
namespace {

// A SHA-256 digest saved as 64 hex digits.
bool ParseDigest(absl::string_view hex, std::string* digest) {
  if (hex.size() != 64) return false;
  for (char c : hex) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  *digest = absl::HexStringToBytes(hex);
  return true;
}

}  // namespace

DataCoordinator::DataCoordinator(absl::Duration lease, Clock* clock, StateSaver save)
    : lease_(lease), clock_(clock), save_(std::move(save)) {
  DCASGD_CHECK(clock_ != nullptr);
  DCASGD_CHECK(lease_ > absl::ZeroDuration());
}

absl::Status DataCoordinator::Commit(absl::string_view what) {
  if (save_ == nullptr) return absl::OkStatus();
  absl::Status saved = save_(SerializeLocked());
  if (saved.ok()) return saved;
  // Retry: a full or failing disk may recover, and the caller's request
  // changed nothing.
  return absl::UnavailableError(absl::StrCat("the coordinator cannot save its data schedule (",
                                             saved.message(), "), so ", what,
                                             " did not happen; retry"));
}

void DataCoordinator::UnconfigureLocked() {
  configured_ = false;
  num_data_shards_ = epochs_ = 0;
  returned_.clear();
  cursor_ = 0;
  completed_per_epoch_.clear();
  done_.clear();
  out_.clear();
}

void DataCoordinator::AddLease(uint64_t lease_id, Outstanding outstanding) {
  deadlines_.emplace(outstanding.deadline, lease_id);
  leased_.emplace(lease_id, std::move(outstanding));
}

void DataCoordinator::EraseLease(uint64_t lease_id) {
  auto it = leased_.find(lease_id);
  if (it == leased_.end()) return;
  deadlines_.erase({it->second.deadline, lease_id});
  leased_.erase(it);
}

void DataCoordinator::ClearLeases() {
  leased_.clear();
  deadlines_.clear();
}

void DataCoordinator::ReclaimExpired() {
  const absl::Time now = clock_->Now();
  std::vector<Item> expired;
  while (!deadlines_.empty() && deadlines_.begin()->first < now) {
    const uint64_t lease_id = deadlines_.begin()->second;
    deadlines_.erase(deadlines_.begin());
    auto it = leased_.find(lease_id);
    expired.push_back(it->second.item);
    out_[IndexOf(it->second.item)] = false;
    leased_.erase(it);
  }
  // Oldest work first, so the epoch in progress is finished before the next.
  std::sort(expired.begin(), expired.end(), [](const Item& a, const Item& b) {
    return a.epoch != b.epoch ? a.epoch > b.epoch : a.shard > b.shard;
  });
  for (const Item& item : expired) {
    returned_.push_front(item);
    ++reissued_;
  }
}

std::optional<DataCoordinator::Item> DataCoordinator::TakePending() {
  if (!returned_.empty()) {
    Item item = returned_.front();
    returned_.pop_front();
    return item;
  }
  // Done items (after a restore) and leased ones (restored leases) are
  // skipped; the cursor only moves forward.
  const uint64_t items = uint64_t{num_data_shards_} * epochs_;
  while (cursor_ < items && (done_[cursor_] || out_[cursor_])) ++cursor_;
  if (cursor_ == items) return std::nullopt;
  const uint64_t i = cursor_++;
  return Item{static_cast<uint32_t>(i / num_data_shards_),
              static_cast<uint32_t>(i % num_data_shards_)};
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
  if (num_data_shards > kMaxDataShards || epochs > kMaxEpochs ||
      uint64_t{num_data_shards} * epochs > kMaxWorkItems) {
    return absl::InvalidArgumentError(
        absl::StrCat("a job of ", num_data_shards, " data shards x ", epochs,
                     " epochs is too large: at most ", kMaxDataShards, " data shards, ", kMaxEpochs,
                     " epochs and ", kMaxWorkItems, " (data shard, epoch) items"));
  }
  absl::MutexLock lock(&mu_);
  const bool configures = !configured_;
  if (configures) {
    // Built before anything is fixed, so a failure leaves no half a job.
    std::vector<uint32_t> per_epoch(epochs, 0);
    std::vector<bool> done(size_t{epochs} * num_data_shards, false);
    std::vector<bool> out(done.size(), false);
    configured_ = true;
    num_data_shards_ = num_data_shards;
    epochs_ = epochs;
    completed_per_epoch_ = std::move(per_epoch);
    done_ = std::move(done);
    out_ = std::move(out);
    returned_.clear();
    cursor_ = 0;
  } else if (num_data_shards != num_data_shards_ || epochs != epochs_) {
    return absl::FailedPreconditionError(
        absl::StrCat("the coordinator runs a job of ", num_data_shards_, " data shards x ", epochs_,
                     " epochs; this worker asks for ", num_data_shards, " x ", epochs,
                     ": use the same data set and epochs, or restart shard 0 for a new job"));
  }
  ReclaimExpired();
  if (leased_.size() >= kMaxLeases) {
    return absl::ResourceExhaustedError(
        absl::StrCat(kMaxLeases, " data leases are out; complete or let some expire first"));
  }
  if (std::optional<Item> pending = TakePending()) {
    const Item item = *pending;
    DataLease lease;
    lease.lease_id = next_lease_id_++;
    lease.secret = NewSecret(RandomSource::Secure());
    lease.data_shard = item.shard;
    lease.epoch = item.epoch;
    lease.lease = lease_;
    AddLease(lease.lease_id,
             Outstanding{item, worker_name, clock_->Now() + lease_, SecretDigest(lease.secret)});
    out_[IndexOf(item)] = true;
    // Durable before it is granted: a lease a restart would forget is handed
    // out again while its holder still trains on it.
    if (absl::Status saved = Commit("no data shard was leased"); !saved.ok()) {
      EraseLease(lease.lease_id);
      out_[IndexOf(item)] = false;
      returned_.push_front(item);  // handed out first next time
      if (configures) UnconfigureLocked();
      return saved;
    }
    return AcquireResult(lease);
  }
  if (leased_.empty()) return AcquireResult(JobDone{});
  // Everything is out: the earliest deadline is when work may come back.
  const absl::Time earliest = deadlines_.begin()->first;
  absl::Duration after =
      std::clamp(earliest - clock_->Now(), absl::Milliseconds(100), absl::Seconds(1));
  return AcquireResult(RetryLater{after});
}

absl::StatusOr<DataCoordinator::Outstanding*> DataCoordinator::FindLease(uint64_t lease_id,
                                                                         absl::string_view secret) {
  auto it = leased_.find(lease_id);
  if (it == leased_.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data lease ", lease_id, " is unknown or expired; its shard was handed out again"));
  }
  // Digests of equal length, compared in constant time.
  if (!SecretMatches(SecretDigest(secret), it->second.secret_digest)) {
    return absl::UnauthenticatedError(absl::StrCat(
        "lease secret ", secret.empty() ? "missing" : "wrong", " for data lease ", lease_id,
        ": only the worker that acquired a lease may renew or complete it (send the "
        "lease_secret AcquireDataShard returned); nothing changed"));
  }
  return &it->second;
}

absl::Status DataCoordinator::Renew(uint64_t lease_id, absl::string_view secret) {
  absl::MutexLock lock(&mu_);
  ReclaimExpired();
  absl::StatusOr<Outstanding*> lease = FindLease(lease_id, secret);
  if (!lease.ok()) return lease.status();
  deadlines_.erase({(*lease)->deadline, lease_id});
  (*lease)->deadline = clock_->Now() + lease_;
  deadlines_.emplace((*lease)->deadline, lease_id);
  return absl::OkStatus();
}

void DataCoordinator::RenewAllLeases() {
  absl::MutexLock lock(&mu_);
  const absl::Time deadline = clock_->Now() + lease_;
  deadlines_.clear();
  for (auto& [lease_id, outstanding] : leased_) {
    outstanding.deadline = deadline;
    deadlines_.emplace(deadline, lease_id);
  }
}

absl::Status DataCoordinator::Complete(uint64_t lease_id, absl::string_view secret) {
  absl::MutexLock lock(&mu_);
  ReclaimExpired();
  absl::StatusOr<Outstanding*> lease = FindLease(lease_id, secret);
  if (!lease.ok()) return lease.status();
  const Outstanding outstanding = **lease;
  const Item item = outstanding.item;
  const size_t index = IndexOf(item);
  ++completed_per_epoch_[item.epoch];
  done_[index] = true;
  out_[index] = false;
  ++completed_;
  EraseLease(lease_id);
  if (absl::Status saved = Commit(absl::StrCat("the completion of data lease ", lease_id));
      !saved.ok()) {
    // The lease stays with its worker, which retries; the attempt shows the
    // worker is alive, so it counts as a renewal.
    --completed_per_epoch_[item.epoch];
    done_[index] = false;
    out_[index] = true;
    --completed_;
    Outstanding renewed = outstanding;
    renewed.deadline = clock_->Now() + lease_;
    AddLease(lease_id, std::move(renewed));
    return saved;
  }
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

// Format (text, one item per line):
//   dcasgd-data-coordinator 3
//   job <num_data_shards> <epochs> <reissued> <next lease id>
//   epoch <e> <one '0'/'1' per data shard: done>        (one per epoch)
//   lease <lease id> <epoch> <data shard> <SHA-256 of its secret, 64 hex digits>
//         <worker name, C-escaped>                        (one line per lease out)
// Version 2 had no digest in lease lines; version 1 had no next lease id and
// no lease lines.
std::string DataCoordinator::SerializeProgress() {
  absl::MutexLock lock(&mu_);
  return SerializeLocked();
}

std::string DataCoordinator::SerializeLocked() const {
  std::string out = "dcasgd-data-coordinator 3\n";
  if (!configured_) return out;
  absl::StrAppend(&out, "job ", num_data_shards_, " ", epochs_, " ", reissued_, " ", next_lease_id_,
                  "\n");
  for (uint32_t e = 0; e < epochs_; ++e) {
    absl::StrAppend(&out, "epoch ", e, " ");
    for (uint32_t s = 0; s < num_data_shards_; ++s) {
      out.push_back(done_[size_t{e} * num_data_shards_ + s] ? '1' : '0');
    }
    out.push_back('\n');
  }
  std::vector<uint64_t> ids;
  ids.reserve(leased_.size());
  for (const auto& [id, o] : leased_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  for (uint64_t id : ids) {
    const Outstanding& o = leased_.at(id);
    absl::StrAppend(&out, "lease ", id, " ", o.item.epoch, " ", o.item.shard, " ",
                    absl::BytesToHexString(o.secret_digest), " ", absl::CEscape(o.worker), "\n");
  }
  return out;
}

// Parses and checks the whole text before it changes anything (all or
// nothing).
// Long: in one place so that no check is skipped on some path.
absl::Status DataCoordinator::RestoreProgress(absl::string_view text) {
  auto bad = [](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("data coordinator state: ", why));
  };
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
  int format = 0;
  if (!lines.empty() && lines[0] == "dcasgd-data-coordinator 1") format = 1;
  if (!lines.empty() && lines[0] == "dcasgd-data-coordinator 2") format = 2;
  if (!lines.empty() && lines[0] == "dcasgd-data-coordinator 3") format = 3;
  if (format == 0) return bad("missing or unknown header");
  if (lines.size() == 1) {  // saved before any worker fixed the job
    absl::MutexLock lock(&mu_);
    UnconfigureLocked();
    ClearLeases();
    completed_ = reissued_ = 0;
    next_lease_id_ = 1;
    return absl::OkStatus();
  }
  std::vector<absl::string_view> job = absl::StrSplit(lines[1], ' ');
  uint32_t shards = 0, epochs = 0;
  uint64_t reissued = 0, next_lease_id = 1;
  if (job.size() != (format == 1 ? 4u : 5u) || job[0] != "job" ||
      !absl::SimpleAtoi(job[1], &shards) || !absl::SimpleAtoi(job[2], &epochs) ||
      !absl::SimpleAtoi(job[3], &reissued) ||
      (format >= 2 && (!absl::SimpleAtoi(job[4], &next_lease_id) || next_lease_id == 0)) ||
      shards == 0 || epochs == 0 || shards > kMaxDataShards || epochs > kMaxEpochs ||
      uint64_t{shards} * epochs > kMaxWorkItems || lines.size() < 2 + size_t{epochs} ||
      (format == 1 && lines.size() != 2 + size_t{epochs})) {
    return bad("malformed job line or wrong number of epoch lines");
  }
  std::vector<bool> done(size_t{epochs} * shards, false);
  std::vector<uint32_t> per_epoch(epochs, 0);
  for (uint32_t e = 0; e < epochs; ++e) {
    std::vector<absl::string_view> parts = absl::StrSplit(lines[2 + e], ' ');
    uint32_t index = 0;
    if (parts.size() != 3 || parts[0] != "epoch" || !absl::SimpleAtoi(parts[1], &index) ||
        index != e || parts[2].size() != shards) {
      return bad(absl::StrCat("malformed line for epoch ", e));
    }
    for (uint32_t s = 0; s < shards; ++s) {
      if (parts[2][s] != '0' && parts[2][s] != '1') return bad("bits must be 0 or 1");
      done[size_t{e} * shards + s] = parts[2][s] == '1';
      per_epoch[e] += parts[2][s] == '1';
    }
  }
  // Leases out when the state was saved: their holders renew and complete
  // them after the restart with the same secrets; their deadlines start
  // again now. Format 2 kept no secrets: those items are handed out again.
  const absl::Time deadline = clock_->Now() + lease_;
  absl::flat_hash_map<uint64_t, Outstanding> leased;
  uint64_t dropped = 0;  // format-2 leases
  std::vector<bool> out(done.size(), false);
  const size_t fields = format == 3 ? 6 : 5;
  for (size_t i = 2 + size_t{epochs}; i < lines.size(); ++i) {
    std::vector<absl::string_view> parts =
        absl::StrSplit(lines[i], absl::MaxSplits(' ', static_cast<int>(fields) - 1));
    uint64_t id = 0;
    uint32_t epoch = 0, shard = 0;
    std::string worker, digest;
    if (parts.size() != fields || parts[0] != "lease" || !absl::SimpleAtoi(parts[1], &id) ||
        !absl::SimpleAtoi(parts[2], &epoch) || !absl::SimpleAtoi(parts[3], &shard) || id == 0 ||
        id >= next_lease_id || epoch >= epochs || shard >= shards ||
        !absl::CUnescape(parts[fields - 1], &worker) || worker.empty() ||
        (format == 3 && !ParseDigest(parts[4], &digest))) {
      return bad(absl::StrCat("malformed lease line '", lines[i].substr(0, 200), "'"));
    }
    const size_t index = size_t{epoch} * shards + shard;
    if (done[index] || out[index] || leased.contains(id)) {
      return bad(absl::StrCat("lease ", id, " is of a data shard already done or leased"));
    }
    if (leased.size() + dropped >= kMaxLeases) return bad("more leases than a coordinator holds");
    out[index] = true;  // also for a dropped lease: its line may not repeat the item
    if (format == 2) {
      // Neither leased nor done: the cursor hands the item out again.
      ++dropped;
      continue;
    }
    leased.emplace(id, Outstanding{Item{epoch, shard}, std::move(worker), deadline, digest});
  }
  absl::MutexLock lock(&mu_);
  configured_ = true;
  num_data_shards_ = shards;
  epochs_ = epochs;
  reissued_ = reissued;
  next_lease_id_ = next_lease_id;
  done_ = std::move(done);
  completed_per_epoch_ = std::move(per_epoch);
  out_ = std::move(out);
  completed_ = 0;
  reissued_ += dropped;
  returned_.clear();
  cursor_ = 0;  // TakePending skips the items done or leased
  ClearLeases();
  for (auto& [id, o] : leased) AddLease(id, std::move(o));
  // Dropped format-2 leases were marked out only to catch repeated lines.
  out_.assign(out_.size(), false);
  for (const auto& [id, o] : leased_) out_[IndexOf(o.item)] = true;
  for (uint32_t e = 0; e < epochs; ++e) completed_ += completed_per_epoch_[e];
  return absl::OkStatus();
}

}  // namespace dcasgd
