#include "services/ps/checkpointer.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace dcasgd {

Checkpointer::Checkpointer(ShardStore* store, std::string dir, ShardMetrics* metrics,
                           SnapshotWriter writer)
    : store_(store),
      dir_(std::move(dir)),
      path_(absl::StrCat(dir_, "/shard-", store->config().shard_index, ".ckpt")),
      metrics_(metrics) {
  absl::MutexLock lock(&write_mu_);
  writer_ = writer != nullptr ? std::move(writer) : SnapshotWriter(WriteCheckpoint);
}

Checkpointer::~Checkpointer() { Stop(); }

void Checkpointer::NoteDurable(absl::Time at) {
  durable_unix_nanos_.store(absl::ToUnixNanos(at), std::memory_order_release);
  if (metrics_ != nullptr) metrics_->NoteDurable(at);
}

absl::Duration Checkpointer::DurableAge() const {
  const int64_t at = durable_unix_nanos_.load(std::memory_order_acquire);
  if (at == 0) return absl::ZeroDuration();
  return std::max(absl::ZeroDuration(), absl::Now() - absl::FromUnixNanos(at));
}

absl::StatusOr<bool> Checkpointer::RestoreIfPresent() {
  std::error_code error;
  std::filesystem::create_directories(dir_, error);
  if (error) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create checkpoint directory '", dir_, "': ", error.message()));
  }
  const absl::Time now = absl::Now();
  absl::StatusOr<ShardSnapshot> snapshot = ReadCheckpoint(path_);
  if (absl::IsNotFound(snapshot.status())) {
    NoteDurable(now);  // nothing to lose yet
    return false;
  }
  if (!snapshot.ok()) {
    return absl::Status(snapshot.status().code(), absl::StrCat("cannot restore checkpoint '", path_,
                                                               "': ", snapshot.status().message()));
  }
  const uint64_t version = snapshot->version;
  if (absl::Status s = store_->Restore(*std::move(snapshot)); !s.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat("cannot restore checkpoint '", path_, "': ", s.message()));
  }
  absl::MutexLock lock(&write_mu_);
  have_written_ = true;
  written_version_ = version;
  written_generation_ = declare_generation_.load(std::memory_order_acquire);
  last_info_ = CheckpointInfo{path_, version, std::filesystem::file_size(path_, error)};
  last_version_.store(version, std::memory_order_release);
  NoteDurable(now);
  return true;
}

absl::StatusOr<CheckpointInfo> Checkpointer::Write() {
  absl::MutexLock lock(&write_mu_);
  return WriteLocked();
}

absl::StatusOr<CheckpointInfo> Checkpointer::WriteLocked() {
  // Read the generation before the snapshot: a Declare racing with it is
  // then written again next time rather than missed.
  const uint64_t generation = declare_generation_.load(std::memory_order_acquire);
  const absl::Time taken = absl::Now();
  const ShardSnapshot snapshot = store_->Snapshot();
  absl::StatusOr<uint64_t> bytes = writer_(path_, snapshot);
  if (!bytes.ok()) {
    ++failures_in_a_row_;
    if (metrics_ != nullptr) metrics_->CountCheckpointFailure();
    const std::string lost =
        have_written_ ? absl::StrFormat("versions after %d (last good checkpoint) are not durable",
                                        written_version_)
                      : std::string("no checkpoint was ever written");
    std::fprintf(stderr,
                 "dcasgd-ps: checkpoint at version %llu failed (%d in a row; %s; state not "
                 "durable for %s): %s\n",
                 static_cast<unsigned long long>(snapshot.version), failures_in_a_row_,
                 lost.c_str(),
                 absl::FormatDuration(absl::Trunc(DurableAge(), absl::Seconds(1))).c_str(),
                 bytes.status().ToString().c_str());
    return bytes.status();
  }
  if (failures_in_a_row_ > 0) {
    std::fprintf(stderr, "dcasgd-ps: checkpoint written again after %d failed attempts: %s\n",
                 failures_in_a_row_, path_.c_str());
  }
  failures_in_a_row_ = 0;
  have_written_ = true;
  written_version_ = snapshot.version;
  written_generation_ = generation;
  last_info_ = CheckpointInfo{path_, snapshot.version, *bytes};
  last_version_.store(snapshot.version, std::memory_order_release);
  NoteDurable(taken);
  if (metrics_ != nullptr) metrics_->CountCheckpoint();
  return last_info_;
}

