// Examples/s of plain single-process SGD (no parameter server): one
// Model::Gradient plus an in-place SGD step per minibatch. This is the
// ceiling a worker can reach with free communication, and the baseline the
// distributed runs are measured against. Beside it, in the same run: the
// forward pass alone (Evaluate) at the same batch size.
//
//   ./local_sgd_bench --benchmark_counters_tabular=true
// items_per_second = training examples per second.

#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "services/worker/model/model.h"

namespace dcasgd::model {
namespace {

constexpr int kBatch = 64;
constexpr int kPoolBatches = 16;  // cycle over 16 distinct batches

const char* const kModels[] = {"softmax", "mlp:256,128"};

struct Setup {
  std::unique_ptr<Model> model;
  ParameterMap params;
  std::vector<float> features;  // kPoolBatches * kBatch examples
  std::vector<int32_t> labels;
};

bool MakeSetup(benchmark::State& state, Setup* setup) {
  auto model = CreateModel(kModels[state.range(0)]);
  if (!model.ok()) {
    state.SkipWithError(model.status().ToString().c_str());
    return false;
  }
  setup->model = std::move(*model);
  auto params = InitializeParameters(setup->model->ParameterSpecs(1));
  if (!params.ok()) {
    state.SkipWithError(params.status().ToString().c_str());
    return false;
  }
  setup->params = std::move(*params);
  std::mt19937_64 rng(2);
  std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
  std::uniform_int_distribution<int32_t> label(0, kFashionMnistClasses - 1);
  setup->features.resize(size_t{kPoolBatches} * kBatch * kFashionMnistFeatures);
  for (float& v : setup->features) v = pixel(rng);
  for (int i = 0; i < kPoolBatches * kBatch; ++i) setup->labels.push_back(label(rng));
  state.SetLabel(kModels[state.range(0)]);
  return true;
}

absl::Span<const float> BatchFeatures(const Setup& setup, int b) {
  return absl::MakeConstSpan(setup.features)
      .subspan(static_cast<size_t>(b) * kBatch * kFashionMnistFeatures,
               size_t{kBatch} * kFashionMnistFeatures);
}

absl::Span<const int32_t> BatchLabels(const Setup& setup, int b) {
  return absl::MakeConstSpan(setup.labels).subspan(static_cast<size_t>(b) * kBatch, kBatch);
}

void BM_LocalSgdStep(benchmark::State& state) {
  Setup setup;
  if (!MakeSetup(state, &setup)) return;
  constexpr float kLearningRate = 0.01f;
  ParameterMap gradients;
  int b = 0;
  for (auto _ : state) {
    auto loss = setup.model->Gradient(setup.params, BatchFeatures(setup, b), BatchLabels(setup, b),
                                      &gradients);
    if (!loss.ok()) {
      state.SkipWithError(loss.status().ToString().c_str());
      return;
    }
    benchmark::DoNotOptimize(*loss);
    for (const auto& [name, grad] : gradients) {
      std::vector<float>& w = setup.params[name];
      for (size_t i = 0; i < grad.size(); ++i) w[i] -= kLearningRate * grad[i];
    }
    b = (b + 1) % kPoolBatches;
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_LocalSgdStep)->DenseRange(0, 1)->ArgName("model");

// Baseline: the forward pass only (about a third of a training step's FLOPs).
void BM_ForwardOnly(benchmark::State& state) {
  Setup setup;
  if (!MakeSetup(state, &setup)) return;
  int b = 0;
  for (auto _ : state) {
    auto eval =
        setup.model->Evaluate(setup.params, BatchFeatures(setup, b), BatchLabels(setup, b), kBatch);
    if (!eval.ok()) {
      state.SkipWithError(eval.status().ToString().c_str());
      return;
    }
    benchmark::DoNotOptimize(eval->mean_loss);
    b = (b + 1) % kPoolBatches;
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_ForwardOnly)->DenseRange(0, 1)->ArgName("model");

}  // namespace
}  // namespace dcasgd::model

BENCHMARK_MAIN();
