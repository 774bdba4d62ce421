#include "client/ps_client.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "base/backoff.h"
#include "base/status_macros.h"
#include "client/channel_args.h"
#include "client/rpc_convert.h"
#include "core/placement.h"
#include "dcasgd/v1/ps.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "wire/status.h"

namespace dcasgd {

using client::ChunkRef;
using client::TensorLayout;

struct PsClient::Shard {
  // Constant after construction.
  uint32_t index = 0;
  std::string label;  // "shard 1 (host:port)", prefixed to every error
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::ParameterShard::Stub> stub;

  // Serialises Join, re-Join and Leave of this shard. Held across the RPC so
  // that concurrent failures re-join once; never taken while holding `mu`.
  absl::Mutex join_mu;

  mutable absl::Mutex mu;
  uint64_t worker_id ABSL_GUARDED_BY(mu) = 0;  // 0: not joined
  uint64_t lease_ms ABSL_GUARDED_BY(mu) = 0;
  bool left ABSL_GUARDED_BY(mu) = false;  // Leave() was called: never re-join
  // Version of this client's last pull (or PushPull) on this shard.
  bool has_pull_version ABSL_GUARDED_BY(mu) = false;
  uint64_t pull_version ABSL_GUARDED_BY(mu) = 0;

  uint64_t current_worker_id() const {
    absl::MutexLock lock(&mu);
    return worker_id;
  }
  void RecordPull(uint64_t version) {
    absl::MutexLock lock(&mu);
    has_pull_version = true;
    pull_version = version;
  }
};

struct PsClient::ShardCallResult {
  uint64_t version = 0;
  uint64_t staleness = 0;
  absl::Duration send_time, wait_time, receive_time;
};

namespace {

void SetDeadline(grpc::ClientContext* context, absl::Duration timeout) {
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

// Checks the chunks one shard streams back against what was asked of it and
// copies their values into the destination tensors. One per stream attempt.
class ChunkReceiver {
 public:
  // `expected` are the chunks this shard must send, `destinations[t]` the
  // buffer of layouts[t] (num_elements floats).
  ChunkReceiver(const std::vector<TensorLayout>& layouts,
                const absl::flat_hash_map<absl::string_view, size_t>& tensor_index,
                const std::vector<ChunkRef>& expected, const std::vector<float*>& destinations,
                absl::string_view shard_label)
      : layouts_(layouts),
        tensor_index_(tensor_index),
        destinations_(destinations),
        shard_label_(shard_label),
        expected_count_(expected.size()),
        wanted_(layouts.size()) {
    for (size_t t = 0; t < layouts.size(); ++t) wanted_[t].assign(layouts[t].num_chunks(), 0);
    for (const ChunkRef& c : expected) wanted_[c.tensor][c.index] = 1;
  }

  // Copies one received chunk. INTERNAL when the shard sent a chunk that was
  // not asked for, twice, or with the wrong length.
  absl::Status Accept(const v1::PullResponse& response) {
    const v1::Chunk& chunk = response.chunk();
    auto it = tensor_index_.find(chunk.tensor());
    if (it == tensor_index_.end()) {
      return Error(absl::StrCat("sent unrequested tensor '", chunk.tensor(), "'"));
    }
    const size_t t = it->second;
    const TensorLayout& layout = layouts_[t];
    const uint64_t index = chunk.chunk_index();
    if (index >= wanted_[t].size() || wanted_[t][index] != 1) {
      return Error(
          absl::StrCat("sent unrequested or duplicate chunk ", index, " of '", layout.name, "'"));
    }
    const uint64_t length = layout.chunk_length(index);
    if (chunk.values().size() != length * sizeof(float)) {
      return Error(absl::StrCat("sent ", chunk.values().size(), " bytes for chunk ", index, " of '",
                                layout.name, "'; expected ", length * sizeof(float)));
    }
    std::memcpy(destinations_[t] + index * layout.chunk_elements, chunk.values().data(),
                chunk.values().size());
    wanted_[t][index] = 2;
    ++received_;
    version_ = std::max<uint64_t>(version_, response.version());
    staleness_ = std::max<uint64_t>(staleness_, response.staleness());
    return absl::OkStatus();
  }

  // INTERNAL unless every expected chunk arrived.
  absl::Status Finish() const {
    if (received_ == expected_count_) return absl::OkStatus();
    return Error(absl::StrCat("sent ", received_, " of ", expected_count_, " chunks"));
  }

  uint64_t version() const { return version_; }
  // PushPull replies: the staleness the shard observed for the push.
  uint64_t staleness() const { return staleness_; }

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InternalError(absl::StrCat(shard_label_, ": ", what));
  }

  const std::vector<TensorLayout>& layouts_;
  const absl::flat_hash_map<absl::string_view, size_t>& tensor_index_;
  const std::vector<float*>& destinations_;
  const absl::string_view shard_label_;
  const size_t expected_count_;
  // Per tensor and chunk: 0 not asked, 1 expected, 2 received.
  std::vector<std::vector<uint8_t>> wanted_;
  size_t received_ = 0;
  uint64_t version_ = 0;
  uint64_t staleness_ = 0;
};

// Reads a response stream to its end into `receiver`, then finishes it. A
// bad chunk cancels the stream and is the result.
template <typename Stream>
absl::Status ReceiveAndFinish(Stream* stream, grpc::ClientContext* context, ChunkReceiver* receiver,
                              absl::string_view label, absl::Time* first_read = nullptr) {
  v1::PullResponse response;
  absl::Status accepted;
  while (stream->Read(&response)) {
    if (first_read != nullptr && *first_read == absl::InfinitePast()) *first_read = absl::Now();
    accepted = receiver->Accept(response);
    if (!accepted.ok()) {
      context->TryCancel();
      break;
    }
  }
  const grpc::Status finished = stream->Finish();
  RETURN_IF_ERROR(accepted);
  RETURN_IF_ERROR(FromGrpcStatus(finished, label));
  return receiver->Finish();
}

// Streams `chunks` (their values taken from `sources`) as PushRequests; the
// worker id and the chunk count go in the first message only (the shard
// applies the push only when exactly that many chunks arrive and the stream
// is half-closed). False when the stream broke.
template <typename Stream>
bool WriteGradients(Stream* stream, uint64_t worker_id, uint64_t step,
                    const std::vector<TensorLayout>& layouts,
                    const std::vector<const float*>& sources, const std::vector<ChunkRef>& chunks) {
  v1::PushRequest request;
  request.set_worker_id(worker_id);
  request.set_chunk_count(static_cast<uint32_t>(chunks.size()));
  request.set_step(step);
  v1::Chunk* gradient = request.mutable_gradient();
  for (const ChunkRef& c : chunks) {
    gradient->set_tensor(layouts[c.tensor].name);
    gradient->set_chunk_index(c.index);
    // assign() reuses the buffer of the previous chunk.
    gradient->mutable_values()->assign(reinterpret_cast<const char*>(sources[c.tensor] + c.offset),
                                       c.length * sizeof(float));
    if (!stream->Write(request)) return false;
    request.set_worker_id(0);
    request.set_chunk_count(0);
    request.set_step(0);
  }
  return true;
}

absl::flat_hash_map<absl::string_view, size_t> IndexByName(
    const std::vector<TensorLayout>& layouts) {
  absl::flat_hash_map<absl::string_view, size_t> index;
  for (size_t t = 0; t < layouts.size(); ++t) index.emplace(layouts[t].name, t);
  return index;
}

std::vector<uint32_t> ShardsWithChunks(const std::vector<std::vector<ChunkRef>>& plan) {
  std::vector<uint32_t> shards;
  for (uint32_t s = 0; s < plan.size(); ++s) {
    if (!plan[s].empty()) shards.push_back(s);
  }
  return shards;
}

bool SameLayout(const TensorLayout& a, const TensorLayout& b) {
  return a.name == b.name && a.num_elements == b.num_elements &&
         a.chunk_elements == b.chunk_elements;
}

}  // namespace

PsClient::PsClient(ClientOptions options) : options_(std::move(options)) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options_.max_message_bytes);
  args.SetMaxSendMessageSize(options_.max_message_bytes);
  // Each client gets its own connections, so that several clients in one
  // process (e.g. benchmark workers) do not share one TCP stream.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  client::SetResilienceArgs(&args);
  for (uint32_t i = 0; i < options_.shard_addresses.size(); ++i) {
    auto shard = std::make_unique<Shard>();
    shard->index = i;
    shard->label = absl::StrCat("shard ", i, " (", options_.shard_addresses[i], ")");
    shard->channel = grpc::CreateCustomChannel(options_.shard_addresses[i],
                                               grpc::InsecureChannelCredentials(), args);
    shard->stub = v1::ParameterShard::NewStub(shard->channel);
    shards_.push_back(std::move(shard));
  }
}