bool Checkpointer::Changed() const {
  return !have_written_ || written_version_ != store_->version() ||
         written_generation_ != declare_generation_.load(std::memory_order_acquire);
}

void Checkpointer::Start(absl::Duration interval, absl::Duration min_interval) {
  absl::MutexLock lock(&mu_);
  if (running_ || stop_) return;
  running_ = true;
  thread_ = std::thread([this, interval, min_interval] { Loop(interval, min_interval); });
}

void Checkpointer::Stop() {
  std::thread thread;
  std::vector<WriteDone> orphans;
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    thread = std::move(thread_);
  }
  if (thread.joinable()) thread.join();
  {
    absl::MutexLock lock(&mu_);
    running_ = false;
    orphans.swap(requests_);
  }
  for (WriteDone& done : orphans) {
    done(absl::UnavailableError("the shard is shutting down; its final checkpoint follows"));
  }
}

void Checkpointer::RequestWrite(WriteDone done) {
  {
    absl::MutexLock lock(&mu_);
    if (running_ && !stop_) {
      requests_.push_back(std::move(done));
      return;
    }
  }
  done(absl::UnavailableError("the checkpointer is not running"));
}

void Checkpointer::Loop(absl::Duration interval, absl::Duration min_interval) {
  absl::Time next_periodic = absl::Now() + interval;
  absl::Time next_allowed = absl::InfinitePast();  // earliest requested write
  while (true) {
    std::vector<WriteDone> requests;
    {
      absl::MutexLock lock(&mu_);
      auto wake = [this]()
                      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !requests_.empty(); };
      mu_.AwaitWithDeadline(absl::Condition(&wake), next_periodic);
      if (stop_) return;
      if (!requests_.empty() && absl::Now() < next_allowed) {
        // Rate limit: requests arriving meanwhile share the write below.
        mu_.AwaitWithDeadline(absl::Condition(&stop_), next_allowed);
        if (stop_) return;
      }
      requests.swap(requests_);
    }
    if (!requests.empty()) {
      absl::StatusOr<CheckpointInfo> info;
      {
        absl::MutexLock lock(&write_mu_);
        if (Changed()) {
          info = WriteLocked();
          next_allowed = absl::Now() + min_interval;
        } else {
          // Nothing to write: the last checkpoint holds this state.
          info = last_info_;
          NoteDurable(absl::Now());
        }
      }
      for (WriteDone& done : requests) done(info);
      continue;
    }
    if (absl::Now() < next_periodic) continue;
    next_periodic = absl::Now() + interval;
    absl::MutexLock lock(&write_mu_);
    if (Changed()) {
      // A failure is counted and logged by WriteLocked; the next interval
      // (or a requested write) tries again.
      WriteLocked().IgnoreError();
      next_allowed = absl::Now() + min_interval;
    } else {
      NoteDurable(absl::Now());
    }
  }
}

absl::StatusOr<CheckpointInfo> Checkpointer::WriteFinal(absl::Duration budget) {
  const absl::Time start = absl::Now();
  const absl::Time give_up = start + budget;
  absl::Duration backoff = absl::Milliseconds(100);
  int attempts = 0;
  absl::Status last_error;
  while (true) {
    {
      absl::MutexLock lock(&write_mu_);
      if (!Changed()) {
        NoteDurable(absl::Now());
        return last_info_;
      }
      absl::StatusOr<CheckpointInfo> info = WriteLocked();
      ++attempts;
      if (info.ok()) return info;
      last_error = info.status();
    }
    if (absl::Now() + backoff > give_up) break;
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
  const uint64_t now_version = store_->version();
  std::string lost;
  {
    absl::MutexLock lock(&write_mu_);
    if (!have_written_) {
      lost = absl::StrFormat(
          "no checkpoint of this shard was ever written, so all %d updates (and the tensor "
          "declarations) are lost",
          now_version);
    } else if (now_version > written_version_) {
      lost = absl::StrFormat(
          "the last good checkpoint %s holds version %d, so the %d updates since (versions "
          "%d..%d) are lost",
          last_info_.path, written_version_, now_version - written_version_, written_version_ + 1,
          now_version);
    } else {
      lost = absl::StrFormat(
          "the last good checkpoint %s holds version %d; tensor declarations made since are lost",
          last_info_.path, written_version_);
    }
  }
  return absl::Status(
      last_error.code(),
      absl::StrFormat(
          "final checkpoint failed after %d attempts in %s: %s; %s", attempts,
          absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Milliseconds(100))),
          last_error.message(), lost));
}

}  // namespace dcasgd
