#include "core/shard_store.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/endian.h"
#include "base/memory.h"
#include "core/placement.h"

namespace dcasgd {

absl::Status ShardConfig::Validate() const {
  if (shard_count < 1) {
    return absl::InvalidArgumentError("shard_count must be >= 1");
  }
  if (shard_index >= shard_count) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard_index ", shard_index, " must be < shard_count ", shard_count));
  }
  if (lease <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("lease must be positive");
  }
  if (max_workers < 1 || max_workers > kMaxWorkersLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_workers must be in [1, ", kMaxWorkersLimit, "], got ", max_workers));
  }
  if (inflight_budget_bytes < 1) {
    return absl::InvalidArgumentError("the in-flight budget must be positive");
  }
  return optimizer.Validate();
}

// Whether a worker's lease lives. Shared (shared_ptr) between the store's
// worker record and the pulls and pushes of that worker, which check it under
// a chunk's lock before writing a backup. The store clears it before freeing
// the worker's backups (FreeBackups takes every chunk's lock afterwards), so
// a backup written after that is impossible and one written before is freed.
struct WorkerLiveness {
  // Atomic: read under chunk locks by any thread, written once under
  // members_mu_; the chunk locks order the write before FreeBackups' visit.
  std::atomic<bool> live{true};
};

// One chunk of a tensor owned by this shard. Never moves once created.
struct ShardStore::Chunk {
  Chunk(const std::string* tensor_name, uint64_t chunk_index, size_t n)
      : tensor(tensor_name), index(chunk_index), length(n) {}

  // Constant once the chunk is in tensors_ (set right after insertion, to the
  // map key that owns the name).
  const std::string* tensor;
  const uint64_t index;
  const size_t length;

  mutable absl::Mutex mu;
  std::vector<float> weights ABSL_GUARDED_BY(mu);
  std::vector<float> mean_square ABSL_GUARDED_BY(mu);  // empty unless DC-ASGD-a
  std::vector<float> momentum ABSL_GUARDED_BY(mu);     // empty unless momentum
  // w_bak(m): exactly the values last sent to worker m (paper Alg. 1).
  absl::flat_hash_map<WorkerId, std::vector<float>> backups ABSL_GUARDED_BY(mu);
};

struct ShardStore::Tensor {
  TensorSpec spec;                                   // defaults resolved
  std::map<uint64_t, std::unique_ptr<Chunk>> owned;  // by chunk index
};

struct ShardStore::Worker {
  std::string name;
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

struct ShardStore::ValidatedPush {
  std::vector<Chunk*> chunks;
  std::vector<GradientChunk> gradients;  // same order as chunks
  std::shared_ptr<WorkerLiveness> liveness;
};

// A declared tensor built outside state_mu_, inserted once complete.
struct ShardStore::PendingTensor {
  std::unique_ptr<Tensor> tensor;
  uint64_t weight_elements = 0;
};

struct ShardStore::WaitingPush {
  WorkerId worker = 0;
  ValidatedPush push;
  bool pull_after = false;
  PushDone done;
  ChunkSink sink;
};

namespace {

// Bytes held by a float vector's elements.
uint64_t FloatBytes(size_t n) { return static_cast<uint64_t>(n) * sizeof(float); }

// The bits of |x| for a non-negative float (or of +Inf). For IEEE-754
// floats, |a| <= |b| exactly when bits(|a|) <= bits(|b|) as integers, and NaN
// is above +Inf.
uint32_t AbsBits(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return bits & 0x7fffffffu;
}

// True if every float in `bytes` has |g| <= `bound` (so it is finite; NaN
// fails too). Integer compare on the magnitude bits so the loop vectorises;
// otherwise returns the index of the first bad element.
bool AllWithin(const std::string& bytes, float bound, size_t* bad_index) {
  const size_t n = bytes.size() / sizeof(float);
  const char* p = bytes.data();
  const uint32_t limit = AbsBits(bound);
  uint32_t any_bad = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, p + i * sizeof(float), sizeof(bits));
    any_bad |= static_cast<uint32_t>((bits & 0x7fffffffu) > limit);
  }
  if (any_bad == 0) return true;
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, p + i * sizeof(float), sizeof(bits));
    if ((bits & 0x7fffffffu) > limit) {
      *bad_index = i;
      return false;
    }
  }
  return true;
}

std::string ChunkName(const std::string& tensor, uint64_t index) {
  return absl::StrCat("chunk ", index, " of tensor ", QuotedName(tensor));
}

// Chunks of `spec` that shard `index` of `count` owns, and their elements.
void CountOwned(const TensorSpec& spec, uint32_t index, uint32_t count, uint64_t* chunks,
                uint64_t* elements) {
  const uint64_t total = spec.num_chunks();
  ChunkRun runs[2];
  const int n = OwnedChunkRuns(Fnv1a64(spec.name), total, index, count, runs);
  *chunks = 0;
  for (int r = 0; r < n; ++r) *chunks += runs[r].count(count);
  *elements = *chunks * spec.chunk_elements;
  // The last chunk may be shorter than the others.
  if (*chunks > 0 && ShardOfChunk(spec.name, total - 1, count) == index) {
    *elements -= spec.chunk_elements - spec.chunk_length(total - 1);
  }
}

