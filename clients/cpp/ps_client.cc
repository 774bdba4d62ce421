#include "clients/cpp/ps_client.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "auth/tls.h"
#include "base/status_macros.h"
#include "clients/cpp/channel_args.h"
#include "clients/cpp/chunk_stream.h"
#include "clients/cpp/shard_session.h"
#include "dcasgd/v1/ps.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "wire/status.h"
#include "wire/tensor_spec.h"

namespace dcasgd {

using client::CallKind;
using client::CallTensors;
using client::PlannedChunk;
using client::ShardReply;
using client::ShardSession;

namespace {

bool SameLayout(const TensorLayout& a, const TensorLayout& b) {
  return a.name == b.name && a.num_elements == b.num_elements &&
         a.chunk_elements == b.chunk_elements;
}

absl::StatusOr<ShardStatus> FromProto(const v1::ShardStatus& proto) {
  ShardStatus status;
  status.shard_index = proto.shard_index();
  status.shard_count = proto.shard_count();
  status.version = proto.version();
  status.active_workers = proto.active_workers();
  status.weight_bytes = proto.weight_bytes();
  status.backup_bytes = proto.backup_bytes();
  status.optimizer_state_bytes = proto.optimizer_state_bytes();
  status.update_rule = proto.update_rule();
  status.rule = proto.rule();
  status.sync = proto.sync();
  status.checkpoint_version = proto.checkpoint_version();
  for (const v1::TensorStatus& tensor : proto.tensors()) {
    ASSIGN_OR_RETURN(TensorLayout layout, LayoutFromProto(tensor.spec()));
    status.tensors.push_back({std::move(layout), tensor.owned_chunks()});
  }
  return status;
}

CheckpointResult FromProto(const v1::CheckpointResponse& proto) {
  return {proto.path(), proto.version(), proto.bytes()};
}

}  // namespace

PsClient::PsClient(ClientOptions options) : options_(std::move(options)) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options_.max_message_bytes);
  args.SetMaxSendMessageSize(options_.max_message_bytes);
  // Each client gets its own connections, so that several clients in one
  // process (e.g. benchmark workers) do not share one TCP stream.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  client::CallPolicy policy{options_.rpc_timeout, options_.max_attempts, options_.initial_backoff,
                            options_.max_backoff};
  policy.failover_wait = options_.failover_wait;
  const uint32_t count = static_cast<uint32_t>(options_.shard_addresses.size());
  for (uint32_t i = 0; i < count; ++i) {
    std::vector<std::string> members = {options_.shard_addresses[i]};
    if (!options_.replica_addresses.empty() && !options_.replica_addresses[i].empty()) {
      members.push_back(options_.replica_addresses[i]);
    }
    grpc::ChannelArguments shard_args = args;
    client::SetResilienceArgs(&shard_args, /*pair=*/members.size() > 1);
    shards_.push_back(
        std::make_unique<ShardSession>(i, count, members, shard_args, options_.worker_name, policy,
                                       options_.credentials, options_.pipeline_depth));
  }
}

