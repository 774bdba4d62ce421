// Fuzz target: every request of the ParameterShard service, decoded and
// validated the way services/ps does it (wire/raw_message.h ParseMessage,
// wire/tensor_spec.h, ValidateName) and applied to a real ShardStore
// in-process, without gRPC. An input is a script of requests
// (tests/fuzz/fuzz_input.h): the first byte picks the update rule and sync
// mode, then each record is one RPC's request bytes (a Push, PushPull or
// Exchange record holds the stream's messages as records of their own).
//
// Beyond "no crash, no leak, no undefined behaviour" it checks what
// docs/security.md promises for every request: an actionable error code with
// a bounded message (fuzz_input.h CheckAnswer), a rejected declaration or
// push changes nothing (version and weights), an accepted declaration reads
// back as the layout it reported, and a PushPull returns every chunk it
// pushed.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/clock.h"
#include "base/random.h"
#include "core/shard_store.h"
#include "dcasgd/v1/ps.pb.h"
#include "grpcpp/support/byte_buffer.h"
#include "services/ps/push_collector.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/fuzz/fuzz_rpcs.h"
#include "wire/chunk_values.h"
#include "wire/raw_message.h"
#include "wire/tensor_spec.h"

namespace dcasgd::fuzz {
namespace {

// The sessions Join gave, by worker id. A request that names a joined worker
// with an empty session is sent with that worker's real one (the fuzzed
// client plays the worker that joined, so the push and pull paths stay
// reachable); any other session is sent as it is, and the shard's check
// refuses it.
using Sessions = std::map<WorkerId, std::string>;

std::string SessionFor(const Sessions& sessions, WorkerId worker, const std::string& given) {
  if (!given.empty()) return given;
  auto it = sessions.find(worker);
  return it == sessions.end() ? given : it->second;
}

// Worker ids 1, 2, 3, ... so that scripts (and the fuzzer) can name them.
class CountingRandom final : public RandomSource {
 public:
  uint64_t Next64() override { return ++next_; }

 private:
  uint64_t next_ = 0;
};

template <typename Message>
absl::Status Parse(absl::string_view bytes, Message* message) {
  return ParseMessage(RawRequest(bytes), message);
}

// The store's observable state: what a rejected request must leave as it was.
struct Observed {
  uint64_t version = 0;
  size_t tensors = 0;
  std::vector<std::vector<float>> weights;