// Largest |v| of the values an initialiser can produce, or -1 when unbounded
// (normal: the draws are clamped instead).
double InitMagnitude(const Initializer& init) {
  switch (init.kind) {
    case Initializer::Kind::kZeros:
      return 0;
    case Initializer::Kind::kConstant:
      return std::fabs(init.a);
    case Initializer::Kind::kUniform:
      return std::max(std::fabs(init.a), std::fabs(init.b));
    case Initializer::Kind::kNormal:
      return std::fabs(init.a);
    case Initializer::Kind::kValues: {
      float largest = 0;
      for (float v : init.values) largest = std::max(largest, std::fabs(v));
      return largest;
    }
  }
  return 0;
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

ShardStore::ShardStore(ShardConfig config, Clock* clock, RandomSource* random)
    : config_(std::move(config)),
      clock_(clock),
      keeps_backups_(config_.optimizer.uses_backup() && config_.sync != SyncMode::kSsgd),
      random_(random) {
  DCASGD_CHECK(clock_ != nullptr);
  DCASGD_CHECK(random_ != nullptr);
  DCASGD_CHECK(config_.Validate().ok());
}

ShardStore::~ShardStore() { CancelWaiting(); }

std::unique_ptr<ShardStore::Chunk> ShardStore::MakeChunk(const TensorSpec& spec,
                                                         uint64_t index) const {
  // The name pointer is fixed up by the caller once the Tensor exists.
  auto chunk = std::make_unique<Chunk>(nullptr, index, spec.chunk_length(index));
  absl::MutexLock lock(&chunk->mu);
  chunk->weights.resize(chunk->length);
  InitializeChunk(spec, index, absl::MakeSpan(chunk->weights));
  // Normal draws are unbounded; no weight ever exceeds the clamp.
  const float c = config_.optimizer.max_weight_abs;
  for (float& w : chunk->weights) w = std::min(std::max(w, -c), c);
  if (config_.optimizer.uses_mean_square()) chunk->mean_square.assign(chunk->length, 0.0f);
  if (config_.optimizer.uses_momentum()) chunk->momentum.assign(chunk->length, 0.0f);
  return chunk;
}

absl::StatusOr<std::vector<TensorSpec>> ShardStore::Declare(std::vector<TensorSpec> specs) {
  const float max_weight = config_.optimizer.max_weight_abs;
  for (TensorSpec& spec : specs) {
    absl::Status s = ValidateTensorSpec(spec);
    if (!s.ok()) return s;
    if (!(InitMagnitude(spec.init) <= max_weight)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", QuotedName(spec.name), ": initial values reach ", InitMagnitude(spec.init),
          ", beyond the shard's max_weight_abs ", max_weight, " (weights are kept within it)"));
    }
    spec = ResolveDefaults(std::move(spec));
  }
  // One declaration at a time: the check below stays true while this one
  // allocates without state_mu_ (only Declare and Restore add tensors).
  absl::MutexLock declare(&declare_mu_);
  // Check everything before creating anything: all or nothing.
  std::vector<const TensorSpec*> fresh;
  ShardFootprint added;
  {
    absl::ReaderMutexLock lock(&state_mu_);
    std::map<std::string, const TensorSpec*> in_request;
    for (const TensorSpec& spec : specs) {
      auto [it, inserted] = in_request.emplace(spec.name, &spec);
      if (!inserted && *it->second != spec) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor ", QuotedName(spec.name),
                         " appears twice in the request with different specs"));
      }
      auto existing = tensors_.find(spec.name);
      if (existing != tensors_.end() && existing->second->spec != spec) {
        const TensorSpec& old = existing->second->spec;
        return absl::AlreadyExistsError(
            absl::StrCat("tensor ", QuotedName(spec.name), " is already declared with shape ",
                         ShapeString(old.shape), ", chunk_elements ", old.chunk_elements,
                         " and its initialiser; the new declaration (shape ",
                         ShapeString(spec.shape), ", chunk_elements ", spec.chunk_elements,
                         ") differs. Use a new name or the same spec"));
      }
      if (existing != tensors_.end() || !inserted) continue;
      fresh.push_back(&spec);
      uint64_t chunks = 0, elements = 0;
      CountOwned(spec, config_.shard_index, config_.shard_count, &chunks, &elements);
      added.chunks += chunks;
      added.weight_elements += elements;
      added.spec_bytes += spec.init.values.size() * sizeof(float);
    }
  }
  if (fresh.empty()) return specs;

  // The memory budget, before anything is allocated.
  ShardFootprint after;
  after.weight_elements =
      weight_bytes_.load(std::memory_order_relaxed) / sizeof(float) + added.weight_elements;
  after.chunks = owned_chunks_.load(std::memory_order_relaxed) + added.chunks;
  after.spec_bytes = spec_bytes_.load(std::memory_order_relaxed) + added.spec_bytes;
  if (after.chunks > kMaxOwnedChunks) {
    return absl::ResourceExhaustedError(
        absl::StrCat("this declaration would make shard ", config_.shard_index, " own ",
                     after.chunks, " chunks, above its limit of ", kMaxOwnedChunks,
                     ": use larger chunk_elements or more shards; nothing was declared"));
  }
  const uint64_t after_weight_bytes = after.weight_elements * sizeof(float);
  if (after_weight_bytes > config_.inflight_budget_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("this declaration would give shard ", config_.shard_index, " ",
                     HumanBytes(after_weight_bytes),
                     " of weights, more than one push may carry (the in-flight "
                     "budget, ",
                     HumanBytes(config_.inflight_budget_bytes),
                     "): raise --max_inflight_bytes or use more shards; nothing was declared"));
  }
  const ShardMemory need = MemoryFor(after);
  if (config_.memory_budget_bytes > 0 && need.total() > config_.memory_budget_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "this declaration would need ", need.DebugString(), " on shard ", config_.shard_index,
        " (with --max_workers=", config_.max_workers, "), above its memory budget of ",
        HumanBytes(config_.memory_budget_bytes),
        ": raise --memory_budget_bytes (and the container's memory), lower --max_workers, or use "
        "more shards; nothing was declared"));
  }

  // Allocate and initialise without state_mu_: pulls, pushes and health
  // checks go on meanwhile.
  std::vector<PendingTensor> built;
  built.reserve(fresh.size());
  uint64_t largest_chunk = 0;
  try {
    for (const TensorSpec* spec : fresh) {
      PendingTensor& pending = built.emplace_back();
      pending.tensor = std::make_unique<Tensor>();
      pending.tensor->spec = *spec;
      ChunkRun runs[2];
      const int n = OwnedChunkRuns(Fnv1a64(spec->name), spec->num_chunks(), config_.shard_index,
                                   config_.shard_count, runs);
      for (int r = 0; r < n; ++r) {
        for (uint64_t i = runs[r].first; i < runs[r].end; i += config_.shard_count) {
          std::unique_ptr<Chunk> chunk = MakeChunk(*spec, i);
          pending.weight_elements += chunk->length;
          largest_chunk = std::max<uint64_t>(largest_chunk, FloatBytes(chunk->length));
          pending.tensor->owned.emplace_hint(pending.tensor->owned.end(), i, std::move(chunk));
        }
      }
    }
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("shard ", config_.shard_index, " could not allocate ", need.DebugString(),
                     " (the machine has less free memory than the budget of ",
                     HumanBytes(config_.memory_budget_bytes),
                     "): lower --memory_budget_bytes; nothing was "
                     "declared"));
  }

  uint64_t added_weights = 0;
  {
    absl::MutexLock lock(&state_mu_);
    for (PendingTensor& pending : built) {
      added_weights += FloatBytes(pending.weight_elements);
      const std::string name = pending.tensor->spec.name;
      auto [it, inserted] = tensors_.emplace(name, std::move(pending.tensor));
      DCASGD_CHECK(inserted);
      for (auto& [index, chunk] : it->second->owned) chunk->tensor = &it->first;
    }
    weight_bytes_.fetch_add(added_weights, std::memory_order_relaxed);
    optimizer_state_bytes_.fetch_add(
        added_weights * ((config_.optimizer.uses_mean_square() ? 1 : 0) +
                         (config_.optimizer.uses_momentum() ? 1 : 0)),
        std::memory_order_relaxed);
    owned_chunks_.fetch_add(added.chunks, std::memory_order_relaxed);
    spec_bytes_.fetch_add(added.spec_bytes, std::memory_order_relaxed);
    if (largest_chunk > largest_chunk_bytes_.load(std::memory_order_relaxed)) {
      largest_chunk_bytes_.store(largest_chunk, std::memory_order_relaxed);
    }
  }
  return specs;
}