absl::StatusOr<std::unique_ptr<PsClient>> PsClient::Connect(ClientOptions options) {
  if (options.shard_addresses.empty()) {
    return absl::InvalidArgumentError("ClientOptions.shard_addresses is empty");
  }
  for (const std::string& address : options.shard_addresses) {
    if (address.empty()) return absl::InvalidArgumentError("empty shard address");
  }
  if (!options.replica_addresses.empty()) {
    if (options.replica_addresses.size() != options.shard_addresses.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ClientOptions.replica_addresses has ", options.replica_addresses.size(), " entries for ",
          options.shard_addresses.size(), " shards: give one per shard or none"));
    }
    for (size_t i = 0; i < options.replica_addresses.size(); ++i) {
      if (options.replica_addresses[i] == options.shard_addresses[i]) {
        return absl::InvalidArgumentError(absl::StrCat(
            "shard ", i, ": both members have the address ", options.shard_addresses[i]));
      }
    }
  }
  if (options.max_attempts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("ClientOptions.max_attempts must be >= 1, got ", options.max_attempts));
  }
  if (options.rpc_timeout <= absl::ZeroDuration() ||
      options.initial_backoff < absl::ZeroDuration() ||
      options.max_backoff < options.initial_backoff ||
      options.failover_wait < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "ClientOptions: need rpc_timeout > 0, 0 <= initial_backoff <= max_backoff and "
        "failover_wait >= 0");
  }
  if (options.max_message_bytes < (2 << 20)) {
    return absl::InvalidArgumentError(
        "ClientOptions.max_message_bytes must be >= 2 MiB (a shard's answer carries up to 1 MiB "
        "of weights per message)");
  }
  if (options.pipeline_depth > kMaxPipelineDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat("ClientOptions.pipeline_depth must be <= ", kMaxPipelineDepth, ", got ",
                     options.pipeline_depth));
  }
  std::unique_ptr<PsClient> ps(new PsClient(std::move(options)));
  if (ps->is_worker()) {
    RETURN_IF_ERROR(
        ps->ForEachShard(ps->AllShards(), [&](uint32_t s) { return ps->shards_[s]->Join(); }));
    if (ps->options_.heartbeats) {
      absl::MutexLock lock(&ps->lifecycle_mu_);
      ps->heartbeat_thread_ = std::thread([p = ps.get()] { p->HeartbeatLoop(); });
    }
  }
  return ps;
}

PsClient::~PsClient() {
  PushTicket last;
  {
    absl::MutexLock lock(&push_mu_);
    last = last_ticket_;
  }
  // Pushes still out write into their callers' buffers until answered.
  if (last > 0) Wait(last).IgnoreError();
  StopHeartbeats();
  LeaveShards(/*max_attempts=*/1).IgnoreError();
}

uint64_t PsClient::worker_id(uint32_t shard) const { return shards_.at(shard)->worker_id(); }

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

