// Writes the seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/
// seed-*) from real requests, coordinator states and checkpoints, made with
// the same code the services use. Deterministic: running it again rewrites
// the same files. Usage: fuzz_make_corpus tests/fuzz/corpus
// (tests/fuzz/README.md). Seeds the fuzzers found (crash-*) are kept beside
// these by hand.

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/clock.h"
#include "base/random.h"
#include "coordinator/data_coordinator.h"
#include "core/checkpoint.h"
#include "core/shard_store.h"
#include "dcasgd/v1/coordinator.pb.h"
#include "dcasgd/v1/ps.pb.h"
#include "services/witness/witness_registers.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/fuzz/fuzz_rpcs.h"
#include "tests/testing/exchange_round.h"
#include "wire/chunk_values.h"
#include "wire/exchange_codec.h"

namespace dcasgd::fuzz {
namespace {

namespace fs = std::filesystem;

void Write(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "cannot write %s\n", (dir / name).c_str());
    std::exit(1);
  }
}

std::string FloatBytes(size_t n, float value) {
  std::string s(n * sizeof(float), '\0');
  for (size_t i = 0; i < n; ++i) std::memcpy(&s[i * sizeof(float)], &value, sizeof(float));
  return s;
}

v1::DeclareTensorsRequest Declaration(bool explicit_values) {
  v1::DeclareTensorsRequest request;
  v1::TensorSpec* w = request.add_tensors();
  w->set_name("layer0/weights");
  w->add_shape(4);
  w->add_shape(3);
  w->set_chunk_elements(5);
  w->mutable_init()->mutable_uniform()->set_low(-0.1f);
  w->mutable_init()->mutable_uniform()->set_high(0.1f);
  w->mutable_init()->mutable_uniform()->set_seed(7);
  v1::TensorSpec* b = request.add_tensors();
  b->set_name("layer0/bias");
  b->add_shape(3);
  b->set_chunk_elements(2);
  if (explicit_values) {
    b->mutable_init()->set_values(FloatBytes(3, 0.5f));
  } else {
    b->mutable_init()->mutable_constant()->set_value(0.25f);
  }
  return request;
}

// The chunks a shard with `config` owns after `declaration`, as pushed by
// worker 1: the stream's messages as records.
std::string PushStream(const ShardConfig& config, const v1::DeclareTensorsRequest& declaration,
                       uint64_t step, float gradient) {
  ManualClock clock;
  ShardStore store(config, &clock);
  std::vector<TensorSpec> specs;
  for (const v1::TensorSpec& proto : declaration.tensors()) {
    TensorSpec spec;
    spec.name = proto.name();
    spec.shape.assign(proto.shape().begin(), proto.shape().end());
    spec.chunk_elements = proto.chunk_elements();
    specs.push_back(spec);
  }
  if (!store.Declare(specs).ok()) std::abort();
  absl::StatusOr<PullPlan> plan = store.PlanPull(0, {});
  if (!plan.ok()) std::abort();
  std::string stream;
  bool first = true;
  for (const ChunkRef& ref : plan->chunks) {
    v1::PushRequest message;
    if (first) {
      message.set_worker_id(1);
      message.set_chunk_count(static_cast<uint32_t>(plan->chunks.size()));
      message.set_step(step);
      first = false;
    }
    message.mutable_gradient()->set_tensor(*ref.tensor);
    message.mutable_gradient()->set_chunk_index(ref.chunk_index);
    message.mutable_gradient()->set_values(FloatBytes(ref.elements, gradient));
    AppendBytes(&stream, message.SerializeAsString());
  }
  return stream;
}

// ps_requests_fuzz.cc ShardConfigFor, for the shard the seeds talk to.
ShardConfig PsConfig(uint8_t choice) {
  ShardConfig config;
  constexpr UpdateRule kRules[] = {UpdateRule::kAsgd, UpdateRule::kDcAsgdConstant,
                                   UpdateRule::kDcAsgdAdaptive};
  config.optimizer = OptimizerConfig::ForRule(kRules[choice % 3]);
  config.shard_index = (choice & 0x80) ? 1 : 0;
  config.shard_count = 2;
  return config;
}