ShardMemory ShardStore::MemoryFor(const ShardFootprint& footprint) const {
  ShardMemoryConfig config;
  config.state_vectors =
      (config_.optimizer.uses_mean_square() ? 1 : 0) + (config_.optimizer.uses_momentum() ? 1 : 0);
  config.backups = keeps_backups_;
  config.waiting_pushes = config_.sync != SyncMode::kAsync;
  config.max_workers = config_.max_workers;
  config.inflight_bytes = config_.inflight_budget_bytes;
  return ShardMemoryFor(footprint, config);
}

ShardMemory ShardStore::MemoryRule() const {
  ShardFootprint footprint;
  footprint.weight_elements = weight_bytes_.load(std::memory_order_relaxed) / sizeof(float);
  footprint.chunks = owned_chunks_.load(std::memory_order_relaxed);
  footprint.spec_bytes = spec_bytes_.load(std::memory_order_relaxed);
  return MemoryFor(footprint);
}

std::vector<TensorSpec> ShardStore::ListTensors() const {
  absl::ReaderMutexLock lock(&state_mu_);
  std::vector<TensorSpec> out;
  out.reserve(tensors_.size());
  for (const auto& [name, tensor] : tensors_) out.push_back(tensor->spec);
  return out;
}

uint64_t ShardStore::OwnedChunks(const std::string& name) const {
  absl::ReaderMutexLock lock(&state_mu_);
  auto it = tensors_.find(name);
  return it == tensors_.end() ? 0 : it->second->owned.size();
}

// ---------------------------------------------------------------------------
// Membership

absl::StatusOr<JoinResult> ShardStore::Join(const std::string& worker_name) {
  if (worker_name.empty()) {
    return absl::InvalidArgumentError("worker_name must not be empty (use the pod name)");
  }
  std::vector<WorkerId> replaced;
  JoinResult result;
  {
    absl::MutexLock lock(&members_mu_);
    // At most max_workers records (and so backups): make room from expired
    // leases the reaper has not ended yet, else refuse.
    size_t others = 0;
    for (const auto& [id, w] : workers_) others += w->name != worker_name;
    if (others >= config_.max_workers) {
      const absl::Time now = clock_->Now();
      for (auto it = workers_.begin(); it != workers_.end();) {
        if (it->second->name != worker_name && it->second->deadline < now) {
          it->second->liveness->live.store(false, std::memory_order_release);
          replaced.push_back(it->first);
          workers_.erase(it++);
          --others;
        } else {
          ++it;
        }
      }
    }
    if (others >= config_.max_workers) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "shard ", config_.shard_index, " already has ", others,
          " workers, its --max_workers (the backups of that many are budgeted): retry when "
          "one leaves, or restart the shards with a larger --max_workers"));
    }
    for (auto it = workers_.begin(); it != workers_.end();) {
      if (it->second->name == worker_name) {
        it->second->liveness->live.store(false, std::memory_order_release);
        replaced.push_back(it->first);
        workers_.erase(it++);
      } else {
        ++it;
      }
    }
    auto worker = std::make_unique<Worker>();
    worker->name = worker_name;
    worker->deadline = clock_->Now() + config_.lease;
    worker->pull_version = version();
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
    result.worker_id = id;
    result.lease = config_.lease;
    workers_.emplace(result.worker_id, std::move(worker));
  }
  if (!replaced.empty()) {
    FreeBackups(replaced);
    ReleaseWaiters();
  }
  return result;
}

absl::Status ShardStore::Heartbeat(WorkerId worker) {
  absl::MutexLock lock(&members_mu_);
  auto it = workers_.find(worker);
  if (it == workers_.end() || it->second->deadline < clock_->Now()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "worker ", worker, " is unknown or its lease expired (backups freed): Join again"));
  }
  it->second->deadline = clock_->Now() + config_.lease;
  return absl::OkStatus();
}

absl::Status ShardStore::Leave(WorkerId worker) {
  {
    absl::MutexLock lock(&members_mu_);
    auto it = workers_.find(worker);
    if (it == workers_.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat("worker ", worker, " is unknown or its lease already expired"));
    }
    it->second->liveness->live.store(false, std::memory_order_release);
    workers_.erase(it);
  }
  FreeBackups({worker});
  ReleaseWaiters();
  return absl::OkStatus();
}

int ShardStore::ExpireLeases() {
  std::vector<WorkerId> expired;
  {
    absl::MutexLock lock(&members_mu_);
    const absl::Time now = clock_->Now();
    for (auto it = workers_.begin(); it != workers_.end();) {
      if (it->second->deadline < now) {
        it->second->liveness->live.store(false, std::memory_order_release);
        expired.push_back(it->first);
        workers_.erase(it++);
      } else {
        ++it;
      }
    }
  }
  if (!expired.empty()) {
    FreeBackups(expired);
    ReleaseWaiters();
  }
  return static_cast<int>(expired.size());
}

void ShardStore::FreeBackups(const std::vector<WorkerId>& workers) {
  // The workers' liveness is already false, so no backup of theirs appears
  // behind this loop (WorkerLiveness).
  uint64_t freed = 0;
  {
    absl::ReaderMutexLock state(&state_mu_);
    if (!keeps_backups_) return;
    for (const auto& [name, tensor] : tensors_) {
      for (const auto& [index, chunk] : tensor->owned) {
        absl::MutexLock lock(&chunk->mu);
        for (WorkerId w : workers) {
          auto it = chunk->backups.find(w);
          if (it == chunk->backups.end()) continue;
          freed += FloatBytes(it->second.size());
          chunk->backups.erase(it);
        }
      }
    }
  }
  backup_bytes_.fetch_sub(freed, std::memory_order_relaxed);
  // The backups' memory goes back to the system, not just to the allocator.
  if (freed > 0) ReturnFreeMemoryToSystem();
}

