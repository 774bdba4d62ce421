// Models trained with plain SGD on the real Fashion-MNIST reach the accuracy
// the data supports: softmax regression after one epoch (~84%; we require
// 80%), and the CNN after one epoch on a subset, clearly above an MLP trained
// the same way. The data comes from the Debian package dataset-fashion-mnist;
// a missing file FAILS the test with the path (install the package), it is
// never skipped.

#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "services/worker/model/model.h"
#include "tests/worker/model/model_testing.h"

namespace dcasgd::model {
namespace {

constexpr char kDataDir[] = "/usr/share/datasets/fashion-mnist/";

// Appends the decompressed contents of a gzip'd file to `out`; false and
// `error` on failure.
bool ReadGzip(const std::string& path, std::vector<unsigned char>* out, std::string* error) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) {
    *error = "cannot open " + path + " (apt-get install dataset-fashion-mnist)";
    return false;
  }
  unsigned char buffer[1 << 16];
  int n;
  while ((n = gzread(file, buffer, sizeof(buffer))) > 0)
    out->insert(out->end(), buffer, buffer + n);
  const bool ok = n == 0;
  if (!ok) *error = "gzread failed on " + path;
  gzclose(file);
  return ok;
}

uint32_t BigEndian32(const std::vector<unsigned char>& bytes, size_t offset) {
  return (uint32_t{bytes[offset]} << 24) | (uint32_t{bytes[offset + 1]} << 16) |
         (uint32_t{bytes[offset + 2]} << 8) | uint32_t{bytes[offset + 3]};
}

// A minimal IDX reader: images (magic 0x803, N x 28 x 28 uint8) scaled to
// [0, 1] and labels (magic 0x801, N uint8).
::testing::AssertionResult LoadSplit(const std::string& prefix, testing::Dataset* data) {
  std::vector<unsigned char> images, labels;
  std::string error;
  if (!ReadGzip(kDataDir + prefix + "-images-idx3-ubyte.gz", &images, &error) ||
      !ReadGzip(kDataDir + prefix + "-labels-idx1-ubyte.gz", &labels, &error)) {
    return ::testing::AssertionFailure() << error;
  }
  if (images.size() < 16 || BigEndian32(images, 0) != 0x803 || labels.size() < 8 ||
      BigEndian32(labels, 0) != 0x801) {
    return ::testing::AssertionFailure() << prefix << ": bad IDX headers";
  }
  const uint32_t n = BigEndian32(images, 4);
  const uint32_t rows = BigEndian32(images, 8);
  const uint32_t cols = BigEndian32(images, 12);
  if (rows * cols != kFashionMnistFeatures || BigEndian32(labels, 4) != n ||
      images.size() != 16 + size_t{n} * rows * cols || labels.size() != 8 + size_t{n}) {
    return ::testing::AssertionFailure() << prefix << ": IDX sizes do not add up";
  }
  data->features.resize(images.size() - 16);
  std::transform(images.begin() + 16, images.end(), data->features.begin(),
                 [](unsigned char p) { return static_cast<float>(p) / 255.0f; });
  data->labels.assign(labels.begin() + 8, labels.end());
  return ::testing::AssertionSuccess();
}

// One epoch of shuffled minibatch SGD (w -= lr * g) over the first
// `examples` images of `train`, from the model's initial weights for seed 1.
// The batches of the last `tail_fraction` of the epoch use the rate
// learning_rate * tail_factor. Returns the weights, or fails the test.
ParameterMap TrainOneEpoch(const Model& model, const testing::Dataset& train, size_t examples,
                           int batch, float learning_rate, double tail_fraction = 0,
                           float tail_factor = 1) {
  auto params = InitializeParameters(model.ParameterSpecs(1));
  EXPECT_TRUE(params.ok()) << params.status();
  if (!params.ok()) return {};
  std::vector<int> order(std::min(examples, train.labels.size()));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(2);
  std::shuffle(order.begin(), order.end(), rng);
  ParameterMap gradients;
  std::vector<float> features;
  std::vector<int32_t> labels;
  for (size_t begin = 0; begin < order.size(); begin += static_cast<size_t>(batch)) {
    features.clear();
    labels.clear();
    for (size_t k = begin; k < std::min(order.size(), begin + batch); ++k) {
      const size_t e = order[k];
      features.insert(features.end(), train.features.begin() + e * kFashionMnistFeatures,
                      train.features.begin() + (e + 1) * kFashionMnistFeatures);
      labels.push_back(train.labels[e]);
    }
    auto loss = model.Gradient(*params, features, labels, &gradients);
    EXPECT_TRUE(loss.ok()) << loss.status();
    if (!loss.ok()) return {};
    const bool tail = static_cast<double>(begin) >= (1 - tail_fraction) * order.size();
    testing::SgdStep(gradients, tail ? learning_rate * tail_factor : learning_rate, &*params);
  }
  return std::move(*params);
}

