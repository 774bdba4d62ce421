// The server's hot loop, ApplyUpdate, beside memcpy of the same bytes.
//
// bytes_per_second counts the bytes the rule must touch per element: w, g and
// the backup read plus w written (16 B) for DC-ASGD, w and g read plus w
// written (12 B) for ASGD. DC-ASGD-a also reads and writes its mean square,
// which is not counted. BM_Memcpy copies 16 B per element, so its
// bytes_per_second is the copy bandwidth (bytes copied per second, each byte
// read once and written once); rw_bytes_per_second counts reads and writes.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "absl/types/span.h"
#include "benchmark/benchmark.h"
#include "core/dtype.h"
#include "core/update_rule.h"

namespace dcasgd {
namespace {

constexpr int64_t kSizes[] = {65536, int64_t{1} << 20, 10 * (int64_t{1} << 20)};

std::vector<float> RandomVector(size_t n, uint32_t seed, float low, float high) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(low, high);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

void BM_ApplyUpdate(benchmark::State& state, UpdateRule rule, Dtype backup_dtype) {
  const size_t n = static_cast<size_t>(state.range(0));
  OptimizerConfig config;
  config.rule = rule;
  config.backup_dtype = backup_dtype;
  config.lambda0 = rule == UpdateRule::kDcAsgdConstant ? 0.04f : 2.0f;
  // Repeated pushes of the same gradient against a fixed backup converge to
  // w - w_bak = -1 / (lambda * g) for DC-ASGD (lr * lambda * g^2 < 2), so the
  // values stay finite and normal however long the benchmark runs.
  const float lr = 1e-3f;
  std::vector<float> w = RandomVector(n, 1, -1.0f, 1.0f);
  const std::vector<float> g = RandomVector(n, 2, -1.0f, 1.0f);
  const std::vector<float> backup = w;
  std::vector<uint16_t> backup16(backup_dtype == Dtype::kFloat32 ? 0 : n);
  if (!backup16.empty()) FloatTo16(backup_dtype, backup, absl::MakeSpan(backup16));
  std::vector<float> mean_square = RandomVector(n, 3, 0.5f, 1.0f);

  ChunkVectors v;
  v.weights = w.data();
  v.gradient = g.data();
  v.backup = config.uses_backup() ? backup.data() : nullptr;
  v.backup16 = backup16.empty() ? nullptr : backup16.data();
  v.mean_square = config.uses_mean_square() ? mean_square.data() : nullptr;
  v.n = n;
  for (auto _ : state) {
    ApplyUpdate(config, lr, v);
    benchmark::ClobberMemory();
  }
  const int64_t bytes_per_element =
      3 * sizeof(float) + (config.uses_backup() ? DtypeBytes(backup_dtype) : 0);
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(n) * bytes_per_element);
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(n));
}

void BM_Memcpy(benchmark::State& state) {
  // The bytes one DC-ASGD update of n elements is credited with.
  const size_t bytes = static_cast<size_t>(state.range(0)) * 4 * sizeof(float);
  std::vector<char> src(bytes, 1);
  std::vector<char> dst(bytes, 0);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), bytes);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes));
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.counters["rw_bytes_per_second"] =
      benchmark::Counter(2.0 * static_cast<double>(bytes) * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate, benchmark::Counter::kIs1024);
}

// Writing a worker's backup of n elements from the weights it is sent.
void BM_StoreBackup(benchmark::State& state, Dtype dtype) {
  const size_t n = static_cast<size_t>(state.range(0));
  const std::vector<float> w = RandomVector(n, 1, -1.0f, 1.0f);
  std::vector<float> backup(n);
  std::vector<uint16_t> backup16(n);
  for (auto _ : state) {
    if (dtype == Dtype::kFloat32) {
      backup.assign(w.begin(), w.end());
      benchmark::DoNotOptimize(backup.data());
    } else {
      FloatTo16(dtype, w, absl::MakeSpan(backup16));
      benchmark::DoNotOptimize(backup16.data());
    }
    benchmark::ClobberMemory();
  }
  // Bytes read and written.
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(n) *
                          static_cast<int64_t>(sizeof(float) + DtypeBytes(dtype)));
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(n));
}

void Sizes(benchmark::internal::Benchmark* b) {
  for (int64_t n : kSizes) b->Arg(n);
}

BENCHMARK(BM_Memcpy)->Apply(Sizes);
BENCHMARK_CAPTURE(BM_ApplyUpdate, dcasgd_a, UpdateRule::kDcAsgdAdaptive, Dtype::kFloat32)
    ->Apply(Sizes);
BENCHMARK_CAPTURE(BM_ApplyUpdate, dcasgd_a_bf16, UpdateRule::kDcAsgdAdaptive, Dtype::kBfloat16)
    ->Apply(Sizes);
BENCHMARK_CAPTURE(BM_ApplyUpdate, dcasgd_a_fp16, UpdateRule::kDcAsgdAdaptive, Dtype::kFloat16)
    ->Apply(Sizes);
BENCHMARK_CAPTURE(BM_ApplyUpdate, dcasgd_c, UpdateRule::kDcAsgdConstant, Dtype::kFloat32)
    ->Apply(Sizes);
BENCHMARK_CAPTURE(BM_ApplyUpdate, dcasgd_c_bf16, UpdateRule::kDcAsgdConstant, Dtype::kBfloat16)
    ->Apply(Sizes);
BENCHMARK_CAPTURE(BM_ApplyUpdate, asgd, UpdateRule::kAsgd, Dtype::kFloat32)->Apply(Sizes);
BENCHMARK_CAPTURE(BM_StoreBackup, float32, Dtype::kFloat32)->Apply(Sizes);
BENCHMARK_CAPTURE(BM_StoreBackup, bfloat16, Dtype::kBfloat16)->Apply(Sizes);
BENCHMARK_CAPTURE(BM_StoreBackup, float16, Dtype::kFloat16)->Apply(Sizes);

}  // namespace
}  // namespace dcasgd

BENCHMARK_MAIN();