std::shared_ptr<WorkerLiveness> ShardStore::LivenessOf(WorkerId worker) const {
  absl::MutexLock lock(&members_mu_);
  auto it = workers_.find(worker);
  return it == workers_.end() ? nullptr : it->second->liveness;
}

void ShardStore::StoreBackup(WorkerId worker, const WorkerLiveness* liveness, Chunk* chunk,
                             const float* weights, uint64_t* added) {
  if (!keeps_backups_ || liveness == nullptr || !liveness->live.load(std::memory_order_acquire)) {
    return;
  }
  // A copy of exactly the values sent (never a reference to the weights).
  auto [it, inserted] = chunk->backups.try_emplace(worker);
  if (inserted) *added += FloatBytes(chunk->length);
  it->second.assign(weights, weights + chunk->length);
}

// Lease check for requests: FAILED_PRECONDITION for unknown or expired ids.
absl::Status ShardStore::CheckWorker(WorkerId worker, uint64_t* pull_version) const {
  absl::MutexLock lock(&members_mu_);
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

// ---------------------------------------------------------------------------
// Pull

absl::StatusOr<PullPlan> ShardStore::PlanPull(WorkerId worker,
                                              const std::vector<std::string>& tensors) {
  PullPlan plan;
  plan.worker = worker;
  if (worker != 0) {
    absl::Status s = CheckWorker(worker, nullptr);
    if (!s.ok()) return s;
    plan.liveness = LivenessOf(worker);
    if (plan.liveness == nullptr) return CheckWorker(worker, nullptr);  // left meanwhile
  }
  std::vector<ChunkRef>& refs = plan.chunks;
  {
    absl::ReaderMutexLock state(&state_mu_);
    auto add = [&refs](const Tensor& tensor) {
      for (const auto& [index, chunk] : tensor.owned) {
        refs.push_back(ChunkRef{chunk.get(), chunk->tensor, index, chunk->length});
      }
    };
    if (tensors.empty()) {
      for (const auto& [name, tensor] : tensors_) add(*tensor);
    } else {
      absl::flat_hash_set<std::string> seen;
      for (const std::string& name : tensors) {
        auto it = tensors_.find(name);
        if (it == tensors_.end()) {
          return absl::NotFoundError(absl::StrCat("tensor ", QuotedName(name),
                                                  " is not declared on shard ", config_.shard_index,
                                                  ": declare it first"));
        }
        if (seen.insert(name).second) add(*it->second);
      }
    }
  }
  if (worker != 0) {
    absl::MutexLock lock(&members_mu_);
    auto it = workers_.find(worker);
    if (it != workers_.end()) it->second->pull_version = version();
  }
  return plan;
}

uint64_t ShardStore::ReadChunk(const PullPlan& plan, const ChunkRef& ref, std::string* values) {
  Chunk* chunk = const_cast<Chunk*>(static_cast<const Chunk*>(ref.chunk));
  values->resize(FloatBytes(chunk->length));
  uint64_t added = 0;
  {
    absl::MutexLock lock(&chunk->mu);
    std::memcpy(values->data(), chunk->weights.data(), values->size());
    // The backup is taken under the same lock as the copy sent.
    if (plan.worker != 0) {
      StoreBackup(plan.worker, plan.liveness.get(), chunk, chunk->weights.data(), &added);
    }
  }
  if (added) backup_bytes_.fetch_add(added, std::memory_order_relaxed);
  return version();
}

// ---------------------------------------------------------------------------
// Push

absl::StatusOr<const ShardStore::Chunk*> ShardStore::FindPushedChunk(const std::string& tensor,
                                                                     uint64_t chunk_index,
                                                                     size_t bytes) const {
  auto it = tensors_.find(tensor);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor ", QuotedName(tensor),
                                            " is not declared on shard ", config_.shard_index,
                                            ": declare it first"));
  }
  const Tensor& t = *it->second;
  const uint64_t num_chunks = t.spec.num_chunks();
  if (chunk_index >= num_chunks) {
    return absl::NotFoundError(absl::StrCat("tensor ", QuotedName(tensor), " has ", num_chunks,
                                            " chunks; chunk ", chunk_index, " does not exist"));
  }
  auto owned = t.owned.find(chunk_index);
  if (owned == t.owned.end()) {
    return absl::NotFoundError(absl::StrCat(
        ChunkName(tensor, chunk_index), " belongs to shard ",
        ShardOfChunk(tensor, chunk_index, config_.shard_count), ", not shard ", config_.shard_index,
        " (placement: (fnv1a64(name) + chunk) mod ", config_.shard_count, ")"));
  }
  const Chunk* chunk = owned->second.get();
  if (bytes != FloatBytes(chunk->length)) {
    return absl::InvalidArgumentError(
        absl::StrCat("gradient for ", ChunkName(tensor, chunk_index), " has ", bytes,
                     " bytes; expected ", FloatBytes(chunk->length), " (", chunk->length,
                     " float32 values of tensor shape ", ShapeString(t.spec.shape), ")"));
  }
  return chunk;
}

absl::Status ShardStore::CheckChunk(const std::string& tensor, uint64_t chunk_index,
                                    size_t bytes) const {
  absl::ReaderMutexLock state(&state_mu_);
  return FindPushedChunk(tensor, chunk_index, bytes).status();
}

absl::StatusOr<ShardStore::ValidatedPush> ShardStore::Validate(
    WorkerId worker, std::vector<GradientChunk> chunks) const {
  absl::Status s = CheckWorker(worker, nullptr);
  if (!s.ok()) return s;
  if (chunks.empty()) {
    return absl::InvalidArgumentError("the push carries no gradient chunks");
  }
  ValidatedPush push;
  push.liveness = LivenessOf(worker);
  if (push.liveness == nullptr) return CheckWorker(worker, nullptr);  // left meanwhile
  push.chunks.reserve(chunks.size());
  absl::ReaderMutexLock state(&state_mu_);
  absl::flat_hash_set<const Chunk*> seen;
  for (const GradientChunk& g : chunks) {
    absl::StatusOr<const Chunk*> found = FindPushedChunk(g.tensor, g.chunk_index, g.values.size());
    if (!found.ok()) return found.status();
    const Chunk* chunk = *found;
    if (!seen.insert(chunk).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("the push carries ", ChunkName(g.tensor, g.chunk_index), " twice"));
    }
    size_t bad = 0;
    if (!AllWithin(g.values, config_.optimizer.max_gradient_abs, &bad)) {
      float value;
      std::memcpy(&value, g.values.data() + bad * sizeof(float), sizeof(value));
      return absl::InvalidArgumentError(
          absl::StrCat("gradient for ", ChunkName(g.tensor, g.chunk_index), " has element ", bad,
                       " = ", value, ": NaN, Inf or beyond the shard's max_gradient_abs ",
                       config_.optimizer.max_gradient_abs, "; nothing of this push was applied"));
    }
    if (keeps_backups_) {
      absl::MutexLock lock(&chunk->mu);
      if (!chunk->backups.contains(worker)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "worker ", worker, " has no backup of ", ChunkName(g.tensor, g.chunk_index),
            " (delay compensation needs the weights it pulled): Pull before pushing"));
      }
    }
    push.chunks.push_back(const_cast<Chunk*>(chunk));
  }
  push.gradients = std::move(chunks);
  return push;
}

