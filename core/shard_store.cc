#include "core/shard_store.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/memory.h"
#include "base/status_macros.h"
#include "core/placement.h"
#include "core/shard_store_internal.h"

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
  if (optimizer.gap_aware && sync == SyncMode::kSsgd) {
    return absl::InvalidArgumentError(
        "gap-aware damping needs asynchronous updates (sync mode async or ssp): SSGD applies no "
        "stale gradient, so there is no gap to damp");
  }
  return optimizer.Validate();
}

namespace {

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

// INVALID_ARGUMENT, naming the first element, unless every |g| <= `bound`.
absl::Status CheckValuesWithin(const GradientChunk& g, float bound) {
  size_t bad = 0;
  if (AllWithin(g.values, bound, &bad)) return absl::OkStatus();
  float value;
  std::memcpy(&value, g.values.data() + bad * sizeof(float), sizeof(value));
  return absl::InvalidArgumentError(
      absl::StrCat("gradient for ", ChunkName(g.tensor, g.chunk_index), " has element ", bad, " = ",
                   value, ": NaN, Inf or beyond the shard's max_gradient_abs ", bound,
                   "; nothing of this push was applied"));
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

SyncConfig SyncConfigOf(const ShardConfig& config) {
  SyncConfig sync;
  sync.mode = config.sync;
  sync.ssp_bound = config.ssp_bound;
  sync.ssp_policy = config.ssp_policy;
  sync.max_staleness = config.max_staleness;
  return sync;
}

}  // namespace

ShardStore::ShardStore(ShardConfig config, Clock* clock, RandomSource* random)
    : config_(std::move(config)),
      keeps_backups_(config_.optimizer.uses_backup() && config_.sync != SyncMode::kSsgd),
      registry_(config_.lease, config_.max_workers, config_.shard_index, clock, random),
      policy_(SyncConfigOf(config_), &registry_, this) {
  DCASGD_CHECK(config_.Validate().ok());
}

ShardStore::~ShardStore() { CancelWaiting(); }

// ---------------------------------------------------------------------------
// The one function that updates a chunk and writes what a worker gets

absl::Status ShardStore::ServeChunk(Chunk* chunk, const ChunkTurn* turn, const ChunkUpdate* update,
                                    const Recipient* to, uint64_t* added) {
  ChunkLock lock(chunk, turn);
  if (to != nullptr && to->resend_backup) {
    // A repeated push step: what the worker was sent the first time (its
    // rounding, with a 16-bit backup dtype), which the worker computes on
    // next: ordered, it becomes its newest backup again.
    if (turn != nullptr) chunk->backups.Renew(to->worker, to->step);
    if (const SharedBytes* kept = chunk->backups.Get(to->worker, to->step); kept != nullptr) {
      if (to->values != nullptr) *to->values = *kept;  // the same block: no copy
      return absl::OkStatus();
    }
    char* data = nullptr;
    SharedBytes values = SharedBytes::Allocate(FloatBytes(chunk->length), &data);
    if (!chunk->backups.Read(to->worker, to->step,
                             absl::MakeSpan(reinterpret_cast<float*>(data), chunk->length))) {
      return absl::FailedPreconditionError(
          absl::StrCat("repeated push step of worker ", to->worker, ": it holds no backup of ",
                       ChunkName(*chunk->tensor, chunk->index),
                       " (its first push was not a PushPull of that chunk): Pull"));
    }
    if (to->values != nullptr) *to->values = std::move(values);
    return absl::OkStatus();
  }
  // What the worker is sent: a new block (the one in flight to it before
  // may still be on the wire, so it is never written again).
  SharedBytes sent;
  float* reply = nullptr;
  if (to != nullptr && to->values != nullptr) {
    char* data = nullptr;
    sent = SharedBytes::Allocate(FloatBytes(chunk->length), &data);
    reply = reinterpret_cast<float*>(data);
  }
  if (update != nullptr) {
    ChunkVectors v;
    v.n = chunk->length;
    v.weights = chunk->weights.data();
    v.gradient = update->gradient;
    v.mean_square = chunk->mean_square.empty() ? nullptr : chunk->mean_square.data();
    v.momentum = chunk->momentum.empty() ? nullptr : chunk->momentum.data();
    v.gap_scale = chunk->gap_scale.empty() ? nullptr : chunk->gap_scale.data();
    std::vector<float> unchanged;
    const OptimizerConfig* rule = update->rule;
    OptimizerConfig float32_backup;
    if (rule->uses_backup() && !chunk->backups.Attach(update->pusher, update->base_step, &v)) {
      // The backup vanished after validation (lease expired, or Join
      // replaced the worker): compensate nothing rather than use w - 0.
      unchanged.assign(chunk->weights.begin(), chunk->weights.end());
      v.backup = unchanged.data();
      float32_backup = *rule;
      float32_backup.backup_dtype = Dtype::kFloat32;
      rule = &float32_backup;
    }
    // The kernel writes the new weights into the reply as it goes.
    v.weights_copy = reply;
    ApplyUpdate(*rule, update->lr, v);
  } else if (reply != nullptr) {
    std::memcpy(reply, chunk->weights.data(), FloatBytes(chunk->length));
  }
  // Whether the worker lived was decided when this was ordered: a lease end
  // ordered later frees the backup at its own, later turn, and every chunk
  // work ordered after it finds live false.
  if (to != nullptr && to->worker != 0 && keeps_backups_ && to->liveness != nullptr && to->live) {
    // The values sent become the worker's backup, taken under the same lock
    // as the reply (never a reference to the weights): in float32 the very
    // block sent, else a copy rounded to the backup dtype.
    const size_t ring = size_t{to->liveness->pipeline_depth} + 1;
    if (!sent.empty() && config_.optimizer.backup_dtype == Dtype::kFloat32) {
      *added += chunk->backups.Keep(to->worker, to->step, sent, ring);
    } else {
      *added += chunk->backups.Write(to->worker, to->step, chunk->weights, ring);
    }
  }
  if (to != nullptr && to->values != nullptr) *to->values = std::move(sent);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Pull

absl::StatusOr<PullPlan> ShardStore::PlanPull(WorkerId worker,
                                              const std::vector<std::string>& tensors) {
  PullPlan plan;
  plan.worker = worker;
  if (worker != 0) {
    absl::Status s = registry_.Check(worker);
    if (!s.ok()) return s;
    plan.liveness = registry_.Liveness(worker);
    if (plan.liveness == nullptr) return registry_.Check(worker);  // left meanwhile
  }
  std::vector<ChunkRef>& refs = plan.chunks;
  absl::ReaderMutexLock state(&state_mu_);
  {
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
  // The pull version, in the order: the chunks, each ordered later, hold at
  // least every update up to it.
  if (worker != 0) OrderRecordPull(worker, std::nullopt);
  return plan;
}

uint64_t ShardStore::ReadChunk(const PullPlan& plan, const ChunkRef& ref, std::string* values) {
  Chunk* chunk = const_cast<Chunk*>(static_cast<const Chunk*>(ref.chunk));
  uint64_t added = 0;
  // The block that may become the backup; the caller's string is a copy.
  SharedBytes block;
  SharedBytes* sent = values != nullptr ? &block : nullptr;
  if (plan.worker == 0 || !keeps_backups_ || plan.liveness == nullptr) {
    // A read that writes no backup changes nothing: no entry, no turn.
    const Recipient to{plan.worker, nullptr, sent};
    DCASGD_CHECK(ServeChunk(chunk, nullptr, nullptr, &to, &added).ok());
  } else {
    absl::ReaderMutexLock state(&state_mu_);
    ChunkTurn turn;
    const bool live = OrderPullChunk(*chunk, plan.worker, *plan.liveness, &turn);
    Recipient to{plan.worker, plan.liveness.get(), sent};
    to.live = live;
    DCASGD_CHECK(ServeChunk(chunk, live ? &turn : nullptr, nullptr, &to, &added).ok());
  }
  if (added) backup_bytes_.fetch_add(added, std::memory_order_relaxed);
  if (values != nullptr) values->assign(block.data(), block.size());
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

absl::Status ShardStore::CheckGradientValues(GradientChunk* chunk) const {
  RETURN_IF_ERROR(CheckValuesWithin(*chunk, config_.optimizer.max_gradient_abs));
  chunk->values_checked = true;
  return absl::OkStatus();
}

absl::StatusOr<ShardStore::ValidatedPush> ShardStore::Validate(
    WorkerId worker, uint64_t base_step, std::vector<GradientChunk> chunks) const {
  absl::Status s = registry_.Check(worker);
  if (!s.ok()) return s;
  if (chunks.empty()) {
    return absl::InvalidArgumentError("the push carries no gradient chunks");
  }
  if (absl::StatusOr<uint64_t> base = registry_.BaseVersion(worker, base_step); !base.ok()) {
    return base.status();
  }
  ValidatedPush push;
  push.base_step = base_step;
  push.liveness = registry_.Liveness(worker);
  if (push.liveness == nullptr) return registry_.Check(worker);  // left meanwhile
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
    if (!g.values_checked) {
      RETURN_IF_ERROR(CheckValuesWithin(g, config_.optimizer.max_gradient_abs));
    }
    if (keeps_backups_) {
      absl::MutexLock lock(&chunk->mu);
      if (!chunk->backups.contains(worker, base_step)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "worker ", worker, " has no backup of ", ChunkName(g.tensor, g.chunk_index),
            base_step == 0 ? std::string() : absl::StrCat(" from the reply to step ", base_step),
            " (delay compensation needs the weights it pulled): Pull before pushing"));
      }
    }
    push.chunks.push_back(const_cast<Chunk*>(chunk));
  }
  push.gradients = std::move(chunks);
  return push;
}

void ShardStore::SubmitPush(WorkerId worker, uint64_t step, std::vector<GradientChunk> chunks,
                            bool pull_after, PushDone done, ChunkSink sink, uint64_t base_step) {
  // The new values of a PushPull go to the sink only (no other copy is made).
  DCASGD_CHECK(!pull_after || sink != nullptr);
  if (step != 0) {
    if (!ClaimStep(worker, step, chunks, pull_after, done, sink)) return;
    // Record the outcome before the caller answers, so that a retry arriving
    // right after the answer finds the step applied.
    PushDone recording = [this, worker, step,
                          inner = std::move(done)](absl::StatusOr<PushResult> r) mutable {
      registry_.FinishStep(worker, step, r.ok(), r.ok() ? r->version : 0,
                           r.ok() ? r->staleness : 0);
      inner(std::move(r));
    };
    done = std::move(recording);
  }
  absl::StatusOr<ValidatedPush> validated = Validate(worker, base_step, std::move(chunks));
  if (!validated.ok()) {
    done(validated.status());
    return;
  }
  PendingPush pending;
  pending.worker = worker;
  pending.base_step = base_step;
  pending.step = step;
  pending.done = std::move(done);
  pending.push = *std::move(validated);
  pending.pull_after = pull_after;
  pending.sink = std::move(sink);
  if (!policy_.holds_pushes()) {
    policy_.ApplyNow(pending, version());
    return;
  }
  policy_.Hold(std::make_unique<PendingPush>(std::move(pending)));
}

bool ShardStore::ClaimStep(WorkerId worker, uint64_t step, const std::vector<GradientChunk>& chunks,
                           bool pull_after, PushDone& done, ChunkSink& sink) {
  absl::StatusOr<StepClaim> claim = registry_.ClaimStep(worker, step);
  if (!claim.ok()) {
    done(claim.status());
    return false;
  }
  if (claim->outcome == StepClaim::Outcome::kApply) return true;
  // The same step again: its acknowledgement was lost. Answer as before.
  if (pull_after) {
    if (absl::Status s = Replay(worker, step, chunks, *claim, sink); !s.ok()) {
      done(s);
      return false;
    }
  }
  PushResult result;
  result.version = claim->version;
  result.staleness = claim->staleness;
  result.replayed = true;
  done(result);
  return false;
}

absl::Status ShardStore::Replay(WorkerId worker, uint64_t step,
                                const std::vector<GradientChunk>& chunks, const StepClaim& claim,
                                ChunkSink& sink) {
  // Without backups the answer is a pull of the current weights: their version
  // is taken before any is copied, as PlanPull does.
  const uint64_t pull_version = version();
  std::vector<AppliedChunk> replies;  // all or nothing: sent once all are read
  replies.reserve(chunks.size());
  absl::Status status;
  {
    absl::ReaderMutexLock state(&state_mu_);
    std::vector<Chunk*> found;
    found.reserve(chunks.size());
    for (const GradientChunk& g : chunks) {
      absl::StatusOr<Chunk*> chunk = EntryChunk(g.tensor, g.chunk_index);
      if (!chunk.ok()) return chunk.status();
      found.push_back(*chunk);
    }
    // With backups the answer is the base the worker computes on next: it
    // becomes the newest again, in order with the worker's other changes (a
    // pull since made base 0 the newest, and the next push would evict it).
    std::vector<ChunkTurn> turns;
    const bool ordered = keeps_backups_ && OrderReplay(worker, step, found, &turns);
    for (size_t i = 0; i < found.size(); ++i) {
      AppliedChunk& reply = replies.emplace_back();
      reply.version = claim.version;
      reply.staleness = claim.staleness;
      reply.values.tensor = chunks[i].tensor;
      reply.values.chunk_index = chunks[i].chunk_index;
      // Rules without backups (ASGD, SSGD) answer with the current weights,
      // as a pull would (and no backup is written: liveness is null).
      const Recipient to{worker, nullptr, &reply.values.values, /*resend_backup=*/keeps_backups_,
                         step};
      uint64_t unused = 0;
      // Every ordered turn is taken, even after an error.
      absl::Status s = ServeChunk(found[i], ordered ? &turns[i] : nullptr, nullptr, &to, &unused);
      if (status.ok()) status = std::move(s);
    }
    if (!keeps_backups_) OrderRecordPull(worker, pull_version);
  }
  if (!status.ok()) return status;
  for (AppliedChunk& reply : replies) sink(std::move(reply));
  return absl::OkStatus();
}

PushResult ShardStore::Apply(HeldPush& held) {
  PendingPush& p = static_cast<PendingPush&>(held);
  PushResult result;
  const auto start = std::chrono::steady_clock::now();
  uint64_t backup_added = 0;
  {
    // Held from ordering until every chunk is done: Snapshot (writer lock)
    // never sees a half-applied push.
    absl::ReaderMutexLock state(&state_mu_);
    const OrderedPush ordered = OrderPush(p);
    result.version = ordered.version;
    result.staleness = ordered.staleness;
    RunPush(ordered, p.worker, p.step, p.push.base_step, p.pull_after, p.push.chunks,
            p.push.gradients, &p.push.gradients, p.pull_after ? &p.sink : nullptr, &backup_added);
  }
  if (backup_added) backup_bytes_.fetch_add(backup_added, std::memory_order_relaxed);
  result.apply_seconds = SecondsSince(start);
  return result;
}

void ShardStore::RunPush(const OrderedPush& o, WorkerId worker, uint64_t step, uint64_t base_step,
                         bool pull_back, const std::vector<Chunk*>& chunks,
                         const std::vector<GradientChunk>& gradients,
                         std::vector<GradientChunk>* release, ChunkSink* sink,
                         uint64_t* backup_added) {
  ChunkUpdate update;
  update.rule = &config_.optimizer;
  update.lr = o.lr;
  update.pusher = worker;
  update.base_step = base_step;
  for (size_t i = 0; i < chunks.size(); ++i) {
    Chunk* chunk = chunks[i];
    update.gradient = reinterpret_cast<const float*>(gradients[i].values.data());
    AppliedChunk applied;
    Recipient to{worker, o.liveness.get(), sink != nullptr ? &applied.values.values : nullptr,
                 /*resend_backup=*/false, step};
    to.live = o.live;
    const ChunkTurn turn{o.seq, o.turns[i]};
    DCASGD_CHECK(ServeChunk(chunk, &turn, &update, pull_back ? &to : nullptr, backup_added).ok());
    // Applied: its memory is not needed any more (a PushPull's replies
    // take its place, so the push's bytes in flight do not double).
    if (release != nullptr) std::string().swap((*release)[i].values);
    if (sink != nullptr) {
      applied.version = o.version;
      applied.staleness = o.staleness;
      applied.values.tensor = *chunk->tensor;
      applied.values.chunk_index = chunk->index;
      (*sink)(std::move(applied));
    }
  }
}

std::vector<PushResult> ShardStore::ApplyRound(std::vector<std::unique_ptr<HeldPush>>& round) {
  // SSGD (BSP): the mean of the round's gradients, applied once as plain SGD
  // (with momentum / weight decay if configured): one version per round.
  const auto start = std::chrono::steady_clock::now();
  std::vector<PushResult> results(round.size());
  uint64_t backup_added = 0;
  absl::ReaderMutexLock state(&state_mu_);
  // Group gradients by chunk, in first-seen order.
  std::vector<Chunk*> order;
  std::vector<std::vector<const std::string*>> grads;
  absl::flat_hash_map<Chunk*, size_t> position;
  for (auto& held : round) {
    PendingPush& p = static_cast<PendingPush&>(*held);
    for (size_t i = 0; i < p.push.chunks.size(); ++i) {
      auto [it, inserted] = position.try_emplace(p.push.chunks[i], order.size());
      if (inserted) {
        order.push_back(p.push.chunks[i]);
        grads.emplace_back();
      }
      grads[it->second].push_back(&p.push.gradients[i].values);
    }
  }
  const OrderedPush ordered = OrderRound(round, order);
  RunRound(ordered, order, grads, &backup_added);
  // Summed: the round's gradients are not needed any more.
  for (auto& held : round) {
    for (GradientChunk& g : static_cast<PendingPush&>(*held).push.gradients) {
      std::string().swap(g.values);
    }
  }
  const uint64_t after = ordered.version;
  const double seconds = SecondsSince(start);
  for (size_t r = 0; r < round.size(); ++r) {
    PendingPush& p = static_cast<PendingPush&>(*round[r]);
    results[r].version = after;
    results[r].staleness = 0;
    results[r].apply_seconds = seconds;
    if (!p.pull_after) continue;
    // SSGD keeps no backups: these reads change nothing and take no turn; no
    // other round can change the chunks meanwhile (the policy's lock).
    for (Chunk* chunk : p.push.chunks) {
      AppliedChunk applied;
      applied.version = after;
      applied.values.tensor = *chunk->tensor;
      applied.values.chunk_index = chunk->index;
      const Recipient to{p.worker, p.push.liveness.get(), &applied.values.values,
                         /*resend_backup=*/false, p.step};
      DCASGD_CHECK(ServeChunk(chunk, nullptr, nullptr, &to, &backup_added).ok());
      p.sink(std::move(applied));
    }
  }
  if (backup_added) backup_bytes_.fetch_add(backup_added, std::memory_order_relaxed);
  return results;
}

void ShardStore::RunRound(const OrderedPush& o, const std::vector<Chunk*>& order,
                          const std::vector<std::vector<const std::string*>>& grads,
                          uint64_t* backup_added) {
  OptimizerConfig sgd = config_.optimizer;
  sgd.rule = UpdateRule::kAsgd;
  ChunkUpdate update;
  update.rule = &sgd;
  update.lr = o.lr;
  std::vector<float> mean;
  for (size_t c = 0; c < order.size(); ++c) {
    Chunk* chunk = order[c];
    const std::vector<const std::string*>& parts = grads[c];
    mean.assign(chunk->length, 0.0f);
    for (const std::string* g : parts) {
      const float* gv = reinterpret_cast<const float*>(g->data());
      for (size_t j = 0; j < chunk->length; ++j) mean[j] += gv[j];
    }
    const float inv = 1.0f / static_cast<float>(parts.size());
    for (float& x : mean) x *= inv;
    update.gradient = mean.data();
    const ChunkTurn turn{o.seq, o.turns[c]};
    DCASGD_CHECK(ServeChunk(chunk, &turn, &update, nullptr, backup_added).ok());
  }
}

}  // namespace dcasgd
