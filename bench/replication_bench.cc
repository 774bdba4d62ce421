// What synchronous replication costs a worker: PushPull rounds against a
// replicated shard pair (dcasgd-ps --replicas=2 and a dcasgd-witness), beside
// the same rounds against one unreplicated shard, in the same run.
//
// One worker of each kind; their rounds alternate, so that the machine's
// load (which varies) weighs on both alike. Every round of the pair commits
// only once member b has applied it (docs/design.md, "Acknowledgement"):
// one more hop on loopback, and b's apply of the same update.
//
// Counters per model size (floats):
//   single_us, pair_us    mean microseconds per round
//   single_p50, pair_p50  median microseconds per round
//   single_p99, pair_p99  99th percentile
//   ratio                 pair_us / single_us (the cost; 1 = free)
//
// Run: build/<dir>/bench/replication_bench

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/process_setup.h"
#include "base/status_macros.h"
#include "bench/child_process.h"
#include "benchmark/benchmark.h"
#include "clients/cpp/ps_client.h"

namespace dcasgd {
namespace {

using bench::ChildProcess;
using bench::FreePort;
using bench::TempDir;

constexpr uint32_t kChunkElements = 65536;

struct Side {
  std::unique_ptr<PsClient> client;
  TensorMap weights;
  std::vector<double> round_us;
};

// A witness, the pair (a primary once it answers), one single shard, and a
// joined, declared, pulled worker on each side.
struct Setup {
  uint64_t elements = 0;
  std::unique_ptr<ChildProcess> witness;
  std::unique_ptr<ChildProcess> members[2];
  std::unique_ptr<ChildProcess> single;
  TensorMap gradient;
  Side pair;
  Side alone;
};

absl::Status Prepare(Side* side, const std::vector<std::string>& primaries,
                     const std::vector<std::string>& replicas, uint64_t elements) {
  ClientOptions options;
  options.shard_addresses = primaries;
  options.replica_addresses = replicas;
  options.worker_name = "bench";
  options.max_attempts = 50;  // the pair's member a claims its epoch at start
  ASSIGN_OR_RETURN(side->client, PsClient::Connect(options));
  TensorSpec spec;
  spec.name = "model";
  spec.shape = {static_cast<int64_t>(elements)};
  spec.chunk_elements = kChunkElements;
  spec.init.kind = Initializer::Kind::kUniform;
  spec.init.a = -0.1f;
  spec.init.b = 0.1f;
  RETURN_IF_ERROR(side->client->Declare({spec}));
  return side->client->Pull({"model"}, &side->weights);
}

absl::StatusOr<std::unique_ptr<Setup>> Start(uint64_t elements) {
#if !defined(DCASGD_PS_BINARY) || !defined(DCASGD_WITNESS_BINARY)
  return absl::FailedPreconditionError("built without dcasgd-ps or dcasgd-witness");
#else
  auto setup = std::make_unique<Setup>();
  setup->elements = elements;
  const std::string dir = TempDir();
  ASSIGN_OR_RETURN(setup->witness,
                   ChildProcess::Start({DCASGD_WITNESS_BINARY, "--listen=127.0.0.1:0",
                                        "--metrics_address=", "--shard_count=1",
                                        absl::StrCat("--state_dir=", dir, "/witness-", elements),
                                        absl::StrCat("--port_file=", dir, "/witness.port")},
                                       absl::StrCat(dir, "/witness.port")));
  const std::string addresses[2] = {absl::StrCat("127.0.0.1:", FreePort()),
                                    absl::StrCat("127.0.0.1:", FreePort())};
  const std::vector<std::string> common = {"--metrics_address=", "--update_rule=dcasgd-a",
                                           "--lr=0.01", "--max_message_bytes=67108864"};
  for (int m = 0; m < 2; ++m) {
    const std::string port_file = absl::StrCat(dir, "/member-", m, ".port");
    std::vector<std::string> argv = {DCASGD_PS_BINARY,
                                     absl::StrCat("--listen=", addresses[m]),
                                     absl::StrCat("--port_file=", port_file),
                                     "--replicas=2",
                                     m == 0 ? "--member=a" : "--member=b",
                                     absl::StrCat("--peer_address=", addresses[1 - m]),
                                     absl::StrCat("--witness_address=", setup->witness->address())};
    argv.insert(argv.end(), common.begin(), common.end());
    ASSIGN_OR_RETURN(setup->members[m], ChildProcess::Start(argv, port_file));
  }
  std::vector<std::string> argv = {DCASGD_PS_BINARY, "--listen=127.0.0.1:0",
                                   absl::StrCat("--port_file=", dir, "/single.port")};
  argv.insert(argv.end(), common.begin(), common.end());
  ASSIGN_OR_RETURN(setup->single, ChildProcess::Start(argv, absl::StrCat(dir, "/single.port")));
  RETURN_IF_ERROR(Prepare(&setup->pair, {addresses[0]}, {addresses[1]}, elements));
  RETURN_IF_ERROR(Prepare(&setup->alone, {setup->single->address()}, {}, elements));
  setup->gradient["model"].assign(elements, 1e-4f);
  return setup;
#endif
}

double Percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[static_cast<size_t>(q * static_cast<double>(values.size() - 1))];
}

double Mean(const std::vector<double>& values) {
  double sum = 0;
  for (double v : values) sum += v;
  return values.empty() ? 0 : sum / static_cast<double>(values.size());
}

absl::Status Round(Side* side, const TensorMap& gradient) {
  const absl::Time begin = absl::Now();
  RETURN_IF_ERROR(side->client->PushPull(gradient, &side->weights));
  side->round_us.push_back(absl::ToDoubleMicroseconds(absl::Now() - begin));
  return absl::OkStatus();
}

void BM_SyncReplication(benchmark::State& state) {
  absl::StatusOr<std::unique_ptr<Setup>> setup = Start(static_cast<uint64_t>(state.range(0)));
  if (!setup.ok()) {
    state.SkipWithError(setup.status().ToString().c_str());
    return;
  }
  Setup& s = **setup;
  for (auto _ : state) {
    absl::Status status = Round(&s.alone, s.gradient);
    if (status.ok()) status = Round(&s.pair, s.gradient);
    if (!status.ok()) {
      state.SkipWithError(status.ToString().c_str());
      return;
    }
  }
  const double single = Mean(s.alone.round_us);
  const double pair = Mean(s.pair.round_us);
  state.counters["single_us"] = single;
  state.counters["pair_us"] = pair;
  state.counters["single_p50"] = Percentile(s.alone.round_us, 0.5);
  state.counters["pair_p50"] = Percentile(s.pair.round_us, 0.5);
  state.counters["single_p99"] = Percentile(s.alone.round_us, 0.99);
  state.counters["pair_p99"] = Percentile(s.pair.round_us, 0.99);
  state.counters["ratio"] = single > 0 ? pair / single : 0;
}

// 7850 floats: the softmax model (31 KB); 262144: 1 MiB; 1 Mi floats: 4 MiB.
BENCHMARK(BM_SyncReplication)
    ->ArgNames({"floats"})
    ->Arg(7850)
    ->Arg(1 << 18)
    ->Arg(1 << 20)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime()
    ->Iterations(400);

}  // namespace
}  // namespace dcasgd

int main(int argc, char** argv) {
  dcasgd::PrepareServiceProcess();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
