#ifndef DCASGD_CORE_SHARD_STORE_INTERNAL_H_
#define DCASGD_CORE_SHARD_STORE_INTERNAL_H_

// The store's own structures, shared by its source files (shard_store.cc:
// pulls and pushes; shard_store_tensors.cc: declarations, statistics,
// snapshots; shard_store_log.cc: the sequencer, membership and the order of
// changes; shard_store_replica.cc: applied entries and replication
// snapshots). Not for other users.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "base/check.h"
#include "base/shared_bytes.h"
#include "core/dtype.h"
#include "core/replication_log.h"
#include "core/shard_store.h"
#include "core/update_rule.h"

namespace dcasgd {

// Bytes held by `n` floats.
inline uint64_t FloatBytes(size_t n) { return static_cast<uint64_t>(n) * sizeof(float); }

// The backups w_bak(m) of one chunk, in the shard's backup dtype
// (--backup_dtype): float32, or rounded to 16 bits (to nearest even), half
// the memory. Per worker a ring of its last `capacity` backups (its pipeline
// depth + 1, ps.proto JoinRequest), each keyed by the push step whose reply
// wrote it (0: a pull). A ring of capacity 1 (depth 0) is the one backup of
// the values last sent, whatever its key: every lookup finds it. A ring of
// capacity > 1 finds only the exact key; a write of a new key evicts the
// oldest. Thread-compatible: the chunk's mutex guards it.
class ChunkBackups {
 public:
  explicit ChunkBackups(Dtype dtype) : dtype_(dtype) {}

  bool contains(WorkerId worker, uint64_t step = 0) const { return Find(worker, step) != nullptr; }
  // Drops `worker`'s backups; returns the bytes they held (0 if none).
  uint64_t Erase(WorkerId worker) {
    auto it = rings_.find(worker);
    if (it == rings_.end()) return 0;
    uint64_t bytes = 0;
    for (const Entry& e : it->second.entries) bytes += Bytes(e.length());
    rings_.erase(it);
    return bytes;
  }
  // Stores `values` (rounded to the dtype) as `worker`'s backup of `step`,
  // in a ring of `capacity` (>= 1, constant per worker). Returns the bytes a
  // new backup adds (0 when it takes the place of one of the same length).
  uint64_t Write(WorkerId worker, uint64_t step, absl::Span<const float> values,
                 size_t capacity = 1) {
    uint64_t added = 0;
    Entry& e = Slot(worker, step, capacity, values.size(), &added);
    if (dtype_ == Dtype::kFloat32) {
      char* data = nullptr;
      e.f32 = SharedBytes::Allocate(FloatBytes(values.size()), &data);
      if (!values.empty()) std::memcpy(data, values.data(), FloatBytes(values.size()));
    } else {
      e.b16.resize(values.size());
      FloatTo16(dtype_, values, absl::MakeSpan(e.b16));
    }
    return added;
  }
  // As Write, for a float32 dtype only (CHECKed), with no copy: `sent` (the
  // float32 values the worker is sent) becomes the backup itself.
  uint64_t Keep(WorkerId worker, uint64_t step, SharedBytes sent, size_t capacity = 1) {
    DCASGD_CHECK(dtype_ == Dtype::kFloat32);
    uint64_t added = 0;
    Entry& e = Slot(worker, step, capacity, sent.size() / sizeof(float), &added);
    e.f32 = std::move(sent);
    return added;
  }
  // `worker`'s float32 backup of `step` itself (no copy), for a float32
  // dtype; null if none or another dtype.
  const SharedBytes* Get(WorkerId worker, uint64_t step) const {
    const Entry* e = Find(worker, step);
    return e == nullptr || dtype_ != Dtype::kFloat32 ? nullptr : &e->f32;
  }
  // `worker`'s backup of `step` as float32 into `out` (of its length); false
  // if none.
  bool Read(WorkerId worker, uint64_t step, absl::Span<float> out) const {
    const Entry* e = Find(worker, step);
    if (e == nullptr) return false;
    if (dtype_ == Dtype::kFloat32) {
      if (!out.empty()) std::memcpy(out.data(), e->f32.data(), e->f32.size());
    } else {
      FloatFrom16(dtype_, e->b16, out);
    }
    return true;
  }
  // Points the kernel's backup view (v->backup, or v->backup16 for 16 bits)
  // at `worker`'s backup of `step`; false if none. Valid until the next
  // change.
  bool Attach(WorkerId worker, uint64_t step, ChunkVectors* v) const {
    const Entry* e = Find(worker, step);
    if (e == nullptr) return false;
    if (dtype_ == Dtype::kFloat32) {
      v->backup = e->float32_values();
    } else {
      v->backup16 = e->b16.data();
    }
    return true;
  }
  // Makes `worker`'s backup of `step` the newest of its ring, if the ring
  // holds that key (a repeated push step was answered with it, so it is the
  // weights the worker now computes on).
  void Renew(WorkerId worker, uint64_t step) {
    auto it = rings_.find(worker);
    if (it == rings_.end()) return;
    std::vector<Entry>& entries = it->second.entries;
    auto e = std::find_if(entries.begin(), entries.end(),
                          [step](const Entry& entry) { return entry.step == step; });
    if (e != entries.end()) std::rotate(e, e + 1, entries.end());
  }
  // How many backups `worker` has of this chunk.
  size_t count(WorkerId worker) const {
    auto it = rings_.find(worker);
    return it == rings_.end() ? 0 : it->second.entries.size();
  }
  // The bytes of one backup of `n` elements.
  uint64_t Bytes(size_t n) const { return static_cast<uint64_t>(n) * DtypeBytes(dtype_); }
  // The bytes of every backup.
  uint64_t TotalBytes() const {
    uint64_t bytes = 0;
    for (const auto& [worker, ring] : rings_) {
      for (const Entry& e : ring.entries) bytes += Bytes(e.length());
    }
    return bytes;
  }