absl::StatusOr<std::unique_ptr<PsClient>> PsClient::Connect(ClientOptions options) {
  if (options.shard_addresses.empty()) {
    return absl::InvalidArgumentError("ClientOptions.shard_addresses is empty");
  }
  for (const std::string& address : options.shard_addresses) {
    if (address.empty()) return absl::InvalidArgumentError("empty shard address");
  }
  if (options.max_attempts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("ClientOptions.max_attempts must be >= 1, got ", options.max_attempts));
  }
  if (options.rpc_timeout <= absl::ZeroDuration() ||
      options.initial_backoff < absl::ZeroDuration() ||
      options.max_backoff < options.initial_backoff) {
    return absl::InvalidArgumentError(
        "ClientOptions: need rpc_timeout > 0 and 0 <= initial_backoff <= max_backoff");
  }
  if (options.max_message_bytes < (1 << 20)) {
    return absl::InvalidArgumentError("ClientOptions.max_message_bytes must be >= 1 MiB");
  }
  std::unique_ptr<PsClient> ps(new PsClient(std::move(options)));
  if (ps->is_worker()) {
    RETURN_IF_ERROR(ps->ForEachShard(ps->AllShards(),
                                     [&](uint32_t s) { return ps->JoinShard(*ps->shards_[s]); }));
    if (ps->options_.heartbeats) {
      absl::MutexLock lock(&ps->lifecycle_mu_);
      ps->heartbeat_thread_ = std::thread([p = ps.get()] { p->HeartbeatLoop(); });
    }
  }
  return ps;
}

