// ShardStore, the tensors' side: declarations, listings, statistics, the
// sizing rule, snapshots and restores (core/shard_store.h).

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "core/placement.h"
#include "core/shard_store.h"
#include "core/shard_store_internal.h"

namespace dcasgd {

// What a declaration adds, checked before anything is allocated.
struct ShardStore::DeclarePlan {
  std::vector<const TensorSpec*> fresh;  // specs not declared yet
  ShardFootprint added;                  // what they add
  ShardMemory need;                      // the sizing rule afterwards
};

// A declared tensor built outside state_mu_, inserted once complete.
struct ShardStore::PendingTensor {
  std::unique_ptr<Tensor> tensor;
  uint64_t weight_elements = 0;
  uint64_t largest_chunk_bytes = 0;
};

namespace {

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

// Checks the values of one restored vector: DATA_LOSS for NaN, Inf or (with
// `non_negative`) a negative value; clamps magnitudes to `clamp`.
absl::Status CheckRestored(std::vector<float>& v, const char* what, float clamp, bool non_negative,
                           const std::string& tensor, uint64_t index) {
  for (float& x : v) {
    if (!std::isfinite(x) || (non_negative && x < 0)) {
      return absl::DataLossError(absl::StrCat("checkpoint has ", what, " ", x, " in chunk ", index,
                                              " of tensor ", QuotedName(tensor)));
    }
    x = std::min(std::max(x, -clamp), clamp);
  }
  return absl::OkStatus();
}

}  // namespace

std::unique_ptr<ShardStore::Chunk> ShardStore::MakeChunk(const TensorSpec& spec,
                                                         uint64_t index) const {
  // The name pointer is fixed up by the caller once the Tensor exists.
  auto chunk = std::make_unique<Chunk>(nullptr, index, spec.chunk_length(index),
                                       config_.optimizer.backup_dtype);
  absl::MutexLock lock(&chunk->mu);
  chunk->weights.resize(chunk->length);
  InitializeChunk(spec, index, absl::MakeSpan(chunk->weights));
  // Normal draws are unbounded; no weight ever exceeds the clamp.
  const float c = config_.optimizer.max_weight_abs;
  for (float& w : chunk->weights) w = std::min(std::max(w, -c), c);
  if (config_.optimizer.uses_mean_square()) chunk->mean_square.assign(chunk->length, 0.0f);
  if (config_.optimizer.uses_momentum()) chunk->momentum.assign(chunk->length, 0.0f);
  if (config_.optimizer.uses_gap_scale()) chunk->gap_scale.assign(chunk->length, kGapScaleUnset);
  return chunk;
}

absl::StatusOr<std::vector<TensorSpec>> ShardStore::Declare(std::vector<TensorSpec> specs) {
  return DeclareAt(std::move(specs), 0);
}

absl::StatusOr<std::vector<TensorSpec>> ShardStore::DeclareAt(std::vector<TensorSpec> specs,
                                                              uint64_t seq) {
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
  // One declaration at a time: the plan stays true while this one allocates
  // without state_mu_ (only Declare and Restore add tensors). Everything is
  // checked before anything is created: all or nothing.
  absl::MutexLock declare(&declare_mu_);
  absl::StatusOr<DeclarePlan> plan = PlanDeclare(specs);
  if (!plan.ok()) return plan.status();
  if (seq != 0 && plan->fresh.size() != specs.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "log entry ", seq, " declares a tensor this shard already has: the copies diverged"));
  }
  if (plan->fresh.empty()) return specs;
  // The budgets are the primary's decision; an applied entry only allocates.
  if (seq == 0) {
    if (absl::Status s = CheckBudgets(*plan); !s.ok()) return s;
  }
  // Allocate and initialise without state_mu_: pulls, pushes and health
  // checks go on meanwhile.
  absl::StatusOr<std::vector<PendingTensor>> built = BuildTensors(*plan);
  if (!built.ok()) return built.status();
  if (absl::Status s = InsertTensors(*std::move(built), *plan, seq); !s.ok()) return s;
  return specs;
}