  // Replication: every backup in the dtype's bytes, workers by id, each
  // ring oldest first (so equal backups export equal lists).
  std::vector<BackupCopy> Export() const {
    std::vector<WorkerId> workers;
    for (const auto& [worker, ring] : rings_) workers.push_back(worker);
    std::sort(workers.begin(), workers.end());
    std::vector<BackupCopy> out;
    for (WorkerId worker : workers) {
      for (const Entry& e : rings_.at(worker).entries) {
        BackupCopy& copy = out.emplace_back();
        copy.worker_id = worker;
        copy.step = e.step;
        const char* p =
            dtype_ == Dtype::kFloat32 ? e.f32.data() : reinterpret_cast<const char*>(e.b16.data());
        copy.values.assign(p, Bytes(e.length()));
      }
    }
    return out;
  }
  // Adds `copies` (as Export made them; each exactly Bytes(length) long,
  // checked by the caller) at the new end of their workers' rings of
  // `capacity(w)`; with `replace`, every backup there was goes first.
  template <typename Capacity>
  void Import(const std::vector<BackupCopy>& copies, size_t length, Capacity capacity,
              bool replace) {
    if (replace) rings_.clear();
    for (const BackupCopy& copy : copies) {
      Ring& ring = rings_[copy.worker_id];
      ring.capacity = std::max<size_t>(capacity(copy.worker_id), 1);
      Entry& e = ring.entries.emplace_back();
      e.step = copy.step;
      if (dtype_ == Dtype::kFloat32) {
        char* data = nullptr;
        e.f32 = SharedBytes::Allocate(Bytes(length), &data);
        if (length > 0) std::memcpy(data, copy.values.data(), Bytes(length));
      } else {
        e.b16.resize(length);
        std::memcpy(e.b16.data(), copy.values.data(), Bytes(length));
      }
    }
  }

 private:
  struct Entry {
    uint64_t step = 0;
    // Only the one of dtype_ is used. A float32 backup is a shared block:
    // often the very bytes a reply on the wire still holds (Keep).
    SharedBytes f32;
    std::vector<uint16_t> b16;
    size_t length() const { return f32.size() / sizeof(float) + b16.size(); }
    const float* float32_values() const { return reinterpret_cast<const float*>(f32.data()); }
  };
  struct Ring {
    size_t capacity = 1;
    std::vector<Entry> entries;  // oldest first, at most `capacity`
  };

  // The entry `worker`'s backup of `step` goes in (of `length` elements),
  // moved to the back of its ring (newest); `*added` is the bytes a new
  // entry adds.
  Entry& Slot(WorkerId worker, uint64_t step, size_t capacity, size_t length, uint64_t* added) {
    Ring& ring = rings_[worker];
    ring.capacity = std::max<size_t>(capacity, 1);
    std::vector<Entry>& entries = ring.entries;
    // The entry to overwrite, moved to the back (newest).
    auto it = entries.end();
    if (ring.capacity == 1 && !entries.empty()) {
      it = entries.begin();
    } else {
      it = std::find_if(entries.begin(), entries.end(),
                        [step](const Entry& e) { return e.step == step; });
      if (it == entries.end() && entries.size() >= ring.capacity) it = entries.begin();
    }
    if (it == entries.end()) {
      entries.emplace_back();
      *added = Bytes(length);
    } else {
      std::rotate(it, it + 1, entries.end());
    }
    Entry& e = entries.back();
    e.step = step;
    return e;
  }