PsClient::~PsClient() {
  StopHeartbeats();
  LeaveShards(/*max_attempts=*/1).IgnoreError();
}

uint64_t PsClient::worker_id(uint32_t shard) const {
  return shards_.at(shard)->current_worker_id();
}

std::vector<uint32_t> PsClient::AllShards() const {
  std::vector<uint32_t> all(shards_.size());
  for (uint32_t s = 0; s < all.size(); ++s) all[s] = s;
  return all;
}

template <typename Fn>
absl::Status PsClient::ForEachShard(const std::vector<uint32_t>& shards, Fn fn) {
  std::vector<absl::Status> results(shards.size());
  if (!shards.empty()) {
    // The calling thread takes the last shard itself: one thread fewer to
    // start per call (it matters for small models, where a call is ~1 ms).
    std::vector<std::thread> threads;
    threads.reserve(shards.size() - 1);
    for (size_t i = 0; i + 1 < shards.size(); ++i) {
      threads.emplace_back([&, i] { results[i] = fn(shards[i]); });
    }
    results.back() = fn(shards.back());
    for (std::thread& thread : threads) thread.join();
  }
  // A re-joined shard matters most: the caller must pull before pushing again.
  for (const absl::Status& status : results) {
    if (absl::IsFailedPrecondition(status)) return status;
  }
  for (const absl::Status& status : results) {
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

template <typename Attempt>
absl::Status PsClient::CallShard(Shard& shard, CallKind kind, Attempt attempt) {
  Backoff backoff({options_.initial_backoff, options_.max_backoff, 2.0, 0.2});
  bool retried_after_rejoin = false;
  for (int n = 1;; ++n) {
    const uint64_t worker_id = shard.current_worker_id();
    if (kind == CallKind::kPush && worker_id == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(shard.label, ": this client is not joined (evaluator, or after Leave)"));
    }
    absl::Status status = attempt(worker_id);
    if (status.ok()) return status;
    if (IsTransient(status) && n < options_.max_attempts) {
      WaitBeforeRetry(shard, backoff.Next());
      continue;
    }
    if (absl::IsFailedPrecondition(status) && kind != CallKind::kRead && worker_id != 0) {
      const absl::Status rejoined = Rejoin(shard, worker_id);
      if (!rejoined.ok()) {
        return absl::Status(
            rejoined.code(),
            absl::StrCat(status.message(), "; re-join failed: ", rejoined.message()));
      }
      // A pull is what the caller would do next anyway.
      if (kind == CallKind::kPull && !retried_after_rejoin) {
        retried_after_rejoin = true;
        continue;
      }
      return absl::FailedPreconditionError(
          absl::StrCat(status.message(), "; re-joined; pull again"));
    }
    return status;
  }
}

void PsClient::WaitBeforeRetry(Shard& shard, absl::Duration delay) {
  if (shard.channel->GetState(/*try_to_connect=*/false) == GRPC_CHANNEL_READY) {
    // Connected: the shard itself answered (e.g. shutting down); back off.
    absl::SleepFor(delay);
    return;
  }
  // Not connected (the shard is down or restarting): retry as soon as the
  // channel reconnects, not a whole backoff later.
  shard.channel->WaitForConnected(absl::ToChronoTime(absl::Now() + delay));
}

absl::Status PsClient::JoinShard(Shard& shard) {
  v1::JoinRequest request;
  request.set_worker_name(options_.worker_name);
  v1::JoinResponse response;
  RETURN_IF_ERROR(CallShard(shard, CallKind::kRead, [&](uint64_t) {
    grpc::ClientContext context;
    SetDeadline(&context, options_.rpc_timeout);
    return FromGrpcStatus(shard.stub->Join(&context, request, &response), shard.label);
  }));
  if (response.shard_index() != shard.index || response.shard_count() != shards_.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        shard.label, " says it is shard ", response.shard_index(), " of ", response.shard_count(),
        "; the client lists it as shard ", shard.index, " of ", shards_.size()));
  }
  if (response.worker_id() == 0) {
    return absl::InternalError(absl::StrCat(shard.label, ": Join returned worker id 0"));
  }
  absl::MutexLock lock(&shard.mu);
  shard.worker_id = response.worker_id();
  shard.lease_ms = response.lease_ms();
  shard.has_pull_version = false;
  return absl::OkStatus();
}

