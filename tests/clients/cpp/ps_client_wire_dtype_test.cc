// ClientOptions.wire_dtype against real dcasgd-ps processes on loopback: a
// worker whose gradients and weights travel as bfloat16 or float16 behaves
// exactly like a float32 worker that rounds its gradients itself and reads
// the rounding of its weights. Each test runs the same schedule on two
// independent jobs (a 16-bit one and its float32 reference) and compares
// bits.

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "clients/cpp/ps_client.h"
#include "core/dtype.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/ps_process.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;

std::vector<std::string> DcFlags(const std::string& backup_dtype = "float32") {
  return {"--update_rule=dcasgd-c", "--lr=0.1", "--lambda0=0.5",
          "--metrics_address=", "--backup_dtype=" + backup_dtype};
}

std::vector<std::unique_ptr<testing::PsProcess>> StartOrDie(int shards,
                                                            const std::vector<std::string>& flags) {
  auto started = testing::StartShards(shards, flags);
  if (!started.ok()) ADD_FAILURE() << started.status();
  return started.ok() ? std::move(started).value()
                      : std::vector<std::unique_ptr<testing::PsProcess>>();
}

std::unique_ptr<PsClient> ConnectOrDie(
    const std::vector<std::unique_ptr<testing::PsProcess>>& shards, const std::string& worker_name,
    Dtype wire_dtype, bool push_stream = true) {
  ClientOptions options;
  options.shard_addresses = testing::Addresses(shards);
  options.worker_name = worker_name;
  options.rpc_timeout = absl::Seconds(20);
  options.wire_dtype = wire_dtype;
  options.push_stream = push_stream;
  auto client = PsClient::Connect(std::move(options));
  if (!client.ok()) ADD_FAILURE() << client.status();
  return client.ok() ? std::move(client).value() : nullptr;
}

// "w": 3000 elements in chunks of 512 over the shards, uniform in [-1, 1);
// "b": 5 elements of 0.3 (neither 16-bit format holds 0.3 exactly).
std::vector<TensorSpec> Specs() {
  TensorSpec w;
  w.name = "w";
  w.shape = {3000};
  w.chunk_elements = 512;
  w.init.kind = Initializer::Kind::kUniform;
  w.init.a = -1.0f;
  w.init.b = 1.0f;
  w.init.seed = 7;
  TensorSpec b;
  b.name = "b";
  b.shape = {5};
  b.init.kind = Initializer::Kind::kConstant;
  b.init.a = 0.3f;
  return {w, b};
}

// A deterministic gradient of step `step`, of magnitude about `scale`.
TensorMap Gradient(int step, float scale = 1.0f) {
  TensorMap g;
  for (const auto& [name, n] : std::vector<std::pair<std::string, int>>{{"w", 3000}, {"b", 5}}) {
    std::vector<float>& values = g[name];
    values.resize(n);
    for (int i = 0; i < n; ++i) values[i] = scale * std::sin(0.37f * i + 1.3f * step);
  }
  return g;
}

TensorMap Rounded(Dtype dtype, TensorMap values) {
  for (auto& [name, v] : values) {
    for (float& x : v) x = FloatFromBits16(dtype, FloatToBits16(dtype, x));
  }
  return values;
}

void ExpectSameBits(const TensorMap& got, const TensorMap& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (const auto& [name, values] : want) {
    ASSERT_EQ(got.count(name), 1u) << what << ": " << name;
    const std::vector<float>& g = got.at(name);
    ASSERT_EQ(g.size(), values.size()) << what << ": " << name;
    EXPECT_EQ(std::memcmp(g.data(), values.data(), g.size() * sizeof(float)), 0)
        << what << ": " << name << "[0] " << g[0] << " vs " << values[0];
  }
}

TensorMap PullOrDie(PsClient* client) {
  TensorMap weights;
  const absl::Status s = client->Pull({"w", "b"}, &weights);
  EXPECT_TRUE(s.ok()) << s;
  return weights;
}

struct WireParam {
  Dtype dtype;
  bool push_stream;
};

class PsClientWireDtypeTest : public ::testing::TestWithParam<WireParam> {};