  const Entry* Find(WorkerId worker, uint64_t step) const {
    auto it = rings_.find(worker);
    if (it == rings_.end() || it->second.entries.empty()) return nullptr;
    const Ring& ring = it->second;
    if (ring.capacity == 1) return &ring.entries.front();
    for (const Entry& e : ring.entries) {
      if (e.step == step) return &e;
    }
    return nullptr;
  }

  const Dtype dtype_;
  absl::flat_hash_map<WorkerId, Ring> rings_;
};

// One chunk of a tensor owned by this shard. Never moves once created.
struct ShardStore::Chunk {
  Chunk(const std::string* tensor_name, uint64_t chunk_index, size_t n, Dtype backup_dtype)
      : tensor(tensor_name), index(chunk_index), length(n), backups(backup_dtype) {}

  // Constant once the chunk is in tensors_ (set right after insertion, to the
  // map key that owns the name).
  const std::string* tensor;
  const uint64_t index;
  const size_t length;
  // Its turn counter in the store's next_turn_; constant once the chunk is
  // in tensors_ (set under the writer lock before it is visible).
  size_t slot = 0;

  mutable absl::Mutex mu;
  // Ordered turns (ShardStore's class comment): the turn of the next entry
  // whose work may run here, and the seq of the last entry that ran.
  uint64_t turn ABSL_GUARDED_BY(mu) = 0;
  uint64_t last_seq ABSL_GUARDED_BY(mu) = 0;
  // Signalled (with mu) whenever `turn` moves on, for the entries waiting
  // for a later turn. A condition variable rather than a conditional lock
  // (Mutex::LockWhen): its wait hands the mutex over in a way ThreadSanitizer
  // builds can see (tests/tsan/absl_sync_annotations.cc).
  absl::CondVar turn_passed;
  std::vector<float> weights ABSL_GUARDED_BY(mu);
  std::vector<float> mean_square ABSL_GUARDED_BY(mu);  // empty unless DC-ASGD-a
  std::vector<float> momentum ABSL_GUARDED_BY(mu);     // empty unless momentum
  std::vector<float> gap_scale ABSL_GUARDED_BY(mu);    // empty unless gap-aware
  // w_bak(m): the values last sent to worker m (paper Alg. 1), exactly in
  // float32, or rounded to the 16-bit backup dtype; the last depth + 1 of
  // them for a pipelined worker.
  ChunkBackups backups ABSL_GUARDED_BY(mu);
};

// Holds a chunk's mutex. With a turn, first waits (blocking) until the chunk
// reaches it; on release records the entry's seq and passes the turn on.
class ABSL_SCOPED_LOCKABLE ShardStore::ChunkLock {
 public:
  ChunkLock(const Chunk* chunk, const ChunkTurn* turn) ABSL_EXCLUSIVE_LOCK_FUNCTION(chunk->mu)
      : chunk_(const_cast<Chunk*>(chunk)), turn_(turn) {
    chunk_->mu.Lock();
    if (turn_ != nullptr) {
      while (!Reached()) chunk_->turn_passed.Wait(&chunk_->mu);
    }
  }
  ~ChunkLock() ABSL_UNLOCK_FUNCTION() {
    if (turn_ != nullptr) {
      Pass();
      // Cheap without waiters; with several, each checks its own turn.
      chunk_->turn_passed.SignalAll();
    }
    chunk_->mu.Unlock();
  }
  ChunkLock(const ChunkLock&) = delete;
  ChunkLock& operator=(const ChunkLock&) = delete;

 private:
  // Both run with chunk_->mu held (taken in the constructor, which the
  // analysis does not follow into these helpers).
  bool Reached() const ABSL_NO_THREAD_SAFETY_ANALYSIS { return chunk_->turn == turn_->turn; }
  void Pass() ABSL_NO_THREAD_SAFETY_ANALYSIS {  // chunk_->mu is held (LockWhen)
    chunk_->last_seq = turn_->seq;
    ++chunk_->turn;
  }

  Chunk* const chunk_;
  const ChunkTurn* const turn_;
};

struct ShardStore::ValidatedPush {
  uint64_t base_step = 0;  // PushRequest.base_step
  std::vector<Chunk*> chunks;
  std::vector<GradientChunk> gradients;  // same order as chunks
  std::shared_ptr<WorkerLiveness> liveness;
};

// A validated push handed to the sync policy.
struct ShardStore::PendingPush : HeldPush {
  uint64_t step = 0;  // PushRequest.step: the key of the backup a PushPull writes
  ValidatedPush push;
  bool pull_after = false;
  ChunkSink sink;
};

struct ShardStore::Tensor {
  TensorSpec spec;                                   // defaults resolved
  std::map<uint64_t, std::unique_ptr<Chunk>> owned;  // by chunk index
};

}  // namespace dcasgd

#endif  // DCASGD_CORE_SHARD_STORE_INTERNAL_H_
