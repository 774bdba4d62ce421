#include "services/ps/checkpointer.h"

#include <cstdio>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/checkpoint.h"

namespace dcasgd {

Checkpointer::Checkpointer(ShardStore* store, std::string dir, ShardMetrics* metrics)
    : store_(store),
      dir_(std::move(dir)),
      path_(absl::StrCat(dir_, "/shard-", store->config().shard_index, ".ckpt")),
      metrics_(metrics) {}

Checkpointer::~Checkpointer() { Stop(); }

absl::StatusOr<bool> Checkpointer::RestoreIfPresent() {
  std::error_code error;
  std::filesystem::create_directories(dir_, error);
  if (error) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create checkpoint directory '", dir_, "': ", error.message()));
  }
  absl::StatusOr<ShardSnapshot> snapshot = ReadCheckpoint(path_);
  if (absl::IsNotFound(snapshot.status())) return false;
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
  last_version_.store(version, std::memory_order_release);
  return true;
}

absl::StatusOr<CheckpointInfo> Checkpointer::Write() {
  absl::MutexLock lock(&write_mu_);
  // Read the generation before the snapshot: a Declare racing with it is
  // then written again next time rather than missed.
  const uint64_t generation = declare_generation_.load(std::memory_order_acquire);
  const ShardSnapshot snapshot = store_->Snapshot();
  absl::StatusOr<uint64_t> bytes = WriteCheckpoint(path_, snapshot);
  if (!bytes.ok()) return bytes.status();
  have_written_ = true;
  written_version_ = snapshot.version;
  written_generation_ = generation;
  last_version_.store(snapshot.version, std::memory_order_release);
  if (metrics_ != nullptr) metrics_->CountCheckpoint();
  return CheckpointInfo{path_, snapshot.version, *bytes};
}

bool Checkpointer::Changed() const {
  return !have_written_ || written_version_ != store_->version() ||
         written_generation_ != declare_generation_.load(std::memory_order_acquire);
}

void Checkpointer::Start(absl::Duration interval) {
  absl::MutexLock lock(&mu_);
  if (running_ || stop_) return;
  running_ = true;
  thread_ = std::thread([this, interval] { Loop(interval); });
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

void Checkpointer::Loop(absl::Duration interval) {
  absl::Time next = absl::Now() + interval;
  while (true) {
    std::vector<WriteDone> requests;
    {
      absl::MutexLock lock(&mu_);
      auto wake = [this]()
                      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !requests_.empty(); };
      mu_.AwaitWithDeadline(absl::Condition(&wake), next);
      if (stop_) return;
      requests.swap(requests_);
    }
    if (!requests.empty()) {
      absl::StatusOr<CheckpointInfo> info = Write();
      for (WriteDone& done : requests) done(info);
      continue;
    }
    next = absl::Now() + interval;
    bool changed;
    {
      absl::MutexLock lock(&write_mu_);
      changed = Changed();
    }
    if (!changed) continue;
    if (absl::StatusOr<CheckpointInfo> info = Write(); !info.ok()) {
      std::fprintf(stderr, "dcasgd-ps: periodic checkpoint failed: %s\n",
                   info.status().ToString().c_str());
    }
  }
}

}  // namespace dcasgd