absl::Status PsClient::Rejoin(Shard& shard, uint64_t failed_worker_id) {
  absl::MutexLock join_lock(&shard.join_mu);
  {
    absl::MutexLock lock(&shard.mu);
    if (shard.left) {
      return absl::FailedPreconditionError(absl::StrCat(shard.label, ": left; not re-joining"));
    }
    if (shard.worker_id != failed_worker_id) return absl::OkStatus();  // done by another call
  }
  return JoinShard(shard);
}

void PsClient::HeartbeatLoop() {
  for (;;) {
    uint64_t lease_ms = 0;
    for (const auto& shard : shards_) {
      absl::MutexLock lock(&shard->mu);
      if (shard->lease_ms > 0 && (lease_ms == 0 || shard->lease_ms < lease_ms)) {
        lease_ms = shard->lease_ms;
      }
    }
    const absl::Duration interval =
        lease_ms == 0 ? absl::Seconds(1)
                      : std::max(absl::Milliseconds(10), absl::Milliseconds(lease_ms) / 3);
    {
      absl::MutexLock lock(&heartbeat_mu_);
      if (heartbeat_mu_.AwaitWithTimeout(absl::Condition(&stop_heartbeats_), interval)) return;
    }
    for (const auto& shard : shards_) {
      const uint64_t worker_id = shard->current_worker_id();
      if (worker_id == 0) continue;
      v1::HeartbeatRequest request;
      request.set_worker_id(worker_id);
      v1::HeartbeatResponse response;
      grpc::ClientContext context;
      // A hung shard must not delay the other shards' beats past their lease.
      SetDeadline(&context, interval);
      const grpc::Status status = shard->stub->Heartbeat(&context, request, &response);
      if (status.ok()) {
        absl::MutexLock lock(&shard->mu);
        if (response.lease_ms() > 0) shard->lease_ms = response.lease_ms();
      } else if (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
        // The lease is gone, and with it the backup: the next push fails and
        // re-joins anyway, but re-joining now keeps membership accurate.
        Rejoin(*shard, worker_id).IgnoreError();
      }
      // Other errors: try again at the next beat.
    }
  }
}

