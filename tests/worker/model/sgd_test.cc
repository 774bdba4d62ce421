// Plain single-process SGD on small synthetic problems: the models learn.

#include <algorithm>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "services/worker/model/model.h"
#include "tests/worker/model/model_testing.h"

namespace dcasgd::model {
namespace {

struct TrainingRun {
  std::vector<double> epoch_losses;  // mean minibatch loss of every epoch
  ParameterMap params;
};

// Shuffled minibatch SGD from the model's seeded initial weights.
TrainingRun Train(const Model& model, const testing::Dataset& data, int epochs, int batch,
                  float learning_rate, uint64_t seed) {
  TrainingRun run;
  auto params = InitializeParameters(model.ParameterSpecs(seed));
  EXPECT_TRUE(params.ok()) << params.status();
  if (!params.ok()) return run;
  run.params = std::move(*params);
  const int n = static_cast<int>(data.labels.size());
  const int dim = model.input_dim();
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed);
  ParameterMap gradients;
  std::vector<float> features;
  std::vector<int32_t> labels;
  for (int epoch = 0; epoch < epochs; ++epoch) {
    std::shuffle(order.begin(), order.end(), rng);
    double loss_sum = 0;
    int batches = 0;
    for (int begin = 0; begin < n; begin += batch) {
      features.clear();
      labels.clear();
      for (int k = begin; k < std::min(n, begin + batch); ++k) {
        const int e = order[k];
        features.insert(features.end(), data.features.begin() + e * dim,
                        data.features.begin() + (e + 1) * dim);
        labels.push_back(data.labels[e]);
      }
      auto loss = model.Gradient(run.params, features, labels, &gradients);
      EXPECT_TRUE(loss.ok()) << loss.status();
      if (!loss.ok()) return run;
      loss_sum += *loss;
      ++batches;
      testing::SgdStep(gradients, learning_rate, &run.params);
    }
    run.epoch_losses.push_back(loss_sum / batches);
  }
  return run;
}

class SeparableBlobs : public ::testing::TestWithParam<std::string> {};

TEST_P(SeparableBlobs, SgdDrivesLossDownAndFitsEveryExample) {
  auto model = CreateModel(GetParam(), 16, 4);
  ASSERT_TRUE(model.ok()) << model.status();
  const testing::Dataset data = testing::BlobDataset(400, 16, 4, 3.0f, 0.3f, 11);
  auto before = (*model)->Evaluate(InitializeParameters((*model)->ParameterSpecs(12)).value(),
                                   data.features, data.labels);
  ASSERT_TRUE(before.ok());

  const TrainingRun run = Train(**model, data, 10, 16, 0.1f, 12);
  ASSERT_EQ(run.epoch_losses.size(), 10u);
  EXPECT_LT(run.epoch_losses.back(), run.epoch_losses.front());
  EXPECT_LT(run.epoch_losses.back(), 0.1 * before->mean_loss);

  auto after = (*model)->Evaluate(run.params, data.features, data.labels, 64);
  ASSERT_TRUE(after.ok());
  EXPECT_LT(after->mean_loss, 0.1 * before->mean_loss);
  EXPECT_EQ(after->accuracy, 1.0);
}

// 16 features: the CNN reads them as a 4 x 4 image.
INSTANTIATE_TEST_SUITE_P(Models, SeparableBlobs,
                         ::testing::Values("softmax", "mlp:32,16", "cnn:4,8,16"),
                         [](const ::testing::TestParamInfo<std::string>& test) {
                           return test.param.substr(0, test.param.find(':'));
                         });

// XOR of two coordinates: four clusters no line separates. Hidden layers can
// fit it; softmax regression cannot get more than 3 of the 4 clusters right.
testing::Dataset XorDataset(int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> noise(0.0f, 0.1f);
  testing::Dataset data;
  for (int i = 0; i < n; ++i) {
    const int a = i % 2;
    const int b = (i / 2) % 2;
    data.features.push_back(static_cast<float>(a) + noise(rng));
    data.features.push_back(static_cast<float>(b) + noise(rng));
    data.labels.push_back(a ^ b);
  }
  return data;
}

TEST(Xor, MlpFitsItAndSoftmaxRegressionCannot) {
  const testing::Dataset data = XorDataset(200, 21);
  auto mlp = CreateModel("mlp:16,16", 2, 2);
  auto softmax = CreateModel("softmax", 2, 2);
  ASSERT_TRUE(mlp.ok() && softmax.ok());

  const TrainingRun mlp_run = Train(**mlp, data, 200, 10, 0.1f, 22);
  auto mlp_eval = (*mlp)->Evaluate(mlp_run.params, data.features, data.labels);
  ASSERT_TRUE(mlp_eval.ok());
  EXPECT_EQ(mlp_eval->accuracy, 1.0);
  EXPECT_LT(mlp_eval->mean_loss, 0.1);

  const TrainingRun softmax_run = Train(**softmax, data, 200, 10, 0.1f, 22);
  auto softmax_eval = (*softmax)->Evaluate(softmax_run.params, data.features, data.labels);
  ASSERT_TRUE(softmax_eval.ok());
  EXPECT_LE(softmax_eval->accuracy, 0.8);
  EXPECT_GT(softmax_eval->mean_loss, 0.5);
}

}  // namespace
}  // namespace dcasgd::model