PushResult ShardStore::ApplyOne(WorkerId worker, ValidatedPush& push, bool pull_after,
                                ChunkSink* sink) {
  PushResult result;
  uint64_t pull_version = 0;
  {
    absl::MutexLock lock(&members_mu_);
    auto it = workers_.find(worker);
    if (it != workers_.end()) pull_version = it->second->pull_version;
  }
  const auto start = std::chrono::steady_clock::now();
  uint64_t backup_added = 0;
  {
    absl::ReaderMutexLock state(&state_mu_);
    // The version is taken when the update starts, so the chunks streamed
    // while it runs already carry it; Snapshot (writer lock) never sees a
    // half-applied push.
    const uint64_t before = version_.fetch_add(1, std::memory_order_acq_rel);
    result.version = before + 1;
    result.staleness = before >= pull_version ? before - pull_version : 0;
    const float lr = EffectiveLearningRate(config_.optimizer, before, result.staleness);
    const bool stream = pull_after && sink != nullptr && *sink != nullptr;
    if (pull_after && !stream) result.new_values.resize(push.chunks.size());
    std::vector<float> scratch;
    AppliedChunk applied;
    for (size_t i = 0; i < push.chunks.size(); ++i) {
      ChunkValues* out = nullptr;
      if (stream) {
        out = &applied.values;
      } else if (pull_after) {
        out = &result.new_values[i];
      }
      ApplyChunk(worker, push.liveness.get(), push.chunks[i], push.gradients[i].values, lr,
                 pull_after, out, &scratch, &backup_added);
      // Applied: its memory is not needed any more (a PushPull's replies
      // take its place, so the push's bytes in flight do not double).
      std::string().swap(push.gradients[i].values);
      if (stream) {
        applied.version = result.version;
        applied.staleness = result.staleness;
        (*sink)(std::move(applied));
        applied = AppliedChunk();
      }
    }
  }
  if (backup_added) backup_bytes_.fetch_add(backup_added, std::memory_order_relaxed);
  result.apply_seconds = SecondsSince(start);
  {
    absl::MutexLock lock(&members_mu_);
    auto it = workers_.find(worker);
    if (it != workers_.end()) {
      ++it->second->clock;
      if (pull_after) it->second->pull_version = result.version;
    }
  }
  return result;
}

void ShardStore::ApplyChunk(WorkerId worker, const WorkerLiveness* liveness, Chunk* chunk,
                            const std::string& gradient, float lr, bool pull_after,
                            ChunkValues* out, std::vector<float>* scratch, uint64_t* backup_added) {
  absl::MutexLock lock(&chunk->mu);
  ChunkVectors v;
  v.n = chunk->length;
  v.weights = chunk->weights.data();
  v.gradient = reinterpret_cast<const float*>(gradient.data());
  v.mean_square = chunk->mean_square.empty() ? nullptr : chunk->mean_square.data();
  v.momentum = chunk->momentum.empty() ? nullptr : chunk->momentum.data();
  auto backup = chunk->backups.find(worker);
  if (config_.optimizer.uses_backup()) {
    if (keeps_backups_ && backup != chunk->backups.end()) {
      v.backup = backup->second.data();
    } else {
      // The backup vanished after validation (lease expired, or Join
      // replaced the worker): compensate nothing rather than use w - 0.
      scratch->assign(chunk->weights.begin(), chunk->weights.end());
      v.backup = scratch->data();
    }
  }
  if (out != nullptr) {
    out->tensor = *chunk->tensor;
    out->chunk_index = chunk->index;
    out->values.resize(FloatBytes(chunk->length));
    v.new_backup = reinterpret_cast<float*>(out->values.data());
  }
  ApplyUpdate(config_.optimizer, lr, v);
  // The values sent back become the worker's new backup (a copy).
  if (pull_after) StoreBackup(worker, liveness, chunk, chunk->weights.data(), backup_added);
}

bool ShardStore::ClaimStep(WorkerId worker, uint64_t step, const std::vector<GradientChunk>& chunks,
                           bool pull_after, PushDone& done, ChunkSink& sink) {
  uint64_t version = 0, staleness = 0;
  {
    absl::MutexLock lock(&members_mu_);
    auto it = workers_.find(worker);
    if (it == workers_.end() || it->second->deadline < clock_->Now()) {
      // Validate() gives the full message.
      return true;
    }
    Worker& w = *it->second;
    if (step > w.last_step && w.step_in_flight != step) {
      if (w.step_in_flight != 0) {
        // An earlier push of this worker is still being applied or waits
        // for a round: steps arrive in order, so this one waits its turn.
        done(absl::UnavailableError(absl::StrCat("push step ", step, " of worker ", worker,
                                                 " arrived while step ", w.step_in_flight,
                                                 " is still being applied; retry")));
        return false;
      }
      w.step_in_flight = step;
      return true;
    }
    if (step == w.step_in_flight) {
      done(absl::UnavailableError(absl::StrCat("push step ", step, " of worker ", worker,
                                               " is being applied now; retry for its result")));
      return false;
    }
    if (step < w.last_step) {
      done(absl::AlreadyExistsError(absl::StrCat(
          "push step ", step, " of worker ", worker, " is older than its last applied step ",
          w.last_step, ": a late duplicate, already applied or superseded; nothing applied")));
      return false;
    }
    version = w.last_step_version;
    staleness = w.last_step_staleness;
  }
  // The same step again: its acknowledgement was lost. Answer as before.
  absl::StatusOr<PushResult> replayed = Replay(worker, chunks, pull_after, version, staleness);
  if (replayed.ok() && pull_after && sink != nullptr) {
    for (ChunkValues& values : replayed->new_values) {
      AppliedChunk applied;
      applied.version = version;
      applied.staleness = staleness;
      applied.values = std::move(values);
      sink(std::move(applied));
    }
    replayed->new_values.clear();
  }
  done(std::move(replayed));
  return false;
}