absl::StatusOr<ShardStore::DeclarePlan> ShardStore::PlanDeclare(
    const std::vector<TensorSpec>& specs) const {
  DeclarePlan plan;
  absl::ReaderMutexLock lock(&state_mu_);
  std::map<std::string, const TensorSpec*> in_request;
  for (const TensorSpec& spec : specs) {
    auto [it, inserted] = in_request.emplace(spec.name, &spec);
    if (!inserted && *it->second != spec) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", QuotedName(spec.name), " appears twice in the request with different specs"));
    }
    auto existing = tensors_.find(spec.name);
    if (existing != tensors_.end() && existing->second->spec != spec) {
      const TensorSpec& old = existing->second->spec;
      return absl::AlreadyExistsError(absl::StrCat(
          "tensor ", QuotedName(spec.name), " is already declared with shape ",
          ShapeString(old.shape), ", chunk_elements ", old.chunk_elements,
          " and its initialiser; the new declaration (shape ", ShapeString(spec.shape),
          ", chunk_elements ", spec.chunk_elements, ") differs. Use a new name or the same spec"));
    }
    if (existing != tensors_.end() || !inserted) continue;
    plan.fresh.push_back(&spec);
    uint64_t chunks = 0, elements = 0;
    CountOwned(spec, config_.shard_index, config_.shard_count, &chunks, &elements);
    plan.added.chunks += chunks;
    plan.added.weight_elements += elements;
    plan.added.spec_bytes += spec.init.values.size() * sizeof(float);
  }
  return plan;
}

absl::Status ShardStore::CheckBudgets(DeclarePlan& plan) const {
  ShardFootprint after;
  after.weight_elements =
      weight_bytes_.load(std::memory_order_relaxed) / sizeof(float) + plan.added.weight_elements;
  after.chunks = owned_chunks_.load(std::memory_order_relaxed) + plan.added.chunks;
  after.spec_bytes = spec_bytes_.load(std::memory_order_relaxed) + plan.added.spec_bytes;
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
                     " of weights, more than one push may carry (the in-flight budget, ",
                     HumanBytes(config_.inflight_budget_bytes),
                     "): raise --max_inflight_bytes or use more shards; nothing was declared"));
  }
  plan.need = MemoryFor(after, registry_.ExtraBackups());
  const ShardMemory& need = plan.need;
  if (config_.memory_budget_bytes > 0 && need.total() > config_.memory_budget_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "this declaration would need ", need.DebugString(), " on shard ", config_.shard_index,
        " (with --max_workers=", config_.max_workers, "), above its memory budget of ",
        HumanBytes(config_.memory_budget_bytes),
        ": raise --memory_budget_bytes (and the container's memory), lower --max_workers, or use "
        "more shards; nothing was declared"));
  }
  return absl::OkStatus();
}

absl::Status ShardStore::CheckJoinBudget(const std::string& worker_name,
                                         uint32_t pipeline_depth) const {
  // A depth above the limit is the registry's INVALID_ARGUMENT; without
  // backups or a budget there is nothing to check.
  if (pipeline_depth == 0 || pipeline_depth > kMaxPipelineDepth || !keeps_backups_ ||
      config_.memory_budget_bytes == 0) {
    return absl::OkStatus();
  }
  // A replacing Join ends the worker of the same name, and its ring.
  const uint64_t extra = registry_.ExtraBackups(worker_name) + pipeline_depth;
  const ShardMemory need = MemoryFor(Footprint(), extra);
  if (need.total() <= config_.memory_budget_bytes) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "joining with pipeline_depth ", pipeline_depth, " (", pipeline_depth,
      " more backups of the model) would need ", need.DebugString(), " on shard ",
      config_.shard_index, " (with --max_workers=", config_.max_workers, " and ", extra,
      " extra backups of pipelined workers), above its memory budget of ",
      HumanBytes(config_.memory_budget_bytes),
      ": join with a smaller pipeline_depth, raise --memory_budget_bytes, or use more shards"));
}

absl::StatusOr<std::vector<ShardStore::PendingTensor>> ShardStore::BuildTensors(
    const DeclarePlan& plan) const {
  std::vector<PendingTensor> built;
  built.reserve(plan.fresh.size());
  try {
    for (const TensorSpec* spec : plan.fresh) {
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
          pending.largest_chunk_bytes =
              std::max<uint64_t>(pending.largest_chunk_bytes, FloatBytes(chunk->length));
          pending.tensor->owned.emplace_hint(pending.tensor->owned.end(), i, std::move(chunk));
        }
      }
    }
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("shard ", config_.shard_index, " could not allocate ", plan.need.DebugString(),
                     " (the machine has less free memory than the budget of ",
                     HumanBytes(config_.memory_budget_bytes),
                     "): lower --memory_budget_bytes; nothing was "
                     "declared"));
  }
  return built;
}