void PsClient::StopHeartbeats() {
  absl::MutexLock lifecycle_lock(&lifecycle_mu_);
  if (!heartbeat_thread_.joinable()) return;
  {
    absl::MutexLock lock(&heartbeat_mu_);
    stop_heartbeats_ = true;
  }
  heartbeat_thread_.join();
}

absl::Status PsClient::LeaveShards(int max_attempts) {
  return ForEachShard(AllShards(), [&](uint32_t s) -> absl::Status {
    Shard& shard = *shards_[s];
    absl::MutexLock join_lock(&shard.join_mu);
    uint64_t worker_id;
    {
      absl::MutexLock lock(&shard.mu);
      shard.left = true;
      worker_id = shard.worker_id;
      shard.worker_id = 0;
    }
    if (worker_id == 0) return absl::OkStatus();
    v1::LeaveRequest request;
    request.set_worker_id(worker_id);
    Backoff backoff({options_.initial_backoff, options_.max_backoff, 2.0, 0.2});
    for (int n = 1;; ++n) {
      v1::LeaveResponse response;
      grpc::ClientContext context;
      SetDeadline(&context, options_.rpc_timeout);
      const absl::Status status =
          FromGrpcStatus(shard.stub->Leave(&context, request, &response), shard.label);
      // Unknown or expired (e.g. the shard restarted meanwhile): the lease is
      // gone already, which is what Leave wants.
      if (absl::IsFailedPrecondition(status)) return absl::OkStatus();
      if (!absl::IsUnavailable(status) || n >= max_attempts) return status;
      absl::SleepFor(backoff.Next());
    }
  });
}

absl::Status PsClient::Leave() {
  StopHeartbeats();
  return LeaveShards(options_.max_attempts);
}