void ShardStore::FinishStep(WorkerId worker, uint64_t step,
                            const absl::StatusOr<PushResult>& result) {
  absl::MutexLock lock(&members_mu_);
  auto it = workers_.find(worker);
  if (it == workers_.end()) return;
  Worker& w = *it->second;
  if (w.step_in_flight == step) w.step_in_flight = 0;
  // Only an applied push records its step: a rejected one may be retried.
  if (result.ok() && step > w.last_step) {
    w.last_step = step;
    w.last_step_version = result->version;
    w.last_step_staleness = result->staleness;
  }
}

absl::StatusOr<PushResult> ShardStore::Replay(WorkerId worker,
                                              const std::vector<GradientChunk>& chunks,
                                              bool pull_after, uint64_t version,
                                              uint64_t staleness) {
  PushResult result;
  result.version = version;
  result.staleness = staleness;
  result.replayed = true;
  if (!pull_after) return result;
  // Without backups the answer is a pull of the current weights: their version
  // is taken before any is copied, as PlanPull does.
  const uint64_t pull_version = this->version();
  absl::ReaderMutexLock state(&state_mu_);
  result.new_values.reserve(chunks.size());
  for (const GradientChunk& g : chunks) {
    auto it = tensors_.find(g.tensor);
    const Chunk* chunk = nullptr;
    if (it != tensors_.end()) {
      auto owned = it->second->owned.find(g.chunk_index);
      if (owned != it->second->owned.end()) chunk = owned->second.get();
    }
    if (chunk == nullptr) {
      return absl::NotFoundError(
          absl::StrCat("repeated push step: ", ChunkName(g.tensor, g.chunk_index),
                       " is not owned by shard ", config_.shard_index));
    }
    absl::MutexLock lock(&chunk->mu);
    ChunkValues& out = result.new_values.emplace_back();
    out.tensor = g.tensor;
    out.chunk_index = g.chunk_index;
    if (!keeps_backups_) {
      // Rules without backups (ASGD, SSGD) answer with the current weights,
      // as a pull would; the pull version is recorded below.
      out.values.assign(reinterpret_cast<const char*>(chunk->weights.data()),
                        FloatBytes(chunk->length));
      continue;
    }
    auto backup = chunk->backups.find(worker);
    if (backup == chunk->backups.end()) {
      return absl::FailedPreconditionError(absl::StrCat("repeated push step of worker ", worker,
                                                        ": it holds no backup of ",
                                                        ChunkName(g.tensor, g.chunk_index),
                                                        " (its first push was not a PushPull "
                                                        "of that chunk): Pull"));
    }
    out.values.assign(reinterpret_cast<const char*>(backup->second.data()),
                      FloatBytes(backup->second.size()));
  }
  if (!keeps_backups_) {
    absl::MutexLock lock(&members_mu_);
    auto it = workers_.find(worker);
    if (it != workers_.end()) it->second->pull_version = pull_version;
  }
  return result;
}

void ShardStore::SubmitPush(WorkerId worker, uint64_t step, std::vector<GradientChunk> chunks,
                            bool pull_after, PushDone done, ChunkSink sink) {
  if (step != 0) {
    if (!ClaimStep(worker, step, chunks, pull_after, done, sink)) return;
    // Record the outcome before the caller answers, so that a retry arriving
    // right after the answer finds the step applied.
    PushDone recording = [this, worker, step,
                          inner = std::move(done)](absl::StatusOr<PushResult> r) mutable {
      FinishStep(worker, step, r);
      inner(std::move(r));
    };
    done = std::move(recording);
  }
  absl::StatusOr<ValidatedPush> validated = Validate(worker, std::move(chunks));
  if (!validated.ok()) {
    done(validated.status());
    return;
  }
  switch (config_.sync) {
    case SyncMode::kAsync: {
      if (config_.max_staleness >= 0) {
        uint64_t pull_version = 0;
        absl::Status s = CheckWorker(worker, &pull_version);
        const uint64_t now = version();
        const uint64_t staleness = now >= pull_version ? now - pull_version : 0;
        if (s.ok() && staleness > static_cast<uint64_t>(config_.max_staleness)) {
          s = absl::AbortedError(absl::StrCat("gradient of worker ", worker, " is ", staleness,
                                              " versions stale, above max_staleness ",
                                              config_.max_staleness, ": pull and recompute"));
        }
        if (!s.ok()) {
          done(s);
          return;
        }
      }
      done(ApplyOne(worker, *validated, pull_after, &sink));
      return;
    }
    case SyncMode::kSsp:
    case SyncMode::kSsgd: {
      auto waiting = std::make_unique<WaitingPush>();
      waiting->worker = worker;
      waiting->push = std::move(*validated);
      waiting->pull_after = pull_after;
      waiting->done = std::move(done);
      waiting->sink = std::move(sink);
      {
        // One waiting push per worker (an SSGD round takes one anyway): what
        // the sizing rule's waiting term counts.
        absl::MutexLock lock(&sync_mu_);
        bool duplicate = false;
        for (const auto& w : waiting_) duplicate |= (w->worker == worker);
        if (!duplicate) waiting_.push_back(std::move(waiting));
      }
      if (waiting != nullptr) {
        waiting->done(absl::FailedPreconditionError(
            config_.sync == SyncMode::kSsgd
                ? absl::StrCat("worker ", worker,
                               " already pushed in this SSGD round; wait for its reply")
                : absl::StrCat("worker ", worker,
                               " already has a push waiting for the SSP bound; wait for its "
                               "reply")));
        return;
      }
      ReleaseWaiters();
      return;
    }
  }
}