absl::Status ShardStore::InsertTensors(std::vector<PendingTensor> built, const DeclarePlan& plan,
                                       uint64_t seq) {
  uint64_t added_weights = 0, largest_chunk = 0;
  // Sequenced under the writer lock: the new chunks start with no turn
  // taken, and every entry that touches them comes after this one.
  absl::MutexLock lock(&state_mu_);
  absl::MutexLock sequencer(&sequencer_mu_);
  absl::StatusOr<uint64_t> next = CheckSeq(seq);
  if (!next.ok()) return next.status();
  std::map<std::string, std::unique_ptr<Tensor>> added;
  for (PendingTensor& pending : built) {
    added_weights += FloatBytes(pending.weight_elements);
    largest_chunk = std::max(largest_chunk, pending.largest_chunk_bytes);
    std::string name = pending.tensor->spec.name;
    added.emplace(std::move(name), std::move(pending.tensor));
  }
  AssignSlots(added, /*fresh=*/false);
  Sequence(*next, [&plan] {
    LogDeclare declare;
    for (const TensorSpec* spec : plan.fresh) declare.tensors.push_back(*spec);
    return declare;
  });
  for (auto& [name, tensor] : added) {
    auto [it, inserted] = tensors_.emplace(name, std::move(tensor));
    DCASGD_CHECK(inserted);
    for (auto& [index, chunk] : it->second->owned) chunk->tensor = &it->first;
  }
  weight_bytes_.fetch_add(added_weights, std::memory_order_relaxed);
  optimizer_state_bytes_.fetch_add(added_weights * config_.optimizer.state_vectors(),
                                   std::memory_order_relaxed);
  owned_chunks_.fetch_add(plan.added.chunks, std::memory_order_relaxed);
  spec_bytes_.fetch_add(plan.added.spec_bytes, std::memory_order_relaxed);
  if (largest_chunk > largest_chunk_bytes_.load(std::memory_order_relaxed)) {
    largest_chunk_bytes_.store(largest_chunk, std::memory_order_relaxed);
  }
  return absl::OkStatus();
}

ShardMemory ShardStore::MemoryFor(const ShardFootprint& footprint, uint64_t extra_backups) const {
  ShardMemoryConfig config;
  config.state_vectors = config_.optimizer.state_vectors();
  config.backups = keeps_backups_;
  config.backup_element_bytes = static_cast<uint32_t>(DtypeBytes(config_.optimizer.backup_dtype));
  config.waiting_pushes = config_.sync != SyncMode::kAsync;
  config.max_workers = config_.max_workers;
  config.extra_backups = extra_backups;
  config.inflight_bytes = config_.inflight_budget_bytes;
  return ShardMemoryFor(footprint, config);
}

ShardFootprint ShardStore::Footprint() const {
  ShardFootprint footprint;
  footprint.weight_elements = weight_bytes_.load(std::memory_order_relaxed) / sizeof(float);
  footprint.chunks = owned_chunks_.load(std::memory_order_relaxed);
  footprint.spec_bytes = spec_bytes_.load(std::memory_order_relaxed);
  return footprint;
}

ShardMemory ShardStore::MemoryRule() const {
  return MemoryFor(Footprint(), registry_.ExtraBackups());
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

ShardStats ShardStore::Stats() const {
  ShardStats stats;
  stats.version = version();
  stats.active_workers = registry_.size();
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
      cs.gap_scale = chunk->gap_scale;
      ts.chunks.push_back(std::move(cs));
    }
    snapshot.tensors.push_back(std::move(ts));
  }
  return snapshot;
}