void PsSeeds(const fs::path& dir) {
  auto id = [](uint64_t worker) {
    v1::HeartbeatRequest r;
    r.set_worker_id(worker);
    return r.SerializeAsString();
  };
  v1::JoinRequest join;
  join.set_worker_name("worker-0");
  v1::PullRequest pull_all;
  pull_all.set_worker_id(1);
  v1::PullRequest pull_bias;
  pull_bias.set_worker_id(1);
  pull_bias.add_tensors("layer0/bias");
  const std::string empty;

  // A training step of each rule on each shard: declare, join, pull, push,
  // PushPull (with a step, then its retry), status, leave.
  for (uint8_t choice : {uint8_t{0x00}, uint8_t{0x01}, uint8_t{0x82}, uint8_t{0x32}}) {
    const ShardConfig config = PsConfig(choice);
    std::string s(1, static_cast<char>(choice));
    AppendRecord(&s, PsRpc::kDeclare, Declaration(false).SerializeAsString());
    AppendRecord(&s, PsRpc::kJoin, join.SerializeAsString());
    AppendRecord(&s, PsRpc::kPull, pull_all.SerializeAsString());
    AppendRecord(&s, PsRpc::kPush, PushStream(config, Declaration(false), 0, 0.5f));
    AppendRecord(&s, PsRpc::kPushPull, PushStream(config, Declaration(false), 3, -0.25f));
    AppendRecord(&s, PsRpc::kPushPull, PushStream(config, Declaration(false), 3, -0.25f));
    AppendRecord(&s, PsRpc::kPull, pull_bias.SerializeAsString());
    AppendRecord(&s, PsRpc::kHeartbeat, id(1));
    AppendRecord(&s, PsRpc::kGetStatus, empty);
    AppendRecord(&s, PsRpc::kCheckpoint, empty);
    AppendRecord(&s, PsRpc::kLeave, id(1));
    Write(dir, absl::StrFormat("seed-step-%02x", choice), s);
  }
  // Two workers, one of which lets its lease expire, then pushes.
  {
    const ShardConfig config = PsConfig(0x02);
    std::string s(1, '\x02');
    AppendRecord(&s, PsRpc::kDeclare, Declaration(true).SerializeAsString());
    AppendRecord(&s, PsRpc::kJoin, join.SerializeAsString());
    join.set_worker_name("worker-1");
    AppendRecord(&s, PsRpc::kJoin, join.SerializeAsString());
    AppendRecord(&s, PsRpc::kPull, pull_all.SerializeAsString());
    AppendRecord(&s, PsRpc::kAdvanceClock, std::string(1, '\x14'));
    AppendRecord(&s, PsRpc::kPush, PushStream(config, Declaration(true), 1, 1.0f));
    AppendRecord(&s, PsRpc::kHeartbeat, id(2));
    Write(dir, "seed-expired-lease", s);
  }
  // Rejections: a push with a chunk of the wrong length, a declaration
  // repeated with another spec, an unknown tensor.
  {
    std::string s(1, '\x01');
    AppendRecord(&s, PsRpc::kDeclare, Declaration(false).SerializeAsString());
    AppendRecord(&s, PsRpc::kDeclare, Declaration(true).SerializeAsString());
    AppendRecord(&s, PsRpc::kJoin, join.SerializeAsString());
    v1::PushRequest bad;
    bad.set_worker_id(1);
    bad.set_chunk_count(1);
    bad.mutable_gradient()->set_tensor("layer0/bias");
    bad.mutable_gradient()->set_values(FloatBytes(7, 1.0f));
    std::string stream;
    AppendBytes(&stream, bad.SerializeAsString());
    AppendRecord(&s, PsRpc::kPush, stream);
    v1::PullRequest unknown;
    unknown.add_tensors("no/such/tensor");
    AppendRecord(&s, PsRpc::kPull, unknown.SerializeAsString());
    Write(dir, "seed-rejections", s);
  }

  // An Exchange stream: two rounds made of a push's messages (the second a
  // PushPull), then a rejected round (a chunk of the wrong length) whose
  // stream goes on.
  {
    const ShardConfig config = PsConfig(0x01);
    std::string s(1, '\x01');
    AppendRecord(&s, PsRpc::kDeclare, Declaration(false).SerializeAsString());
    AppendRecord(&s, PsRpc::kJoin, join.SerializeAsString());
    AppendRecord(&s, PsRpc::kPull, pull_all.SerializeAsString());
    std::string rounds;
    for (uint64_t r = 1; r <= 2; ++r) {
      const std::string bytes = PushStream(config, Declaration(false), r, 0.5f);
      FuzzInput push(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
      v1::ExchangeRequest message;
      message.set_round(r);
      while (!push.empty()) {
        v1::PushRequest part;
        if (!part.ParseFromString(std::string(push.Record()))) std::abort();
        if (part.worker_id() != 0) {
          message.mutable_header()->set_worker_id(part.worker_id());
          message.mutable_header()->set_chunk_count(part.chunk_count());
          message.mutable_header()->set_step(part.step());
          message.mutable_header()->set_pull_back(r == 2);
        }
        *message.add_gradients() = part.gradient();
      }
      AppendBytes(&rounds, message.SerializeAsString());
    }
    v1::ExchangeRequest bad;
    bad.set_round(3);
    bad.mutable_header()->set_worker_id(1);
    bad.mutable_header()->set_chunk_count(1);
    bad.add_gradients()->set_tensor("layer0/bias");
    bad.mutable_gradients(0)->set_values(FloatBytes(7, 1.0f));
    AppendBytes(&rounds, bad.SerializeAsString());
    AppendRecord(&s, PsRpc::kExchange, rounds);
    Write(dir, "seed-exchange", s);
  }
  // 16-bit wire dtypes (ps.proto Dtype): a bfloat16 pull, a PushPull of
  // bfloat16 gradients asking for float16 weights, then a rejected push (a
  // bfloat16 chunk of odd length).
  {
    const ShardConfig config = PsConfig(0x01);
    std::string s(1, '\x01');
    AppendRecord(&s, PsRpc::kDeclare, Declaration(false).SerializeAsString());
    AppendRecord(&s, PsRpc::kJoin, join.SerializeAsString());
    v1::PullRequest pull16 = pull_all;
    pull16.set_wire_dtype(v1::DTYPE_BFLOAT16);
    AppendRecord(&s, PsRpc::kPull, pull16.SerializeAsString());
    const std::string bytes = PushStream(config, Declaration(false), 1, 0.3f);
    FuzzInput push(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    std::string stream;
    while (!push.empty()) {
      v1::PushRequest part;
      if (!part.ParseFromString(std::string(push.Record()))) std::abort();
      if (part.worker_id() != 0) part.set_wire_dtype(v1::DTYPE_FLOAT16);
      v1::Chunk* gradient = part.mutable_gradient();
      std::vector<float> values(gradient->values().size() / sizeof(float));
      if (!DecodeValues(Dtype::kFloat32, gradient->values(), absl::MakeSpan(values)).ok()) {
        std::abort();
      }
      EncodeValues(Dtype::kBfloat16, values, gradient->mutable_values());
      gradient->set_dtype(v1::DTYPE_BFLOAT16);
      AppendBytes(&stream, part.SerializeAsString());
    }
    AppendRecord(&s, PsRpc::kPushPull, stream);
    v1::PushRequest bad;
    bad.set_worker_id(1);
    bad.set_chunk_count(1);
    bad.mutable_gradient()->set_tensor("layer0/bias");
    bad.mutable_gradient()->set_dtype(v1::DTYPE_BFLOAT16);
    bad.mutable_gradient()->set_values(std::string(5, '\x3f'));
    std::string rejected;
    AppendBytes(&rejected, bad.SerializeAsString());
    AppendRecord(&s, PsRpc::kPush, rejected);
    Write(dir, "seed-wire-dtypes", s);
  }
}

void CoordinatorSeeds(const fs::path& dir) {
  v1::AcquireDataShardRequest acquire;
  acquire.set_worker_name("worker-0");
  acquire.set_num_data_shards(3);
  acquire.set_epochs(2);
  auto lease = [](uint64_t id) {
    v1::RenewDataLeaseRequest r;
    r.set_lease_id(id);
    return r.SerializeAsString();
  };
  std::string s;
  AppendRecord(&s, CoordinatorRpc::kAcquire, acquire.SerializeAsString());
  AppendRecord(&s, CoordinatorRpc::kRenew, lease(1));
  AppendRecord(&s, CoordinatorRpc::kComplete, lease(1));
  AppendRecord(&s, CoordinatorRpc::kAcquire, acquire.SerializeAsString());
  AppendRecord(&s, CoordinatorRpc::kGetJobStatus, "");
  AppendRecord(&s, CoordinatorRpc::kAdvanceClock, std::string(1, '\x14'));
  AppendRecord(&s, CoordinatorRpc::kAcquire, acquire.SerializeAsString());
  AppendRecord(&s, CoordinatorRpc::kFailSaves, std::string(1, '\x01'));
  AppendRecord(&s, CoordinatorRpc::kComplete, lease(3));
  AppendRecord(&s, CoordinatorRpc::kFailSaves, std::string(1, '\x00'));
  AppendRecord(&s, CoordinatorRpc::kComplete, lease(3));
  Write(dir, "seed-leases", s);

  // A whole small job, to done.
  std::string done;
  acquire.set_num_data_shards(2);
  acquire.set_epochs(1);
  for (uint64_t id = 1; id <= 2; ++id) {
    AppendRecord(&done, CoordinatorRpc::kAcquire, acquire.SerializeAsString());
    AppendRecord(&done, CoordinatorRpc::kComplete, lease(id));
  }
  AppendRecord(&done, CoordinatorRpc::kAcquire, acquire.SerializeAsString());
  AppendRecord(&done, CoordinatorRpc::kGetJobStatus, "");
  Write(dir, "seed-job-done", done);

  // A job beyond the limits, then another job.
  std::string big;
  acquire.set_num_data_shards(4000000000u);
  acquire.set_epochs(4000000000u);
  AppendRecord(&big, CoordinatorRpc::kAcquire, acquire.SerializeAsString());
  acquire.set_num_data_shards(5);
  acquire.set_epochs(1);
  AppendRecord(&big, CoordinatorRpc::kAcquire, acquire.SerializeAsString());
  acquire.set_num_data_shards(6);
  AppendRecord(&big, CoordinatorRpc::kAcquire, acquire.SerializeAsString());
  Write(dir, "seed-limits", big);
}

void ScheduleSeeds(const fs::path& dir) {
  ManualClock clock;
  DataCoordinator coordinator(absl::Seconds(10), &clock);
  Write(dir, "seed-unconfigured", coordinator.SerializeProgress());
  DataLease first;
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<AcquireResult> r = coordinator.Acquire(absl::StrCat("worker-", i), 3, 2);
    if (!r.ok() || !std::holds_alternative<DataLease>(*r)) std::abort();
    if (i == 0) first = std::get<DataLease>(*r);
  }
  if (!coordinator.Complete(first.lease_id, first.secret).ok()) std::abort();
  Write(dir, "seed-leased", coordinator.SerializeProgress());
  // The format of the previous version (no leases) is still read.
  Write(dir, "seed-format-1", "dcasgd-data-coordinator 1\njob 2 1 0 3\nepoch 0 10\n");
}

void WitnessStateSeeds(const fs::path& dir) {
  Write(dir, "seed-empty", WitnessRegisters::Serialize(3, {}));
  std::vector<WitnessRegister> registers(3);
  registers[0] = WitnessRegister{4, Member::kB, true};
  registers[2] = WitnessRegister{1, Member::kA, false};
  Write(dir, "seed-held", WitnessRegisters::Serialize(3, registers));
}

void CheckpointSeeds(const fs::path& dir) {
  const fs::path tmp = fs::temp_directory_path() / "dcasgd-make-corpus.ckpt";
  constexpr UpdateRule kRules[] = {UpdateRule::kAsgd, UpdateRule::kDcAsgdConstant,
                                   UpdateRule::kDcAsgdAdaptive};
  for (uint8_t choice : {uint8_t{0x00}, uint8_t{0x02}, uint8_t{0x12}}) {
    ShardConfig config = PsConfig(choice);
    config.optimizer = OptimizerConfig::ForRule(kRules[choice % 3]);
    config.optimizer.momentum = (choice & 0x10) ? 0.5f : 0.0f;
    ManualClock clock;
    ShardStore store(config, &clock);
    std::vector<TensorSpec> specs(2);
    specs[0].name = "w";
    specs[0].shape = {3, 2};
    specs[0].chunk_elements = 2;
    specs[0].init.kind = Initializer::Kind::kNormal;
    specs[0].init.b = 0.1f;
    specs[1].name = "b";
    specs[1].shape = {2};
    specs[1].chunk_elements = 1;
    if (!store.Declare(specs).ok()) std::abort();
    if (!WriteCheckpoint(tmp.string(), store.Snapshot()).ok()) std::abort();
    std::ifstream in(tmp, std::ios::binary);
    std::string bytes(1, static_cast<char>(choice));
    bytes.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    Write(dir, absl::StrFormat("seed-%02x", choice), bytes);
  }
  fs::remove(tmp);
}

// Answers as a shard writes them (wire/exchange_codec.h) and as protobuf
// does, after a byte of cuts (none, or two) and the cuts' places.
void ExchangeReplySeeds(const fs::path& dir) {
  const auto bytes_of = [](const grpc::ByteBuffer& buffer) {
    std::vector<grpc::Slice> slices;
    if (!buffer.Dump(&slices).ok()) std::abort();
    std::string out;
    for (const grpc::Slice& s : slices)
      out.append(reinterpret_cast<const char*>(s.begin()), s.size());
    return out;
  };
  v1::ExchangeResponse rest;
  rest.set_round(3);
  std::vector<EncodedChunk> weights;
  weights.push_back({"w", 0, Dtype::kFloat32, SharedBytes(FloatBytes(4, 0.5f))});
  weights.push_back({"w", 1, Dtype::kFloat32, SharedBytes(FloatBytes(4, -2.0f))});
  std::string f16;
  EncodeValues(Dtype::kFloat16, std::vector<float>(4, 1.5f), &f16);
  weights.push_back({"w", 2, Dtype::kFloat16, SharedBytes(std::move(f16))});
  Write(dir, "seed-codec", std::string(1, '\0') + bytes_of(EncodeExchangeResponse(rest, weights)));
  rest.set_last(true);
  rest.set_version(12);
  rest.set_staleness(2);
  Write(dir, "seed-codec-cut",
        std::string("\x02\x07\x21", 3) + bytes_of(EncodeExchangeResponse(rest, weights)));
  Write(dir, "seed-protobuf",
        std::string(1, '\0') + testing::ResponseOf(rest, weights).SerializeAsString());
  v1::ExchangeResponse error;
  error.set_round(4);
  error.set_last(true);
  error.set_code(9);
  error.set_message("worker 5 has no backup of chunk 0 of tensor \"w\"");
  Write(dir, "seed-error", std::string(1, '\0') + error.SerializeAsString());
}
}  // namespace
}  // namespace dcasgd::fuzz

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR (tests/fuzz/corpus)\n", argv[0]);
    return 2;
  }
  const std::filesystem::path root(argv[1]);
  dcasgd::fuzz::PsSeeds(root / "ps_requests");
  dcasgd::fuzz::CoordinatorSeeds(root / "coordinator_requests");
  dcasgd::fuzz::ScheduleSeeds(root / "schedule");
  dcasgd::fuzz::CheckpointSeeds(root / "checkpoint");
  dcasgd::fuzz::WitnessStateSeeds(root / "witness_state");
  dcasgd::fuzz::ExchangeReplySeeds(root / "exchange_reply");
  return 0;
}
