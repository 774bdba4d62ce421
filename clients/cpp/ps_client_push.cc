// PsClient's pushes: started on every shard's Exchange stream, finished in
// ticket order (ps_client.h).
#include <algorithm>
#include <atomic>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "clients/cpp/chunk_stream.h"
#include "clients/cpp/ps_client.h"
#include "clients/cpp/round_stream.h"
#include "clients/cpp/shard_session.h"

namespace dcasgd {

using client::CallKind;
using client::CallTensors;
using client::PendingRound;
using client::ShardReply;
using client::ShardSession;

// One push from its start to its answer. Read and written by the thread
// that starts it (under push_mu_), then by the one that finishes it (under
// finish_mu_).
struct PsClient::PendingPush {
  PushTicket ticket = 0;
  uint64_t step = 0;
  uint64_t base_step = 0;  // PushRequest.base_step
  bool pull_back = false;
  PushStats* stats = nullptr;
  TensorMap* weights = nullptr;
  // An error found before anything was sent.
  absl::Status prepared;
  std::unique_ptr<CallTensors> tensors;
  std::vector<std::vector<client::PlannedChunk>> plan;
  std::vector<uint32_t> touched;
  // Per shard: the round sent at the start; null where none was (the shard
  // owns nothing of it, or its stream had ended behind unfinished pushes).
  std::vector<std::shared_ptr<PendingRound>> rounds;
  // Cancel() was called; atomic because it comes from any thread.
  std::atomic<bool> cancelled{false};
  // The rounds in flight, for Cancel() (rounds above are the finisher's).
  absl::Mutex in_flight_mu;
  std::vector<std::shared_ptr<PendingRound>> in_flight ABSL_GUARDED_BY(in_flight_mu);
};

namespace {

// What an attempt of a cancelled push returns: not a code ShardSession::Call
// retries or re-joins on.
absl::Status GaveUp() { return absl::AbortedError("cancelled by the caller"); }

}  // namespace

uint64_t PsClient::NextStep() { return last_step_.fetch_add(1, std::memory_order_relaxed) + 1; }

absl::Status PsClient::Push(const TensorMap& gradients, PushStats* stats, uint64_t step,
                            uint64_t base_step) {
  return Wait(StartPush(gradients, nullptr, stats, step, base_step));
}

absl::Status PsClient::PushPull(const TensorMap& gradients, TensorMap* weights, PushStats* stats,
                                uint64_t step, uint64_t base_step) {
  if (weights == nullptr) return absl::InvalidArgumentError("PushPull: weights is null");
  return Wait(StartPush(gradients, weights, stats, step, base_step));
}

PushTicket PsClient::PushAsync(const TensorMap& gradients, PushStats* stats, uint64_t step,
                               uint64_t base_step) {
  return StartPush(gradients, nullptr, stats, step, base_step);
}

PushTicket PsClient::PushPullAsync(const TensorMap& gradients, TensorMap* weights, PushStats* stats,
                                   uint64_t step, uint64_t base_step) {
  auto push = std::make_shared<PendingPush>();
  if (weights == nullptr) {
    // Still a ticket, so that the caller's Wait reports the error.
    absl::MutexLock lock(&push_mu_);
    push->ticket = ++last_ticket_;
    push->prepared = absl::InvalidArgumentError("PushPullAsync: weights is null");
    unfinished_.push_back(push);
    return push->ticket;
  }
  return StartPush(gradients, weights, stats, step, base_step);
}

PushTicket PsClient::StartPush(const TensorMap& gradients, TensorMap* weights, PushStats* stats,
                               uint64_t step, uint64_t base_step) {
  auto push = std::make_shared<PendingPush>();
  push->pull_back = weights != nullptr;
  push->weights = weights;
  push->stats = stats;
  absl::MutexLock lock(&push_mu_);
  push->ticket = ++last_ticket_;
  if (step == 0) {
    step = NextStep();
  } else {
    // Later NextStep() calls stay above a step the caller chose itself.
    uint64_t last = last_step_.load(std::memory_order_relaxed);
    while (last < step && !last_step_.compare_exchange_weak(last, step)) {
    }
  }
  push->step = step;
  push->base_step = base_step;
  if (stats != nullptr) {
    *stats = PushStats();
    stats->step = step;
  }
  push->prepared = SendPush(gradients, push.get());
  unfinished_.push_back(push);
  return push->ticket;
}

absl::Status PsClient::SendPush(const TensorMap& gradients, PendingPush* push) {
  if (!is_worker()) {
    return absl::FailedPreconditionError("an evaluator (no worker_name) cannot push");
  }
  std::vector<TensorLayout> layouts;
  std::vector<const float*> sources;
  RETURN_IF_ERROR(PrepareGradients(gradients, &layouts, &sources));
  push->tensors = std::make_unique<CallTensors>(std::move(layouts));
  CallTensors& tensors = *push->tensors;
  tensors.wire_dtype = options_.wire_dtype;
  tensors.sources = std::move(sources);
  push->plan = client::PlanChunks(tensors.layouts, shard_count());
  if (push->weights != nullptr) {
    for (size_t t = 0; t < tensors.layouts.size(); ++t) {
      std::vector<float>& values = (*push->weights)[tensors.layouts[t].name];
      values.resize(tensors.layouts[t].num_elements);
      tensors.destinations[t] = values.data();
    }
  }
  push->touched = client::ShardsWithChunks(push->plan);
  push->rounds.resize(shard_count());
  // Behind unfinished pushes a broken stream is not replaced here: the
  // round then fails and is sent again when this push is finished, after
  // theirs.
  const bool reopen = unfinished_.empty();
  if (!options_.push_stream) return absl::OkStatus();  // sent by FinishPush
  for (uint32_t s : push->touched) {
    ShardSession& shard = *shards_[s];
    const client::WorkerCredentials worker = shard.credentials();
    if (worker.worker_id == 0) continue;  // FinishPush reports it
    std::shared_ptr<client::RoundStream> stream = shard.Exchange(reopen);
    if (stream == nullptr) continue;
    push->rounds[s] =
        stream->Start(worker, push->step, tensors, push->plan[s], push->pull_back, push->base_step);
  }
  return absl::OkStatus();
}

absl::Status PsClient::Cancel(PushTicket ticket) {
  std::shared_ptr<PendingPush> push;
  {
    absl::MutexLock lock(&push_mu_);
    for (const std::shared_ptr<PendingPush>& p : unfinished_) {
      if (p->ticket == ticket) push = p;
    }
  }
  if (push == nullptr) {
    return absl::NotFoundError(absl::StrCat("push ticket ", ticket, " is not outstanding"));
  }
  push->cancelled.store(true);
  std::vector<std::shared_ptr<PendingRound>> rounds;
  {
    absl::MutexLock lock(&push->in_flight_mu);
    rounds = push->in_flight;
  }
  for (const std::shared_ptr<PendingRound>& round : rounds) round->Cancel();
  return absl::OkStatus();
}

absl::Status PsClient::Wait(PushTicket ticket) {
  absl::MutexLock finish_lock(&finish_mu_);
  for (;;) {
    if (auto it = finished_.find(ticket); it != finished_.end()) {
      absl::Status status = std::move(it->second);
      finished_.erase(it);
      return status;
    }
    std::shared_ptr<PendingPush> push;
    {
      absl::MutexLock lock(&push_mu_);
      if (unfinished_.empty() || unfinished_.front()->ticket > ticket) break;
      push = unfinished_.front();
    }
    // Stays first in unfinished_ while it is finished, so a push started
    // meanwhile does not open a new stream ahead of its retries.
    absl::Status status = FinishPush(push.get());
    {
      absl::MutexLock lock(&push_mu_);
      unfinished_.pop_front();
    }
    finished_.emplace(push->ticket, std::move(status));
  }
  return absl::NotFoundError(
      absl::StrCat("push ticket ", ticket, " was never issued or was already waited for"));
}

absl::Status PsClient::FinishPush(PendingPush* push) {
  if (!push->prepared.ok()) return push->prepared;
  std::vector<ShardReply> replies(shard_count());
  std::vector<absl::Status> results;
  results.reserve(push->touched.size());
  for (uint32_t s : push->touched) {
    ShardSession& shard = *shards_[s];
    absl::Status result = shard.Call(CallKind::kPush, [&](const client::WorkerCredentials& worker) {
      std::shared_ptr<PendingRound> round = std::move(push->rounds[s]);
      if (!options_.push_stream) {
        if (push->cancelled.load()) return GaveUp();
        return client::PushChunks(shard, worker, push->step, push->base_step, *push->tensors,
                                  push->plan[s], push->pull_back, &replies[s]);
      }
      if (push->cancelled.load()) {
        if (round != nullptr) {
          round->Cancel();
          round->Wait(options_.rpc_timeout, nullptr).IgnoreError();
        }
        return GaveUp();
      }
      if (round == nullptr) {
        round = shard.Exchange()->Start(worker, push->step, *push->tensors, push->plan[s],
                                        push->pull_back, push->base_step);
      }
      {
        absl::MutexLock lock(&push->in_flight_mu);
        push->in_flight.push_back(round);
      }
      // Cancel() may have run before the round was listed.
      if (push->cancelled.load()) round->Cancel();
      absl::Status status = round->Wait(options_.rpc_timeout, &replies[s]);
      {
        absl::MutexLock lock(&push->in_flight_mu);
        push->in_flight.clear();
      }
      return push->cancelled.load() && !status.ok() ? GaveUp() : status;
    });
    if (push->cancelled.load() && !result.ok()) {
      result = absl::CancelledError(
          absl::StrCat(shards_[s]->label(), ": push of step ", push->step,
                       " cancelled by the caller; the shard may or may not have applied it"));
    }
    results.push_back(std::move(result));
  }
  // A round whose call gave up before waiting for it (e.g. the client was no
  // longer joined) still writes into the caller's buffers until it ends.
  for (const std::shared_ptr<PendingRound>& round : push->rounds) {
    if (round != nullptr) round->Wait(options_.rpc_timeout, nullptr).IgnoreError();
  }
  // A re-joined shard matters most: the caller must pull before pushing again.
  for (const absl::Status& status : results) {
    if (absl::IsFailedPrecondition(status)) return status;
  }
  for (const absl::Status& status : results) RETURN_IF_ERROR(status);
  if (PushStats* stats = push->stats; stats != nullptr) {
    stats->versions.assign(shard_count(), 0);
    uint64_t sum = 0;
    for (uint32_t s : push->touched) {
      stats->versions[s] = replies[s].version;
      stats->max_staleness = std::max(stats->max_staleness, replies[s].staleness);
      sum += replies[s].staleness;
      stats->send_time = std::max(stats->send_time, replies[s].send_time);
      stats->wait_time = std::max(stats->wait_time, replies[s].wait_time);
      stats->receive_time = std::max(stats->receive_time, replies[s].receive_time);
    }
    stats->shards_touched = static_cast<uint32_t>(push->touched.size());
    stats->mean_staleness =
        push->touched.empty() ? 0.0 : static_cast<double>(sum) / push->touched.size();
  }
  return absl::OkStatus();
}

}  // namespace dcasgd
