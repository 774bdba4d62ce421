// Examples/s of plain single-process SGD (no parameter server): one
// Model::Gradient plus an in-place SGD step per minibatch. This is the
// ceiling a worker can reach with free communication, and the baseline the
// distributed runs are measured against. Beside it, in the same run: the
// forward pass alone (Evaluate) at the same batch size.
//
//   ./local_sgd_bench --benchmark_counters_tabular=true
// items_per_second = training examples per second.
//
// Second mode, sequential SGD on the real Fashion-MNIST (what accuracy a
// model reaches per epoch and what an epoch costs, without any server):
//
//   ./local_sgd_bench --fashion_mnist_epochs=5 --model=cnn --lr=0.02,0.05,0.1
//       [--batch_size=64] [--train_examples=60000] [--seed=1]
//       [--lr_decay_every=0 --lr_decay_factor=0.3]
//       [--data_dir=/usr/share/datasets/fashion-mnist]
// For every learning rate: shuffled minibatch SGD (w -= lr * g) from the
// model's seeded initial weights over the first train_examples training
// images, then the test accuracy and loss on all 10,000 test images after
// every epoch. The rate is constant unless lr_decay_every = E > 0: then it is
// multiplied by lr_decay_factor after every E epochs (the shards' step
// schedule, in epochs). Prints a markdown table on stdout; "train s" is the
// wall time of the epoch's steps (not of the evaluation).

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "benchmark/benchmark.h"
#include "services/worker/data/idx.h"
#include "services/worker/model/model.h"