TEST(FashionMnist, SoftmaxRegressionReaches80PercentAfterOneEpochOfSgd) {
  testing::Dataset train, test;
  ASSERT_TRUE(LoadSplit("train", &train));
  ASSERT_TRUE(LoadSplit("t10k", &test));
  ASSERT_EQ(train.labels.size(), 60000u);
  ASSERT_EQ(test.labels.size(), 10000u);

  auto model = CreateModel("softmax");
  ASSERT_TRUE(model.ok()) << model.status();
  auto params = InitializeParameters((*model)->ParameterSpecs(1));
  ASSERT_TRUE(params.ok()) << params.status();
  auto before = (*model)->Evaluate(*params, test.features, test.labels);
  ASSERT_TRUE(before.ok()) << before.status();

  const auto start = std::chrono::steady_clock::now();
  constexpr int kBatch = 32;
  constexpr float kLearningRate = 0.1f;
  *params = TrainOneEpoch(**model, train, train.labels.size(), kBatch, kLearningRate);
  ASSERT_FALSE(params->empty());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  auto after = (*model)->Evaluate(*params, test.features, test.labels);
  ASSERT_TRUE(after.ok()) << after.status();
  RecordProperty("test_accuracy", std::to_string(after->accuracy));
  RecordProperty("train_seconds", std::to_string(seconds));
  EXPECT_LT(before->accuracy, 0.5);
  EXPECT_GE(after->accuracy, 0.80) << "loss " << after->mean_loss;
  EXPECT_LT(after->mean_loss, 0.6);
  std::printf("softmax, 1 epoch SGD (batch %d, lr %.2f): test accuracy %.4f, loss %.4f, %.2f s\n",
              kBatch, kLearningRate, after->accuracy, after->mean_loss, seconds);
}

// The CNN's lead over an MLP after one epoch is a couple of points, and the
// last steps of constant-rate SGD move the accuracy by about as much (with a
// constant rate the MLP's accuracy ranged over 69-79% across shuffles of the
// same 8,000 examples). So both models end the epoch with a tenth of their
// rate, which makes the comparison one of the models, not of the last steps.
// Measured over 6 shuffles, 16,000 examples, batch 32: the MLP reaches
// 82.1-83.7% at its best rates (0.1, 0.2, 0.3; 0.4 is worse), the CNN
// 84.7-85.8% at 0.2.
TEST(FashionMnist, CnnBeatsMlpAfterOneEpochOnASubset) {
  testing::Dataset train, test;
  ASSERT_TRUE(LoadSplit("train", &train));
  ASSERT_TRUE(LoadSplit("t10k", &test));
  // The first 2,000 test images: 188 to 219 of each class.
  constexpr size_t kTestExamples = 2000;
  test.features.resize(kTestExamples * kFashionMnistFeatures);
  test.labels.resize(kTestExamples);

  // Both models see the same examples in the same order and batches.
  constexpr size_t kTrainExamples = 16000;
  constexpr int kBatch = 32;
  constexpr float kLearningRate = 0.2f;
  constexpr double kTailFraction = 0.25;
  constexpr float kTailFactor = 0.1f;
  // Above every MLP result of the sweep, below every CNN result.
  constexpr double kCnnThreshold = 0.84;
  constexpr double kMarginOverMlp = 0.01;
  const char* const names[2] = {"cnn", "mlp:256,128"};
  double accuracy[2] = {0, 0};
  for (int m = 0; m < 2; ++m) {
    SCOPED_TRACE(names[m]);
    auto model = CreateModel(names[m]);
    ASSERT_TRUE(model.ok()) << model.status();
    const auto start = std::chrono::steady_clock::now();
    const ParameterMap params = TrainOneEpoch(**model, train, kTrainExamples, kBatch, kLearningRate,
                                              kTailFraction, kTailFactor);
    ASSERT_FALSE(params.empty());
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    auto eval = (*model)->Evaluate(params, test.features, test.labels);
    ASSERT_TRUE(eval.ok()) << eval.status();
    accuracy[m] = eval->accuracy;
    RecordProperty(std::string(names[m]) + "_test_accuracy", std::to_string(eval->accuracy));
    std::printf(
        "%s, 1 epoch SGD on %zu examples (batch %d, lr %.2f, last quarter x %.1f): "
        "accuracy %.4f on %zu test examples, loss %.4f, %.2f s\n",
        names[m], kTrainExamples, kBatch, kLearningRate, kTailFactor, eval->accuracy, kTestExamples,
        eval->mean_loss, seconds);
  }
  EXPECT_GE(accuracy[0], kCnnThreshold);
  EXPECT_GE(accuracy[0], accuracy[1] + kMarginOverMlp);
}

}  // namespace
}  // namespace dcasgd::model