// A 16-bit push equals a float32 push of the rounded gradient bit for bit (the
// shard's weights agree exactly), and a 16-bit pull or PushPull reply is the
// rounding of the float32 one.
TEST_P(PsClientWireDtypeTest, MatchesAFloat32WorkerOfTheRoundedValues) {
  const Dtype dtype = GetParam().dtype;
  auto job16 = StartOrDie(2, DcFlags());
  auto job32 = StartOrDie(2, DcFlags());
  ASSERT_EQ(job16.size() + job32.size(), 4u);
  auto worker16 = ConnectOrDie(job16, "w16", dtype, GetParam().push_stream);
  auto worker32 = ConnectOrDie(job32, "w32", Dtype::kFloat32, GetParam().push_stream);
  ASSERT_TRUE(worker16 && worker32);
  ASSERT_TRUE(worker16->Declare(Specs()).ok());
  ASSERT_TRUE(worker32->Declare(Specs()).ok());

  ExpectSameBits(PullOrDie(worker16.get()), Rounded(dtype, PullOrDie(worker32.get())), "pull");
  for (int step = 1; step <= 3; ++step) {
    const TensorMap g = Gradient(step);
    TensorMap w16, w32;
    ASSERT_TRUE(worker16->PushPull(g, &w16).ok());
    ASSERT_TRUE(worker32->PushPull(Rounded(dtype, g), &w32).ok());
    ExpectSameBits(w16, Rounded(dtype, w32), "PushPull reply " + std::to_string(step));
  }
  ASSERT_TRUE(worker16->Push(Gradient(4)).ok());
  ASSERT_TRUE(worker32->Push(Rounded(dtype, Gradient(4))).ok());
  // The shards' float32 weights, as float32 evaluators see them.
  auto eval16 = ConnectOrDie(job16, "", Dtype::kFloat32);
  auto eval32 = ConnectOrDie(job32, "", Dtype::kFloat32);
  ASSERT_TRUE(eval16 && eval32);
  ExpectSameBits(PullOrDie(eval16.get()), PullOrDie(eval32.get()), "weights");
}

INSTANTIATE_TEST_SUITE_P(DtypesAndPaths, PsClientWireDtypeTest,
                         ::testing::Values(WireParam{Dtype::kBfloat16, true},
                                           WireParam{Dtype::kBfloat16, false},
                                           WireParam{Dtype::kFloat16, true},
                                           WireParam{Dtype::kFloat16, false}),
                         [](const ::testing::TestParamInfo<WireParam>& p) {
                           return std::string(NameOf(kDtypeNames, p.param.dtype)) +
                                  (p.param.push_stream ? "Stream" : "Calls");
                         });

// float16 holds |x| <= 65504: the client sends a larger element as Inf and
// the shard refuses the push as a non-finite gradient, applying nothing.
TEST(PsClientWireDtype, Float16OverflowIsRejectedAsNonFinite) {
  auto job = StartOrDie(1, DcFlags());
  ASSERT_EQ(job.size(), 1u);
  auto worker = ConnectOrDie(job, "w16", Dtype::kFloat16);
  ASSERT_NE(worker, nullptr);
  ASSERT_TRUE(worker->Declare(Specs()).ok());
  const TensorMap before = PullOrDie(worker.get());
  TensorMap g = Gradient(1);
  g["w"][100] = 1e5f;
  TensorMap after;
  const absl::Status s = worker->PushPull(g, &after);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("NaN, Inf or beyond"));
  ExpectSameBits(PullOrDie(worker.get()), before, "nothing applied");
}

// Mixed workers on one job under DC-ASGD: a float32 worker and a bfloat16
// one, interleaved so that each push is one version stale and compensated
// with its worker's backup. The reference job runs the same schedule with
// two float32 workers, the second pushing the rounded gradients: every reply
// and the final weights agree (the bfloat16 worker's replies are the
// rounding), so each worker got replies in its own dtype and the backups the
// compensation used are the same as the reference's. With bfloat16 backups
// (the parameter) the backup is exactly what the bfloat16 worker was sent.
class PsClientMixedWireTest : public ::testing::TestWithParam<std::string> {};