namespace dcasgd::model {
namespace {

constexpr int kBatch = 64;
constexpr int kPoolBatches = 16;  // cycle over 16 distinct batches

const char* const kModels[] = {"softmax", "mlp:256,128", "cnn", "cnn:16,32,128"};

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
BENCHMARK(BM_LocalSgdStep)->DenseRange(0, 3)->ArgName("model");

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
BENCHMARK(BM_ForwardOnly)->DenseRange(0, 3)->ArgName("model");

// ---- Sequential SGD on the real Fashion-MNIST ----

struct SgdRunOptions {
  int epochs = 0;  // 0: run the microbenchmarks instead
  std::string model = "cnn";
  std::vector<float> learning_rates = {0.05f};
  int batch_size = 64;
  int train_examples = 60000;
  uint64_t seed = 1;
  int lr_decay_every = 0;  // epochs; 0: constant rate
  float lr_decay_factor = 0.3f;
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
};

struct LabelledImages {
  std::vector<float> features;  // pixels / 255, N x 784
  std::vector<int32_t> labels;
};

bool LoadSplit(const std::string& dir, const std::string& prefix, LabelledImages* out) {
  auto images = data::ReadIdxImages(dir + "/" + prefix + "-images-idx3-ubyte.gz");
  auto labels = data::ReadIdxLabels(dir + "/" + prefix + "-labels-idx1-ubyte.gz");
  if (!images.ok() || !labels.ok()) {
    std::fprintf(stderr, "%s (apt-get install dataset-fashion-mnist)\n",
                 (images.ok() ? labels.status() : images.status()).ToString().c_str());
    return false;
  }
  if (images->rows * images->cols != kFashionMnistFeatures ||
      labels->labels.size() != images->count) {
    std::fprintf(stderr, "%s/%s: unexpected sizes\n", dir.c_str(), prefix.c_str());
    return false;
  }
  out->features.resize(images->pixels.size());
  std::transform(images->pixels.begin(), images->pixels.end(), out->features.begin(),
                 [](uint8_t p) { return static_cast<float>(p) / 255.0f; });
  out->labels.assign(labels->labels.begin(), labels->labels.end());
  return true;
}

int RunSequentialSgd(const SgdRunOptions& options) {
  LabelledImages train, test;
  if (!LoadSplit(options.data_dir, "train", &train) ||
      !LoadSplit(options.data_dir, "t10k", &test)) {
    return 1;
  }
  auto model = CreateModel(options.model);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
    return 2;
  }
  const int n = std::min<int>(options.train_examples, static_cast<int>(train.labels.size()));
  std::printf("%s, batch %d, %d training examples, seed %llu", (*model)->name().c_str(),
              options.batch_size, n, static_cast<unsigned long long>(options.seed));
  if (options.lr_decay_every > 0) {
    std::printf(", lr x %g every %d epochs", options.lr_decay_factor, options.lr_decay_every);
  }
  std::printf("\n\n");
  std::printf("| lr | epoch | test accuracy | test loss | mean train loss | train s |\n");
  std::printf("|---|---|---|---|---|---|\n");
  for (const float initial_rate : options.learning_rates) {
    float learning_rate = initial_rate;
    auto params = InitializeParameters((*model)->ParameterSpecs(options.seed));
    if (!params.ok()) {
      std::fprintf(stderr, "%s\n", params.status().ToString().c_str());
      return 2;
    }
    std::vector<int> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::mt19937_64 rng(options.seed);
    ParameterMap gradients;
    std::vector<float> features;
    std::vector<int32_t> labels;
    for (int epoch = 1; epoch <= options.epochs; ++epoch) {
      if (options.lr_decay_every > 0 && epoch > 1 && (epoch - 1) % options.lr_decay_every == 0) {
        learning_rate *= options.lr_decay_factor;
      }
      const auto start = std::chrono::steady_clock::now();
      std::shuffle(order.begin(), order.end(), rng);
      double loss_sum = 0;
      int batches = 0;
      for (int begin = 0; begin < n; begin += options.batch_size) {
        features.clear();
        labels.clear();
        for (int k = begin; k < std::min(n, begin + options.batch_size); ++k) {
          const size_t e = static_cast<size_t>(order[k]);
          features.insert(features.end(), train.features.begin() + e * kFashionMnistFeatures,
                          train.features.begin() + (e + 1) * kFashionMnistFeatures);
          labels.push_back(train.labels[e]);
        }
        auto loss = (*model)->Gradient(*params, features, labels, &gradients);
        if (!loss.ok()) {
          std::fprintf(stderr, "%s\n", loss.status().ToString().c_str());
          return 2;
        }
        loss_sum += *loss;
        ++batches;
        for (const auto& [name, grad] : gradients) {
          std::vector<float>& w = (*params)[name];
          for (size_t i = 0; i < grad.size(); ++i) w[i] -= learning_rate * grad[i];
        }
      }
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      auto eval = (*model)->Evaluate(*params, test.features, test.labels);
      if (!eval.ok()) {
        std::fprintf(stderr, "%s\n", eval.status().ToString().c_str());
        return 2;
      }
      std::printf("| %g | %d | %.4f | %.4f | %.4f | %.1f |\n", initial_rate, epoch, eval->accuracy,
                  eval->mean_loss, loss_sum / batches, seconds);
      std::fflush(stdout);
    }
  }
  return 0;
}

// Takes this mode's flags out of argv (the rest goes to Google Benchmark).
// False on a malformed value.
bool ParseSgdRunFlags(int* argc, char** argv, SgdRunOptions* options) {
  int kept = 1;
  for (int i = 1; i < *argc; ++i) {
    const absl::string_view arg = argv[i];
    const auto value = [&](absl::string_view flag, absl::string_view* out) {
      if (!absl::StartsWith(arg, flag)) return false;
      *out = arg.substr(flag.size());
      return true;
    };
    absl::string_view v;
    bool ok = true;
    if (value("--fashion_mnist_epochs=", &v)) {
      ok = absl::SimpleAtoi(v, &options->epochs) && options->epochs >= 1;
    } else if (value("--model=", &v)) {
      options->model = std::string(v);
    } else if (value("--lr=", &v)) {
      options->learning_rates.clear();
      for (absl::string_view piece : absl::StrSplit(v, ',')) {
        float lr = 0;
        ok = ok && absl::SimpleAtof(piece, &lr) && lr > 0;
        options->learning_rates.push_back(lr);
      }
    } else if (value("--batch_size=", &v)) {
      ok = absl::SimpleAtoi(v, &options->batch_size) && options->batch_size >= 1;
    } else if (value("--train_examples=", &v)) {
      ok = absl::SimpleAtoi(v, &options->train_examples) && options->train_examples >= 1;
    } else if (value("--seed=", &v)) {
      ok = absl::SimpleAtoi(v, &options->seed);
    } else if (value("--lr_decay_every=", &v)) {
      ok = absl::SimpleAtoi(v, &options->lr_decay_every) && options->lr_decay_every >= 0;
    } else if (value("--lr_decay_factor=", &v)) {
      ok = absl::SimpleAtof(v, &options->lr_decay_factor) && options->lr_decay_factor > 0;
    } else if (value("--data_dir=", &v)) {
      options->data_dir = std::string(v);
    } else {
      argv[kept++] = argv[i];
      continue;
    }
    if (!ok) {
      std::fprintf(stderr, "local_sgd_bench: bad value in %s\n", argv[i]);
      return false;
    }
  }
  *argc = kept;
  return true;
}

}  // namespace
}  // namespace dcasgd::model

int main(int argc, char** argv) {
  dcasgd::model::SgdRunOptions options;
  if (!dcasgd::model::ParseSgdRunFlags(&argc, argv, &options)) return 2;
  if (options.epochs > 0) {
    if (argc > 1) {
      std::fprintf(stderr, "local_sgd_bench: unknown flag %s with --fashion_mnist_epochs\n",
                   argv[1]);
      return 2;
    }
    return dcasgd::model::RunSequentialSgd(options);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