void PsClient::HeartbeatLoop() {
  for (;;) {
    // Every third of the shortest lease, so no lease lapses between beats.
    absl::Duration lease = absl::ZeroDuration();
    for (const auto& shard : shards_) {
      const absl::Duration l = shard->lease();
      if (l > absl::ZeroDuration() && (lease == absl::ZeroDuration() || l < lease)) lease = l;
    }
    const absl::Duration interval = lease == absl::ZeroDuration()
                                        ? absl::Seconds(1)
                                        : std::max(absl::Milliseconds(10), lease / 3);
    {
      absl::MutexLock lock(&heartbeat_mu_);
      if (heartbeat_mu_.AwaitWithTimeout(absl::Condition(&stop_heartbeats_), interval)) return;
    }
    for (const auto& shard : shards_) shard->Beat(/*timeout=*/interval);
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
  return ForEachShard(AllShards(), [&](uint32_t s) { return shards_[s]->Leave(max_attempts); });
}

absl::Status PsClient::Leave() {
  StopHeartbeats();
  return LeaveShards(options_.max_attempts);
}

void PsClient::RememberLayouts(const std::vector<TensorLayout>& layouts) {
  absl::MutexLock lock(&layouts_mu_);
  for (const TensorLayout& layout : layouts) layouts_[layout.name] = layout;
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
    TensorSpecToProto(spec, request.add_tensors());
  }
  std::vector<std::vector<TensorLayout>> declared(shards_.size());
  const absl::Status declared_everywhere =
      ForEachShard(AllShards(), [&](uint32_t s) -> absl::Status {
        ShardSession& shard = *shards_[s];
        v1::DeclareTensorsResponse response;
        RETURN_IF_ERROR(shard.Call(CallKind::kRead, [&](const client::WorkerCredentials&) {
          grpc::ClientContext context;
          shard.SetDeadline(&context);
          return FromGrpcCall(shard.stub()->DeclareTensors(&context, request, &response), context,
                              shard.label());
        }));
        for (const v1::TensorSpec& spec : response.tensors()) {
          ASSIGN_OR_RETURN(TensorLayout layout, LayoutFromProto(spec));
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
      return absl::InternalError(absl::StrCat(shards_[s]->label(), " and ", shards_[0]->label(),
                                              " registered different layouts"));
    }
  }
  RememberLayouts(declared[0]);
  return absl::OkStatus();
}

absl::Status PsClient::FetchSpecs() {
  ASSIGN_OR_RETURN(std::vector<ShardStatus> statuses, GetStatus());
  absl::flat_hash_map<std::string, TensorLayout> merged;
  for (size_t s = 0; s < statuses.size(); ++s) {
    for (const ShardStatus::Tensor& tensor : statuses[s].tensors) {
      auto [it, inserted] = merged.emplace(tensor.layout.name, tensor.layout);
      if (!inserted && !SameLayout(it->second, tensor.layout)) {
        return absl::InternalError(absl::StrCat("shards disagree about the layout of tensor '",
                                                tensor.layout.name, "' (", shards_[s]->label(),
                                                ")"));
      }
    }
  }
  std::vector<TensorLayout> layouts;
  for (auto& [name, layout] : merged) layouts.push_back(std::move(layout));
  RememberLayouts(layouts);
  return absl::OkStatus();
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
  CallTensors tensors(*std::move(found));
  tensors.wire_dtype = options_.wire_dtype;
  const auto plan = client::PlanChunks(tensors.layouts, shard_count());
  for (size_t t = 0; t < tensors.layouts.size(); ++t) {
    std::vector<float>& values = (*out)[tensors.layouts[t].name];
    values.resize(tensors.layouts[t].num_elements);
    tensors.destinations[t] = values.data();
  }
  return ForEachShard(client::ShardsWithChunks(plan), [&](uint32_t s) {
    ShardSession& shard = *shards_[s];
    return shard.Call(CallKind::kPull, [&](const client::WorkerCredentials& worker) {
      ShardReply reply;
      return PullChunks(shard, worker, tensors, plan[s], &reply);
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

template <typename Response, typename Call>
absl::StatusOr<std::vector<Response>> PsClient::UnaryOnEveryShard(Call call) {
  std::vector<Response> responses(shards_.size());
  RETURN_IF_ERROR(ForEachShard(AllShards(), [&](uint32_t s) {
    ShardSession& shard = *shards_[s];
    return shard.Call(CallKind::kRead, [&](const client::WorkerCredentials&) {
      grpc::ClientContext context;
      shard.SetDeadline(&context);
      return FromGrpcCall(call(shard.stub(), &context, &responses[s]), context, shard.label());
    });
  }));
  return responses;
}

absl::StatusOr<std::vector<ShardStatus>> PsClient::GetStatus() {
  ASSIGN_OR_RETURN(std::vector<v1::ShardStatus> responses,
                   UnaryOnEveryShard<v1::ShardStatus>([](v1::ParameterShard::Stub* stub,
                                                         grpc::ClientContext* context,
                                                         v1::ShardStatus* response) {
                     return stub->GetStatus(context, v1::GetStatusRequest(), response);
                   }));
  std::vector<ShardStatus> statuses;
  for (const v1::ShardStatus& response : responses) {
    ASSIGN_OR_RETURN(ShardStatus status, FromProto(response));
    statuses.push_back(std::move(status));
  }
  return statuses;
}

absl::StatusOr<std::vector<CheckpointResult>> PsClient::Checkpoint() {
  ASSIGN_OR_RETURN(std::vector<v1::CheckpointResponse> responses,
                   UnaryOnEveryShard<v1::CheckpointResponse>([](v1::ParameterShard::Stub* stub,
                                                                grpc::ClientContext* context,
                                                                v1::CheckpointResponse* response) {
                     return stub->Checkpoint(context, v1::CheckpointRequest(), response);
                   }));
  std::vector<CheckpointResult> results;
  for (const v1::CheckpointResponse& response : responses) results.push_back(FromProto(response));
  return results;
}

}  // namespace dcasgd