absl::StatusOr<std::unique_ptr<ShardStore::Tensor>> ShardStore::RestoreTensor(
    TensorState& ts, uint64_t* state_bytes) {
  // The structure is ReadCheckpoint's (see Restore); what depends on this
  // shard is checked here: which chunks it owns, and the value bounds.
  const std::string& name = ts.spec.name;
  const float max_weight = config_.optimizer.max_weight_abs;
  const float max_momentum = static_cast<float>(std::min<double>(
      ComputeUpdateBounds(config_.optimizer).momentum, std::numeric_limits<float>::max()));
  auto tensor = std::make_unique<Tensor>();
  tensor->spec = ts.spec;
  for (ChunkState& cs : ts.chunks) {
    if (ShardOfChunk(name, cs.index, config_.shard_count) != config_.shard_index) {
      return absl::DataLossError(absl::StrCat("checkpoint has chunk ", cs.index, " of tensor ",
                                              QuotedName(name), ", which this shard does not own"));
    }
    // NaN or Inf never enters the shard; magnitudes are brought within the
    // bounds that keep updates finite (UpdateBounds).
    for (absl::Status bad :
         {CheckRestored(cs.weights, "weight", max_weight, false, name, cs.index),
          CheckRestored(cs.mean_square, "mean square", std::numeric_limits<float>::max(), true,
                        name, cs.index),
          CheckRestored(cs.momentum, "momentum", max_momentum, false, name, cs.index),
          // A step is at most 2 * max_weight_abs (both ends clamped).
          CheckRestored(cs.gap_scale, "gap scale", 2 * max_weight, false, name, cs.index)}) {
      if (!bad.ok()) return bad;
    }
    auto chunk = std::make_unique<Chunk>(nullptr, cs.index, cs.weights.size(),
                                         config_.optimizer.backup_dtype);
    absl::MutexLock lock(&chunk->mu);
    chunk->weights = std::move(cs.weights);
    // Optimizer state of another rule is dropped / zero-filled, so a shard
    // may restart with a different rule.
    if (config_.optimizer.uses_mean_square()) {
      chunk->mean_square = cs.mean_square.size() == chunk->length
                               ? std::move(cs.mean_square)
                               : std::vector<float>(chunk->length, 0.0f);
      *state_bytes += FloatBytes(chunk->length);
    }
    if (config_.optimizer.uses_momentum()) {
      chunk->momentum = cs.momentum.size() == chunk->length
                            ? std::move(cs.momentum)
                            : std::vector<float>(chunk->length, 0.0f);
      *state_bytes += FloatBytes(chunk->length);
    }
    if (config_.optimizer.uses_gap_scale()) {
      chunk->gap_scale = cs.gap_scale.size() == chunk->length
                             ? std::move(cs.gap_scale)
                             : std::vector<float>(chunk->length, kGapScaleUnset);
      *state_bytes += FloatBytes(chunk->length);
    }
    tensor->owned.emplace(cs.index, std::move(chunk));
  }
  // Every chunk this shard owns must be in the checkpoint (files written by
  // Snapshot always hold them all): a missing one is DATA_LOSS.
  for (uint64_t i = 0; i < ts.spec.num_chunks(); ++i) {
    if (ShardOfChunk(name, i, config_.shard_count) != config_.shard_index) continue;
    if (tensor->owned.count(i) == 0) {
      return absl::DataLossError(
          absl::StrCat("checkpoint lacks chunk ", i, " of tensor ", QuotedName(name)));
    }
  }
  return tensor;
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
  for (TensorState& ts : snapshot.tensors) {
    absl::StatusOr<std::unique_ptr<Tensor>> tensor = RestoreTensor(ts, &state_bytes);
    if (!tensor.ok()) return tensor.status();
    for (const auto& [index, chunk] : (*tensor)->owned) {
      ++chunks;
      weights += FloatBytes(chunk->length);
      largest_chunk = std::max<uint64_t>(largest_chunk, FloatBytes(chunk->length));
    }
    spec_bytes += FloatBytes(ts.spec.init.values.size());
    std::string name = ts.spec.name;
    tensors.emplace(std::move(name), *std::move(tensor));
  }
  for (auto& [name, tensor] : tensors) {
    for (auto& [index, chunk] : tensor->owned) chunk->tensor = &name;
  }
  absl::MutexLock state(&state_mu_);
  absl::MutexLock sequencer(&sequencer_mu_);
  AssignSlots(tensors, /*fresh=*/true);
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