  bool operator==(const Observed& o) const {
    return version == o.version && tensors == o.tensors && weights == o.weights;
  }
};

Observed Observe(const ShardStore& store) {
  Observed o;
  ShardSnapshot snapshot = store.Snapshot();
  o.version = snapshot.version;
  o.tensors = store.ListTensors().size();
  for (TensorState& t : snapshot.tensors) {
    for (ChunkState& c : t.chunks) o.weights.push_back(std::move(c.weights));
  }
  return o;
}

// Pushes are checked by the shard's own PushCollector (services/ps/
// push_collector.h); the fuzzer has no byte limit of its own beyond the
// announced chunks'.
constexpr uint64_t kNoPushByteLimit = std::numeric_limits<uint64_t>::max();

// The messages of a Push or PushPull stream, collected as ps_streams.cc does
// before the push is submitted (PushStream::Add and EndOfReads).
absl::StatusOr<std::vector<GradientChunk>> CollectPush(ShardStore& store, const Sessions& sessions,
                                                       FuzzInput& stream, WorkerId* worker,
                                                       uint64_t* step, Dtype* reply_dtype) {
  PushCollector collector(&store, kNoPushByteLimit);
  while (!stream.empty()) {
    v1::PushRequest message;
    if (absl::Status s = Parse(stream.Record(), &message); !s.ok()) return s;
    if (!collector.started()) {
      if (absl::Status s = collector.Begin(
              message.worker_id(), message.chunk_count(), message.step(),
              SessionFor(sessions, message.worker_id(), message.session()), message.wire_dtype());
          !s.ok()) {
        return s;
      }
    }
    if (absl::Status s = collector.Add(message.mutable_gradient()); !s.ok()) return s;
  }
  if (!collector.started()) return absl::InvalidArgumentError("empty push stream");
  if (!collector.complete()) return absl::InvalidArgumentError("fewer chunks than announced");
  *worker = collector.worker();
  *step = collector.step();
  *reply_dtype = collector.wire_dtype();
  return collector.TakeChunks();
}

// Submits a collected push and checks it all or nothing against `before`;
// a PushPull's chunks are encoded in `reply_dtype` as the services do.
void SubmitAndCheck(ShardStore& store, WorkerId worker, uint64_t step,
                    std::vector<GradientChunk> chunks, bool pull_after, Dtype reply_dtype,
                    const Observed& before) {
  const size_t pushed = chunks.size();
  std::optional<absl::StatusOr<PushResult>> result;
  size_t sent_back = 0;
  auto sink = [&sent_back, reply_dtype](AppliedChunk applied) {
    const size_t elements = applied.values.values.size() / sizeof(float);
    const SharedBytes encoded = EncodeSharedValues(reply_dtype, std::move(applied.values.values));
    if (encoded.size() != WireBytes(reply_dtype, elements)) {
      Fail("a reply chunk was encoded at the wrong length");
    }
    ++sent_back;
  };
  store.SubmitPush(
      worker, step, std::move(chunks), pull_after,
      [&result](absl::StatusOr<PushResult> r) { result = std::move(r); },
      pull_after ? ShardStore::ChunkSink(sink) : nullptr);
  if (!result.has_value()) {
    // Waits for an SSGD round or the SSP bound: it completes (or is
    // cancelled) later, from another push or at the end; `result` must not
    // be touched then, so waiting pushes are not allowed here (see
    // ShardConfigFor: one worker per round is never left waiting).
    Fail("a push waited although no sync mode here makes it wait");
  }
  CheckAnswer(result->status());
  if (!result->ok()) {
    if (!(Observe(store) == before)) Fail("a rejected push changed the shard", result->status());
    return;
  }
  if (pull_after && sent_back != pushed) Fail("a PushPull did not return every pushed chunk");
}

// A push or PushPull: collected, submitted, and checked all or nothing.
void Push(ShardStore& store, const Sessions& sessions, absl::string_view record, bool pull_after) {
  FuzzInput stream(reinterpret_cast<const uint8_t*>(record.data()), record.size());
  WorkerId worker = 0;
  uint64_t step = 0;
  Dtype reply_dtype = Dtype::kFloat32;
  absl::StatusOr<std::vector<GradientChunk>> chunks =
      CollectPush(store, sessions, stream, &worker, &step, &reply_dtype);
  if (!chunks.ok()) {
    CheckAnswer(chunks.status());
    return;
  }
  SubmitAndCheck(store, worker, step, *std::move(chunks), pull_after, reply_dtype, Observe(store));
}

// The rounds of an Exchange stream, as ps_exchange.cc reads them: each round
// is collected and applied once complete; a rejected round changes nothing
// and its later messages are dropped; a message that does not parse or a
// round number that does not increase ends the stream; an incomplete round
// at the end applies nothing.
void Exchange(ShardStore& store, const Sessions& sessions, absl::string_view record) {
  FuzzInput stream(reinterpret_cast<const uint8_t*>(record.data()), record.size());
  uint64_t last_round = 0;
  uint64_t discarding = 0;
  std::optional<PushCollector> round;
  uint64_t round_id = 0;
  bool pull_back = false;
  Observed before;
  auto reject = [&](const absl::Status& status) {
    CheckAnswer(status);
    if (!(Observe(store) == before)) Fail("a rejected round changed the shard", status);
    discarding = round_id;
    round.reset();
  };
  while (!stream.empty()) {
    v1::ExchangeRequest message;
    if (absl::Status s = Parse(stream.Record(), &message); !s.ok()) {
      CheckAnswer(s);
      break;
    }
    const uint64_t id = message.round();
    if (!(round.has_value() && id == round_id)) {
      if (id != 0 && id == discarding) continue;
      if (id <= last_round) {
        CheckAnswer(absl::InvalidArgumentError("round numbers must increase"));
        break;
      }
      if (round.has_value()) reject(absl::InvalidArgumentError("a round began before the last"));
      last_round = round_id = id;
      before = Observe(store);
      round.emplace(&store, kNoPushByteLimit);
      const v1::RoundHeader& header = message.header();
      pull_back = header.pull_back();
      const absl::Status begun =
          message.has_header()
              ? round->Begin(header.worker_id(), header.chunk_count(), header.step(),
                             SessionFor(sessions, header.worker_id(), header.session()),
                             header.wire_dtype())
              : absl::InvalidArgumentError("a round without its header");
      if (!begun.ok()) {
        reject(begun);
        continue;
      }
    }
    for (v1::Chunk& gradient : *message.mutable_gradients()) {
      if (absl::Status s = round->Add(&gradient); !s.ok()) {
        reject(s);
        break;
      }
    }
    if (round.has_value() && round->complete()) {
      const WorkerId worker = round->worker();
      const uint64_t step = round->step();
      SubmitAndCheck(store, worker, step, round->TakeChunks(), pull_back, round->wire_dtype(),
                     before);
      round.reset();
    }
  }
  if (round.has_value() && !(Observe(store) == before))
    Fail("an incomplete round changed the shard");
}

void Declare(ShardStore& store, absl::string_view record) {
  v1::DeclareTensorsRequest request;
  absl::Status status = Parse(record, &request);
  std::vector<TensorSpec> specs;
  for (const v1::TensorSpec& proto : request.tensors()) {
    if (!status.ok()) break;
    absl::StatusOr<TensorSpec> spec = TensorSpecFromProto(proto);
    if (!spec.ok())
      status = spec.status();
    else
      specs.push_back(*std::move(spec));
  }
  if (!status.ok()) {
    CheckAnswer(status);
    return;
  }
  const Observed before = Observe(store);
  absl::StatusOr<std::vector<TensorSpec>> declared = store.Declare(std::move(specs));
  CheckAnswer(declared.status());
  if (!declared.ok()) {
    if (!(Observe(store) == before)) Fail("a rejected declaration changed the shard");
    return;
  }
  v1::DeclareTensorsResponse response;
  for (const TensorSpec& spec : *declared) {
    v1::TensorSpec* proto = response.add_tensors();
    TensorSpecToProto(spec, proto);
    // What a client computes its chunks from must be what the shard holds.
    absl::StatusOr<TensorLayout> layout = LayoutFromProto(*proto);
    if (!layout.ok()) Fail("a declared spec does not read back as a layout", layout.status());
    if (layout->num_elements != spec.num_elements() ||
        layout->chunk_elements != spec.chunk_elements || layout->name != spec.name) {
      Fail("a declared spec reads back as another layout");
    }
  }
  grpc::ByteBuffer out;
  SerializeMessage(response, &out);
}

void Pull(ShardStore& store, const Sessions& sessions, absl::string_view record) {
  v1::PullRequest request;
  absl::Status status = Parse(record, &request);
  Dtype wire_dtype = Dtype::kFloat32;
  if (status.ok()) {
    absl::StatusOr<Dtype> dtype = DtypeFromProto(request.wire_dtype(), "PullRequest.wire_dtype");
    status = dtype.status();
    if (dtype.ok()) wire_dtype = *dtype;
  }
  // A pull that records a backup acts as the worker: its session first.
  if (status.ok() && request.worker_id() != 0) {
    status = store.Authenticate(request.worker_id(),
                                SessionFor(sessions, request.worker_id(), request.session()));
  }
  std::vector<std::string> names;
  for (const std::string& name : request.tensors()) {
    if (!status.ok()) break;
    status = ValidateName("pulled tensor name", name);
    names.push_back(name);
  }
  if (!status.ok()) {
    CheckAnswer(status);
    return;
  }
  absl::StatusOr<PullPlan> plan = store.PlanPull(request.worker_id(), names);
  CheckAnswer(plan.status());
  if (!plan.ok()) return;
  std::string values;
  for (const ChunkRef& ref : plan->chunks) {
    store.ReadChunk(*plan, ref, &values);
    if (values.size() != ref.elements * sizeof(float)) Fail("a pulled chunk has the wrong size");
    EncodeValuesInPlace(wire_dtype, &values);
    if (values.size() != WireBytes(wire_dtype, ref.elements)) {
      Fail("a pulled chunk was encoded at the wrong length");
    }
  }
}

void GetStatus(ShardStore& store, absl::string_view record) {
  v1::GetStatusRequest request;
  absl::Status status = Parse(record, &request);
  CheckAnswer(status);
  if (!status.ok()) return;
  v1::ShardStatus response;
  const ShardStats stats = store.Stats();
  response.set_version(stats.version);
  response.set_active_workers(stats.active_workers);
  for (const TensorSpec& spec : store.ListTensors()) {
    v1::TensorStatus* tensor = response.add_tensors();
    TensorSpecToProto(spec, tensor->mutable_spec());
    tensor->set_owned_chunks(store.OwnedChunks(spec.name));
  }
  grpc::ByteBuffer out;
  SerializeMessage(response, &out);
}

// Small budgets, so that the largest declaration the fuzzer can make is
// quick to build and every size limit is reachable.
ShardConfig ShardConfigFor(uint8_t choice) {
  ShardConfig config;
  constexpr UpdateRule kRules[] = {UpdateRule::kAsgd, UpdateRule::kDcAsgdConstant,
                                   UpdateRule::kDcAsgdAdaptive};
  config.optimizer = OptimizerConfig::ForRule(kRules[choice % 3]);
  config.optimizer.momentum = (choice & 0x10) ? 0.5f : 0.0f;
  // Async, or SSP whose waits are rejections (a waiting push would complete
  // on another push's call, outside the request that made it).
  if (choice & 0x20) {
    config.sync = SyncMode::kSsp;
    config.ssp_bound = 1;
    config.ssp_policy = SspPolicy::kReject;
  }
  if (choice & 0x40) config.max_staleness = 2;
  config.shard_index = (choice & 0x80) ? 1 : 0;
  config.shard_count = 2;
  config.lease = absl::Seconds(10);
  config.max_workers = 4;
  // The sizing rule's fixed base (core/shard_memory.h) is 48 MiB: 64 MiB
  // leaves 16 MiB of tensors, and the in-flight budget bounds the owned
  // weights to 256 KiB anyway.
  config.memory_budget_bytes = uint64_t{64} << 20;
  config.inflight_budget_bytes = uint64_t{1} << 18;
  return config;
}

void Run(const uint8_t* data, size_t size) {
  InitGrpcOnce();
  FuzzInput in(data, size);
  ManualClock clock;
  CountingRandom random;
  const ShardConfig config = ShardConfigFor(in.Byte());
  if (absl::Status s = config.Validate(); !s.ok()) Fail("the fuzz shard config is invalid", s);
  ShardStore store(config, &clock, &random);
  Sessions sessions;
  for (int i = 0; i < 64 && !in.empty(); ++i) {
    const PsRpc rpc = NextPsRpc(in);
    const absl::string_view record = in.Record();
    switch (rpc) {
      case PsRpc::kDeclare:
        Declare(store, record);
        break;
      case PsRpc::kJoin: {
        v1::JoinRequest request;
        absl::Status status = Parse(record, &request);
        if (status.ok()) status = ValidateName("worker_name", request.worker_name());
        if (status.ok()) {
          absl::StatusOr<JoinResult> joined = store.Join(request.worker_name());
          if (joined.ok()) sessions[joined->worker_id] = joined->session;
          status = joined.status();
        }
        CheckAnswer(status);
        break;
      }
      case PsRpc::kHeartbeat: {
        v1::HeartbeatRequest request;
        absl::Status status = Parse(record, &request);
        if (status.ok()) {
          status = store.Authenticate(request.worker_id(),
                                      SessionFor(sessions, request.worker_id(), request.session()));
        }
        if (status.ok()) status = store.Heartbeat(request.worker_id());
        CheckAnswer(status);
        break;
      }
      case PsRpc::kLeave: {
        v1::LeaveRequest request;
        absl::Status status = Parse(record, &request);
        if (status.ok()) {
          status = store.Authenticate(request.worker_id(),
                                      SessionFor(sessions, request.worker_id(), request.session()));
        }
        if (status.ok()) status = store.Leave(request.worker_id());
        CheckAnswer(status);
        break;
      }
      case PsRpc::kPull:
        Pull(store, sessions, record);
        break;
      case PsRpc::kPush:
      case PsRpc::kPushPull:
        Push(store, sessions, record, rpc == PsRpc::kPushPull);
        break;
      case PsRpc::kGetStatus:
        GetStatus(store, record);
        break;
      case PsRpc::kCheckpoint: {
        v1::CheckpointRequest request;
        CheckAnswer(Parse(record, &request));
        break;
      }
      case PsRpc::kExchange:
        Exchange(store, sessions, record);
        break;
      case PsRpc::kAdvanceClock:
        clock.Advance(absl::Seconds(record.empty() ? 1 : static_cast<uint8_t>(record[0])));
        store.ExpireLeases();
        break;
    }
  }
}

}  // namespace
}  // namespace dcasgd::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dcasgd::fuzz::Run(data, size);
  return 0;
}