TEST_P(PsClientMixedWireTest, Float32AndBfloat16WorkersOnOneShard) {
  auto mixed = StartOrDie(1, DcFlags(GetParam()));
  auto reference = StartOrDie(1, DcFlags(GetParam()));
  ASSERT_EQ(mixed.size() + reference.size(), 2u);
  auto a = ConnectOrDie(mixed, "a", Dtype::kFloat32);
  auto b = ConnectOrDie(mixed, "b", Dtype::kBfloat16);
  auto ref_a = ConnectOrDie(reference, "a", Dtype::kFloat32);
  auto ref_b = ConnectOrDie(reference, "b", Dtype::kFloat32);
  ASSERT_TRUE(a && b && ref_a && ref_b);
  ASSERT_TRUE(a->Declare(Specs()).ok());
  ASSERT_TRUE(ref_a->Declare(Specs()).ok());
  ExpectSameBits(PullOrDie(a.get()), PullOrDie(ref_a.get()), "a's pull");
  ExpectSameBits(PullOrDie(b.get()), Rounded(Dtype::kBfloat16, PullOrDie(ref_b.get())), "b's pull");
  const Dtype bf16 = Dtype::kBfloat16;
  for (int step = 1; step <= 4; ++step) {
    const TensorMap ga = Gradient(2 * step, 0.8f);
    const TensorMap gb = Gradient(2 * step + 1, 1.2f);
    TensorMap wa, wb, ref_wa, ref_wb;
    PushStats stats_a, stats_b;
    ASSERT_TRUE(a->PushPull(ga, &wa, &stats_a).ok());
    ASSERT_TRUE(ref_a->PushPull(ga, &ref_wa).ok());
    ExpectSameBits(wa, ref_wa, "a's reply " + std::to_string(step));
    ASSERT_TRUE(b->PushPull(gb, &wb, &stats_b).ok());
    ASSERT_TRUE(ref_b->PushPull(Rounded(bf16, gb), &ref_wb).ok());
    ExpectSameBits(wb, Rounded(bf16, ref_wb), "b's reply " + std::to_string(step));
    EXPECT_EQ(stats_b.max_staleness, 1u) << "a pushed since b's last reply";
    if (step > 1) {
      EXPECT_EQ(stats_a.max_staleness, 1u);
    }
  }
  auto eval = ConnectOrDie(mixed, "", Dtype::kFloat32);
  auto ref_eval = ConnectOrDie(reference, "", Dtype::kFloat32);
  ASSERT_TRUE(eval && ref_eval);
  const TensorMap final_weights = PullOrDie(eval.get());
  ExpectSameBits(final_weights, PullOrDie(ref_eval.get()), "weights");
  // The compensation was not a no-op: the same pushes under plain ASGD
  // (lambda 0) end elsewhere.
  auto asgd = StartOrDie(1, {"--update_rule=asgd", "--lr=0.1", "--metrics_address="});
  ASSERT_EQ(asgd.size(), 1u);
  auto plain = ConnectOrDie(asgd, "a", Dtype::kFloat32);
  ASSERT_NE(plain, nullptr);
  ASSERT_TRUE(plain->Declare(Specs()).ok());
  for (int step = 1; step <= 4; ++step) {
    ASSERT_TRUE(plain->Push(Gradient(2 * step, 0.8f)).ok());
    ASSERT_TRUE(plain->Push(Rounded(bf16, Gradient(2 * step + 1, 1.2f))).ok());
  }
  EXPECT_NE(PullOrDie(plain.get()).at("w"), final_weights.at("w"));
  // Backups: one per worker, 4 or 2 bytes per element.
  const auto status = eval->GetStatus();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ((*status)[0].backup_bytes, 2u * 3005u * (GetParam() == "float32" ? 4u : 2u));
}

INSTANTIATE_TEST_SUITE_P(BackupDtypes, PsClientMixedWireTest,
                         ::testing::Values("float32", "bfloat16"));

}  // namespace
}  // namespace dcasgd