void ShardStore::ReleaseWaiters() {
  if (config_.sync == SyncMode::kSsgd) {
    MaybeCompleteRound();
    return;
  }
  if (config_.sync != SyncMode::kSsp) return;
  // SSP: apply every waiting push whose worker is within the bound of the
  // slowest active worker; applying one may release others, so loop.
  while (true) {
    std::vector<std::unique_ptr<WaitingPush>> runnable;
    std::vector<std::unique_ptr<WaitingPush>> orphaned;
    {
      absl::MutexLock lock(&sync_mu_);
      if (waiting_.empty()) return;
      absl::flat_hash_map<WorkerId, uint64_t> clocks;
      uint64_t min_clock = std::numeric_limits<uint64_t>::max();
      {
        absl::MutexLock members(&members_mu_);
        for (const auto& [id, w] : workers_) {
          clocks[id] = w->clock;
          min_clock = std::min(min_clock, w->clock);
        }
      }
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
      bool known = CheckWorker(w->worker, nullptr).ok();
      w->done(known ? absl::AbortedError(absl::StrCat(
                          "worker ", w->worker, " is more than ", config_.ssp_bound,
                          " pushes ahead of the slowest worker (SSP bound): pull and retry"))
                    : absl::FailedPreconditionError(absl::StrCat(
                          "worker ", w->worker,
                          " left or its lease expired while its push waited: Join again")));
    }
    if (runnable.empty()) return;
    for (auto& w : runnable) w->done(ApplyOne(w->worker, w->push, w->pull_after, &w->sink));
  }
}

void ShardStore::MaybeCompleteRound() {
  std::vector<std::unique_ptr<WaitingPush>> round;
  std::vector<PushResult> results;
  {
    absl::MutexLock lock(&sync_mu_);
    if (waiting_.empty()) return;
    {
      absl::MutexLock members(&members_mu_);
      for (const auto& [id, w] : workers_) {
        bool pushed = false;
        for (const auto& p : waiting_) pushed |= (p->worker == id);
        if (!pushed) return;  // the round still waits for an active worker
      }
    }
    round.swap(waiting_);
    results = ApplyRound(round);
  }
  for (size_t i = 0; i < round.size(); ++i) round[i]->done(std::move(results[i]));
}

std::vector<PushResult> ShardStore::ApplyRound(std::vector<std::unique_ptr<WaitingPush>>& round) {
  // SSGD (BSP): the mean of the round's gradients, applied once as plain SGD
  // (with momentum / weight decay if configured): one version per round.
  const auto start = std::chrono::steady_clock::now();
  OptimizerConfig sgd = config_.optimizer;
  sgd.rule = UpdateRule::kAsgd;
  std::vector<PushResult> results(round.size());
  uint64_t backup_added = 0;
  absl::ReaderMutexLock state(&state_mu_);
  const uint64_t before = version();
  const float lr = EffectiveLearningRate(sgd, before, 0);
  // Group gradients by chunk, in first-seen order.
  std::vector<Chunk*> order;
  absl::flat_hash_map<Chunk*, std::vector<const std::string*>> grads;
  for (const auto& p : round) {
    for (size_t i = 0; i < p->push.chunks.size(); ++i) {
      auto [it, inserted] = grads.try_emplace(p->push.chunks[i]);
      if (inserted) order.push_back(p->push.chunks[i]);
      it->second.push_back(&p->push.gradients[i].values);
    }
  }
  std::vector<float> mean;
  for (Chunk* chunk : order) {
    const auto& parts = grads[chunk];
    mean.assign(chunk->length, 0.0f);
    for (const std::string* g : parts) {
      const float* gv = reinterpret_cast<const float*>(g->data());
      for (size_t j = 0; j < chunk->length; ++j) mean[j] += gv[j];
    }
    const float inv = 1.0f / static_cast<float>(parts.size());
    for (float& x : mean) x *= inv;
    // Summed: the round's gradients of this chunk are not needed any more.
    for (const std::string* g : parts) std::string().swap(*const_cast<std::string*>(g));
    absl::MutexLock lock(&chunk->mu);
    ChunkVectors v;
    v.n = chunk->length;
    v.weights = chunk->weights.data();
    v.gradient = mean.data();
    v.mean_square = chunk->mean_square.empty() ? nullptr : chunk->mean_square.data();
    v.momentum = chunk->momentum.empty() ? nullptr : chunk->momentum.data();
    if (sgd.uses_mean_square()) v.mean_square = nullptr;
    ApplyUpdate(sgd, lr, v);
  }
  const uint64_t after = version_.fetch_add(1, std::memory_order_acq_rel) + 1;
  const double seconds = SecondsSince(start);
  for (size_t r = 0; r < round.size(); ++r) {
    WaitingPush& p = *round[r];
    PushResult& result = results[r];
    result.version = after;
    result.staleness = 0;
    result.apply_seconds = seconds;
    if (!p.pull_after) continue;
    const bool stream = p.sink != nullptr;
    if (!stream) result.new_values.resize(p.push.chunks.size());
    for (size_t i = 0; i < p.push.chunks.size(); ++i) {
      Chunk* chunk = p.push.chunks[i];
      AppliedChunk applied;
      ChunkValues& out = stream ? applied.values : result.new_values[i];
      out.tensor = *chunk->tensor;
      out.chunk_index = chunk->index;
      out.values.resize(FloatBytes(chunk->length));
      absl::MutexLock lock(&chunk->mu);
      std::memcpy(out.values.data(), chunk->weights.data(), out.values.size());
      StoreBackup(p.worker, p.push.liveness.get(), chunk, chunk->weights.data(), &backup_added);
      if (stream) {
        applied.version = after;
        p.sink(std::move(applied));
      }
    }
  }
  if (backup_added) backup_bytes_.fetch_add(backup_added, std::memory_order_relaxed);
  {
    absl::MutexLock members(&members_mu_);
    for (const auto& p : round) {
      auto it = workers_.find(p->worker);
      if (it == workers_.end()) continue;
      ++it->second->clock;
      if (p->pull_after) it->second->pull_version = after;
    }
  }
  return results;
}

void ShardStore::CancelWaiting() {
  std::vector<std::unique_ptr<WaitingPush>> cancelled;
  {
    absl::MutexLock lock(&sync_mu_);
    cancelled.swap(waiting_);
  }
  for (auto& w : cancelled) {
    w->done(absl::UnavailableError("the shard is shutting down; retry against the new shard"));
  }
}

// ---------------------------------------------------------------------------
// Stats and checkpoints

ShardStats ShardStore::Stats() const {
  ShardStats stats;
  stats.version = version();
  {
    absl::MutexLock lock(&members_mu_);
    stats.active_workers = static_cast<uint32_t>(workers_.size());
  }
  stats.weight_bytes = weight_bytes_.load(std::memory_order_relaxed);
  stats.backup_bytes = backup_bytes_.load(std::memory_order_relaxed);
  stats.optimizer_state_bytes = optimizer_state_bytes_.load(std::memory_order_relaxed);
  stats.owned_chunks = owned_chunks_.load(std::memory_order_relaxed);
  stats.largest_chunk_bytes = largest_chunk_bytes_.load(std::memory_order_relaxed);
  return stats;
}

