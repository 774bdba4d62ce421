#include "services/ps/replication_outbox.h"

#include <utility>
#include <variant>

namespace dcasgd {

namespace {

// A fixed overhead per entry (seq, ids, versions) plus the variable part.
constexpr uint64_t kEntryOverhead = 64;

uint64_t GradientBytes(const std::vector<GradientChunk>& chunks) {
  uint64_t bytes = 0;
  for (const GradientChunk& c : chunks) bytes += c.values.size() + c.tensor.size() + 32;
  return bytes;
}

}  // namespace

uint64_t ReplicationOutbox::EntryBytes(const LogEntry& entry) {
  uint64_t bytes = kEntryOverhead;
  if (const auto* push = std::get_if<LogPush>(&entry.op)) {
    bytes += GradientBytes(push->gradients);
  } else if (const auto* round = std::get_if<LogSsgdRound>(&entry.op)) {
    for (const LogSsgdRound::RoundPush& p : round->pushes) bytes += GradientBytes(p.gradients);
  } else if (const auto* declare = std::get_if<LogDeclare>(&entry.op)) {
    for (const TensorSpec& spec : declare->tensors) {
      bytes += spec.name.size() + 64 + spec.init.values.size() * sizeof(float);
    }
  } else if (const auto* state = std::get_if<LogCoordinatorState>(&entry.op)) {
    bytes += state->state.size();
  }
  return bytes;
}

void ReplicationOutbox::Append(LogEntry entry) {
  absl::MutexLock lock(&mu_);
  if (!open_) return;
  const uint64_t bytes = EntryBytes(entry);
  if (bytes_ + bytes > capacity_) {
    // Freed now, not when the stream notices: the bound holds at once.
    open_ = false;
    overflowed_ = true;
    queued_.clear();
    sent_.clear();
    bytes_ = 0;
    return;
  }
  bytes_ += bytes;
  queued_.emplace_back(std::move(entry), bytes);
}

void ReplicationOutbox::Open() {
  absl::MutexLock lock(&mu_);
  open_ = true;
  overflowed_ = false;
  queued_.clear();
  sent_.clear();
  bytes_ = 0;
}

void ReplicationOutbox::Close() {
  absl::MutexLock lock(&mu_);
  open_ = false;
  queued_.clear();
  sent_.clear();
  bytes_ = 0;
}

absl::StatusOr<std::vector<LogEntry>> ReplicationOutbox::Take(absl::Duration timeout,
                                                              uint64_t max_bytes) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !queued_.empty() || overflowed_ || !open_;
  };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  if (overflowed_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the replica fell more than --replication_buffer_bytes (", capacity_,
                     ") behind: reconnect and catch up afresh"));
  }
  std::vector<LogEntry> taken;
  uint64_t taken_bytes = 0;
  while (!queued_.empty() && (taken.empty() || taken_bytes + queued_.front().second <= max_bytes)) {
    auto& [entry, bytes] = queued_.front();
    taken_bytes += bytes;
    sent_.emplace_back(entry.seq, bytes);
    taken.push_back(std::move(entry));
    queued_.pop_front();
  }
  return taken;
}

void ReplicationOutbox::Acknowledged(uint64_t seq) {
  absl::MutexLock lock(&mu_);
  while (!sent_.empty() && sent_.front().first <= seq) {
    bytes_ -= sent_.front().second;
    sent_.pop_front();
  }
}

}  // namespace dcasgd