absl::Status PsClient::RememberLayouts(const std::vector<TensorLayout>& layouts) {
  absl::MutexLock lock(&layouts_mu_);
  for (const TensorLayout& layout : layouts) layouts_[layout.name] = layout;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<TensorLayout>> PsClient::Layouts(
    const std::vector<std::string>& names) const {
  absl::MutexLock lock(&layouts_mu_);
  std::vector<TensorLayout> result;
  if (names.empty()) {
    for (const auto& [name, layout] : layouts_) result.push_back(layout);
    std::sort(result.begin(), result.end(),
              [](const TensorLayout& a, const TensorLayout& b) { return a.name < b.name; });
    return result;
  }
  absl::flat_hash_set<absl::string_view> seen;
  for (const std::string& name : names) {
    if (!seen.insert(name).second) continue;
    auto it = layouts_.find(name);
    if (it == layouts_.end()) {
      return absl::NotFoundError(
          absl::StrCat("unknown tensor '", name, "': Declare it (or FetchSpecs) first"));
    }
    result.push_back(it->second);
  }
  return result;
}

absl::Status PsClient::Declare(const std::vector<TensorSpec>& specs) {
  v1::DeclareTensorsRequest request;
  for (const TensorSpec& spec : specs) {
    RETURN_IF_ERROR(ValidateTensorSpec(spec));
    client::SpecToProto(spec, request.add_tensors());
  }
  std::vector<std::vector<TensorLayout>> declared(shards_.size());
  const absl::Status declared_everywhere =
      ForEachShard(AllShards(), [&](uint32_t s) -> absl::Status {
        Shard& shard = *shards_[s];
        v1::DeclareTensorsResponse response;
        RETURN_IF_ERROR(CallShard(shard, CallKind::kRead, [&](uint64_t) {
          grpc::ClientContext context;
          SetDeadline(&context, options_.rpc_timeout);
          return FromGrpcStatus(shard.stub->DeclareTensors(&context, request, &response),
                                shard.label);
        }));
        for (const v1::TensorSpec& spec : response.tensors()) {
          ASSIGN_OR_RETURN(TensorLayout layout, client::LayoutFromProto(spec));
          declared[s].push_back(std::move(layout));
        }
        return absl::OkStatus();
      });
  RETURN_IF_ERROR(declared_everywhere);
  for (size_t s = 1; s < declared.size(); ++s) {
    bool same = declared[s].size() == declared[0].size();
    for (size_t t = 0; same && t < declared[s].size(); ++t) {
      same = SameLayout(declared[s][t], declared[0][t]);
    }
    if (!same) {
      return absl::InternalError(absl::StrCat(shards_[s]->label, " and ", shards_[0]->label,
                                              " registered different layouts"));
    }
  }
  return RememberLayouts(declared[0]);
}

absl::Status PsClient::FetchSpecs() {
  ASSIGN_OR_RETURN(std::vector<v1::ShardStatus> statuses, GetStatus());
  absl::flat_hash_map<std::string, TensorLayout> merged;
  for (size_t s = 0; s < statuses.size(); ++s) {
    for (const v1::TensorStatus& tensor : statuses[s].tensors()) {
      ASSIGN_OR_RETURN(TensorLayout layout, client::LayoutFromProto(tensor.spec()));
      auto [it, inserted] = merged.emplace(layout.name, layout);
      if (!inserted && !SameLayout(it->second, layout)) {
        return absl::InternalError(absl::StrCat("shards disagree about the layout of tensor '",
                                                layout.name, "' (", shards_[s]->label, ")"));
      }
    }
  }
  std::vector<TensorLayout> layouts;
  for (auto& [name, layout] : merged) layouts.push_back(std::move(layout));
  return RememberLayouts(layouts);
}

absl::Status PsClient::Pull(const std::vector<std::string>& names, TensorMap* out) {
  absl::StatusOr<std::vector<TensorLayout>> found = Layouts(names);
  bool empty;
  {
    absl::MutexLock lock(&layouts_mu_);
    empty = layouts_.empty();
  }
  if (absl::IsNotFound(found.status()) || (names.empty() && empty)) {
    RETURN_IF_ERROR(FetchSpecs());
    found = Layouts(names);
  }
  RETURN_IF_ERROR(found.status());
  const std::vector<TensorLayout>& layouts = *found;
  const auto plan = client::PlanChunks(layouts, shard_count());
  const auto tensor_index = IndexByName(layouts);
  std::vector<float*> destinations(layouts.size());
  for (size_t t = 0; t < layouts.size(); ++t) {
    std::vector<float>& values = (*out)[layouts[t].name];
    values.resize(layouts[t].num_elements);
    destinations[t] = values.data();
  }
  return ForEachShard(ShardsWithChunks(plan), [&](uint32_t s) {
    Shard& shard = *shards_[s];
    v1::PullRequest request;
    // Only the tensors this shard has chunks of.
    std::vector<bool> listed(layouts.size(), false);
    for (const ChunkRef& c : plan[s]) {
      if (!listed[c.tensor]) request.add_tensors(layouts[c.tensor].name);
      listed[c.tensor] = true;
    }
    return CallShard(shard, CallKind::kPull, [&](uint64_t worker_id) -> absl::Status {
      request.set_worker_id(worker_id);
      grpc::ClientContext context;
      SetDeadline(&context, options_.rpc_timeout);
      ChunkReceiver receiver(layouts, tensor_index, plan[s], destinations, shard.label);
      auto stream = shard.stub->Pull(&context, request);
      RETURN_IF_ERROR(ReceiveAndFinish(stream.get(), &context, &receiver, shard.label));
      if (worker_id != 0) shard.RecordPull(receiver.version());
      return absl::OkStatus();
    });
  });
}

absl::Status PsClient::PrepareGradients(const TensorMap& gradients,
                                        std::vector<TensorLayout>* layouts,
                                        std::vector<const float*>* sources) const {
  absl::MutexLock lock(&layouts_mu_);
  for (const auto& [name, values] : gradients) {
    auto it = layouts_.find(name);
    if (it == layouts_.end()) {
      return absl::NotFoundError(
          absl::StrCat("gradient for unknown tensor '", name, "': Declare it first"));
    }
    if (values.size() != it->second.num_elements) {
      return absl::InvalidArgumentError(absl::StrCat("gradient for tensor '", name, "' has ",
                                                     values.size(), " elements; expected ",
                                                     it->second.num_elements));
    }
    layouts->push_back(it->second);
    sources->push_back(values.data());
  }
  return absl::OkStatus();
}

uint64_t PsClient::NextStep() { return last_step_.fetch_add(1, std::memory_order_relaxed) + 1; }

absl::Status PsClient::Push(const TensorMap& gradients, PushStats* stats, uint64_t step) {
  return DoPush(gradients, nullptr, stats, step);
}

absl::Status PsClient::PushPull(const TensorMap& gradients, TensorMap* weights, PushStats* stats,
                                uint64_t step) {
  if (weights == nullptr) return absl::InvalidArgumentError("PushPull: weights is null");
  return DoPush(gradients, weights, stats, step);
}

absl::Status PsClient::DoPush(const TensorMap& gradients, TensorMap* weights, PushStats* stats,
                              uint64_t step) {
  if (!is_worker()) {
    return absl::FailedPreconditionError("an evaluator (no worker_name) cannot push");
  }
  absl::MutexLock push_lock(&push_mu_);
  if (step == 0) {
    step = NextStep();
  } else {
    // Later NextStep() calls stay above a step the caller chose itself.
    uint64_t last = last_step_.load(std::memory_order_relaxed);
    while (last < step && !last_step_.compare_exchange_weak(last, step)) {
    }
  }
  if (stats != nullptr) {
    *stats = PushStats();
    stats->step = step;
  }
  std::vector<TensorLayout> layouts;
  std::vector<const float*> sources;
  RETURN_IF_ERROR(PrepareGradients(gradients, &layouts, &sources));
  const auto plan = client::PlanChunks(layouts, shard_count());
  const auto tensor_index = IndexByName(layouts);
  std::vector<float*> destinations(layouts.size(), nullptr);
  if (weights != nullptr) {
    for (size_t t = 0; t < layouts.size(); ++t) {
      std::vector<float>& values = (*weights)[layouts[t].name];
      values.resize(layouts[t].num_elements);
      destinations[t] = values.data();
    }
  }
  const std::vector<uint32_t> touched = ShardsWithChunks(plan);
  std::vector<ShardCallResult> results(shard_count());
  const absl::Status pushed = ForEachShard(touched, [&](uint32_t s) {
    Shard& shard = *shards_[s];
    return CallShard(shard, CallKind::kPush, [&](uint64_t worker_id) -> absl::Status {
      grpc::ClientContext context;
      SetDeadline(&context, options_.rpc_timeout);
      if (weights == nullptr) {
        v1::PushResponse response;
        const absl::Time start = absl::Now();
        auto stream = shard.stub->Push(&context, &response);
        if (WriteGradients(stream.get(), worker_id, step, layouts, sources, plan[s])) {
          stream->WritesDone();
        }
        const absl::Time sent = absl::Now();
        RETURN_IF_ERROR(FromGrpcStatus(stream->Finish(), shard.label));
        results[s].version = response.version();
        results[s].staleness = response.staleness();
        results[s].send_time = sent - start;
        results[s].wait_time = absl::Now() - sent;
        return absl::OkStatus();
      }
      ChunkReceiver receiver(layouts, tensor_index, plan[s], destinations, shard.label);
      const absl::Time start = absl::Now();
      auto stream = shard.stub->PushPull(&context);
      if (WriteGradients(stream.get(), worker_id, step, layouts, sources, plan[s])) {
        stream->WritesDone();
      }
      const absl::Time sent = absl::Now();
      absl::Time first_read = absl::InfinitePast();
      RETURN_IF_ERROR(
          ReceiveAndFinish(stream.get(), &context, &receiver, shard.label, &first_read));
      const absl::Time done = absl::Now();
      results[s].send_time = sent - start;
      results[s].wait_time = first_read - sent;
      results[s].receive_time = done - first_read;
      const uint64_t version = receiver.version();
      shard.RecordPull(version);
      results[s].version = version;
      results[s].staleness = receiver.staleness();
      return absl::OkStatus();
    });
  });
  RETURN_IF_ERROR(pushed);
  if (stats != nullptr) {
    stats->versions.assign(shard_count(), 0);
    uint64_t sum = 0;
    for (uint32_t s : touched) {
      stats->versions[s] = results[s].version;
      stats->max_staleness = std::max(stats->max_staleness, results[s].staleness);
      sum += results[s].staleness;
      stats->send_time = std::max(stats->send_time, results[s].send_time);
      stats->wait_time = std::max(stats->wait_time, results[s].wait_time);
      stats->receive_time = std::max(stats->receive_time, results[s].receive_time);
    }
    stats->shards_touched = static_cast<uint32_t>(touched.size());
    stats->mean_staleness = touched.empty() ? 0.0 : static_cast<double>(sum) / touched.size();
  }
  return absl::OkStatus();
}

template <typename Request, typename Response>
absl::StatusOr<std::vector<Response>> PsClient::UnaryOnEveryShard(grpc::Status (
    v1::ParameterShard::Stub::*rpc)(grpc::ClientContext*, const Request&, Response*)) {
  std::vector<Response> responses(shards_.size());
  RETURN_IF_ERROR(ForEachShard(AllShards(), [&](uint32_t s) {
    Shard& shard = *shards_[s];
    return CallShard(shard, CallKind::kRead, [&](uint64_t) {
      grpc::ClientContext context;
      SetDeadline(&context, options_.rpc_timeout);
      return FromGrpcStatus((shard.stub.get()->*rpc)(&context, Request(), &responses[s]),
                            shard.label);
    });
  }));
  return responses;
}

absl::StatusOr<std::vector<v1::ShardStatus>> PsClient::GetStatus() {
  return UnaryOnEveryShard(&v1::ParameterShard::Stub::GetStatus);
}

absl::StatusOr<std::vector<v1::CheckpointResponse>> PsClient::Checkpoint() {
  return UnaryOnEveryShard(&v1::ParameterShard::Stub::Checkpoint);
}

}  // namespace dcasgd