ShardSnapshot ShardStore::Snapshot() const {
  // The writer lock waits for in-flight updates (they hold the reader lock)
  // and holds new ones off: weights, optimizer state and version are one cut.
  absl::MutexLock state(&state_mu_);
  ShardSnapshot snapshot;
  snapshot.shard_index = config_.shard_index;
  snapshot.shard_count = config_.shard_count;
  snapshot.version = version();
  for (const auto& [name, tensor] : tensors_) {
    TensorState ts;
    ts.spec = tensor->spec;
    for (const auto& [index, chunk] : tensor->owned) {
      absl::MutexLock lock(&chunk->mu);
      ChunkState cs;
      cs.index = index;
      cs.weights = chunk->weights;
      cs.mean_square = chunk->mean_square;
      cs.momentum = chunk->momentum;
      ts.chunks.push_back(std::move(cs));
    }
    snapshot.tensors.push_back(std::move(ts));
  }
  return snapshot;
}

absl::Status ShardStore::Restore(ShardSnapshot snapshot) {
  if (snapshot.shard_index != config_.shard_index || snapshot.shard_count != config_.shard_count) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint is of shard ", snapshot.shard_index, " of ", snapshot.shard_count,
                     " but this is shard ", config_.shard_index, " of ", config_.shard_count,
                     ": changing the shard count needs a fresh start"));
  }
  std::map<std::string, std::unique_ptr<Tensor>> tensors;
  uint64_t weights = 0, state_bytes = 0, chunks = 0, largest_chunk = 0, spec_bytes = 0;
  const float max_weight = config_.optimizer.max_weight_abs;
  const float max_momentum = static_cast<float>(std::min<double>(
      ComputeUpdateBounds(config_.optimizer).momentum, std::numeric_limits<float>::max()));
  // NaN or Inf never enters the shard; magnitudes are brought within the
  // bounds that keep updates finite (UpdateBounds).
  auto check = [&](std::vector<float>& v, const char* what, float clamp, bool non_negative,
                   const TensorState& ts, uint64_t index) -> absl::Status {
    for (float& x : v) {
      if (!std::isfinite(x) || (non_negative && x < 0)) {
        return absl::DataLossError(absl::StrCat("checkpoint has ", what, " ", x, " in chunk ",
                                                index, " of tensor ", QuotedName(ts.spec.name)));
      }
      x = std::min(std::max(x, -clamp), clamp);
    }
    return absl::OkStatus();
  };
  for (TensorState& ts : snapshot.tensors) {
    absl::Status s = ValidateTensorSpec(ts.spec);
    if (!s.ok() || ts.spec.chunk_elements == 0) {
      return absl::DataLossError(absl::StrCat("checkpoint tensor ", QuotedName(ts.spec.name),
                                              " has an invalid spec: ", s.message()));
    }
    auto tensor = std::make_unique<Tensor>();
    tensor->spec = ts.spec;
    const uint64_t num_chunks = ts.spec.num_chunks();
    for (ChunkState& cs : ts.chunks) {
      if (cs.index >= num_chunks ||
          ShardOfChunk(ts.spec.name, cs.index, config_.shard_count) != config_.shard_index ||
          cs.weights.size() != ts.spec.chunk_length(cs.index)) {
        return absl::DataLossError(absl::StrCat("checkpoint has a chunk ", cs.index, " of tensor ",
                                                QuotedName(ts.spec.name),
                                                " that this shard cannot own or of wrong length"));
      }
      for (absl::Status bad : {check(cs.weights, "weight", max_weight, false, ts, cs.index),
                               check(cs.mean_square, "mean square",
                                     std::numeric_limits<float>::max(), true, ts, cs.index),
                               check(cs.momentum, "momentum", max_momentum, false, ts, cs.index)}) {
        if (!bad.ok()) return bad;
      }
      auto chunk = std::make_unique<Chunk>(nullptr, cs.index, cs.weights.size());
      ++chunks;
      largest_chunk = std::max<uint64_t>(largest_chunk, FloatBytes(cs.weights.size()));
      {
        absl::MutexLock lock(&chunk->mu);
        chunk->weights = std::move(cs.weights);
        // Optimizer state of another rule is dropped / zero-filled, so a
        // shard may restart with a different rule.
        if (config_.optimizer.uses_mean_square()) {
          chunk->mean_square = cs.mean_square.size() == chunk->length
                                   ? std::move(cs.mean_square)
                                   : std::vector<float>(chunk->length, 0.0f);
          state_bytes += FloatBytes(chunk->length);
        }
        if (config_.optimizer.uses_momentum()) {
          chunk->momentum = cs.momentum.size() == chunk->length
                                ? std::move(cs.momentum)
                                : std::vector<float>(chunk->length, 0.0f);
          state_bytes += FloatBytes(chunk->length);
        }
      }
      weights += FloatBytes(chunk->length);
      tensor->owned.emplace(cs.index, std::move(chunk));
    }
    // Chunks the checkpoint lacks (none for files we wrote) start from init.
    for (uint64_t i = 0; i < num_chunks; ++i) {
      if (ShardOfChunk(ts.spec.name, i, config_.shard_count) != config_.shard_index) continue;
      if (tensor->owned.count(i)) continue;
      return absl::DataLossError(
          absl::StrCat("checkpoint lacks chunk ", i, " of tensor ", QuotedName(ts.spec.name)));
    }
    spec_bytes += FloatBytes(ts.spec.init.values.size());
    std::string name = ts.spec.name;
    tensors.emplace(std::move(name), std::move(tensor));
  }
  for (auto& [name, tensor] : tensors) {
    for (auto& [index, chunk] : tensor->owned) {
      chunk->tensor = &name;
    }
  }
  absl::MutexLock state(&state_mu_);
  tensors_.swap(tensors);
  version_.store(snapshot.version, std::memory_order_release);
  weight_bytes_.store(weights, std::memory_order_relaxed);
  optimizer_state_bytes_.store(state_bytes, std::memory_order_relaxed);
  backup_bytes_.store(0, std::memory_order_relaxed);
  owned_chunks_.store(chunks, std::memory_order_relaxed);
  largest_chunk_bytes_.store(largest_chunk, std::memory_order_relaxed);
  spec_bytes_.store(spec_bytes, std::memory_order_relaxed);
  return absl::OkStatus();
}

}  // namespace dcasgd
