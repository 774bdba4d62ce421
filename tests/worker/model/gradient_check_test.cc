// Finite-difference checks of the models' gradients. The reference is an
// independent double-precision forward pass written with plain loops; its
// central differences are compared with the model's float32 backprop.

#include <cmath>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "gtest/gtest.h"
#include "services/worker/model/model.h"
#include "tests/worker/model/model_testing.h"

namespace dcasgd::model {
namespace {

using testing::DoubleMap;
using testing::RandomParameters;

struct ReferenceLayer {
  std::string weights;
  std::string bias;
  int64_t fan_in;
  int64_t fan_out;
};

// Layers from the specs: pairs (w [in, out], b [out]) in declaration order.
std::vector<ReferenceLayer> ReferenceLayers(const std::vector<TensorSpec>& specs) {
  std::vector<ReferenceLayer> layers;
  for (size_t i = 0; i + 1 < specs.size(); i += 2) {
    layers.push_back({specs[i].name, specs[i + 1].name, specs[i].shape[0], specs[i].shape[1]});
  }
  return layers;
}

// Mean softmax cross-entropy of a dense ReLU network, in double precision.
double ReferenceLoss(const std::vector<ReferenceLayer>& layers, const DoubleMap& params,
                     const testing::Dataset& data) {
  const size_t n = data.labels.size();
  const int64_t dim = layers.front().fan_in;
  double total = 0;
  for (size_t e = 0; e < n; ++e) {
    std::vector<double> a(data.features.begin() + e * dim, data.features.begin() + (e + 1) * dim);
    for (size_t l = 0; l < layers.size(); ++l) {
      const std::vector<double>& w = params.at(layers[l].weights);
      const std::vector<double>& b = params.at(layers[l].bias);
      std::vector<double> z(b);
      for (int64_t i = 0; i < layers[l].fan_in; ++i) {
        for (int64_t j = 0; j < layers[l].fan_out; ++j) z[j] += a[i] * w[i * layers[l].fan_out + j];
      }
      if (l + 1 < layers.size()) {
        for (double& v : z) v = std::max(v, 0.0);
      }
      a = std::move(z);
    }
    double max = a[0];
    for (double v : a) max = std::max(max, v);
    double sum = 0;
    for (double v : a) sum += std::exp(v - max);
    total += max + std::log(sum) - a[data.labels[e]];
  }
  return total / static_cast<double>(n);
}

// (model name, input_dim, num_classes, batch size)
using GradientCase = std::tuple<std::string, int, int, int>;

class GradientCheck : public ::testing::TestWithParam<GradientCase> {};

TEST_P(GradientCheck, MatchesCentralDifferencesOfDoubleReference) {
  const auto& [name, input_dim, classes, batch] = GetParam();
  auto model = CreateModel(name, input_dim, classes);
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<TensorSpec> specs = (*model)->ParameterSpecs(1);
  const ParameterMap params = RandomParameters(specs, 2);
  const testing::Dataset data = testing::RandomDataset(batch, input_dim, classes, 3);

  ParameterMap gradients;
  auto loss = (*model)->Gradient(params, data.features, data.labels, &gradients);
  ASSERT_TRUE(loss.ok()) << loss.status();

  const std::vector<ReferenceLayer> layers = ReferenceLayers(specs);
  const DoubleMap reference = testing::ToDouble(params);
  const double reference_loss = ReferenceLoss(layers, reference, data);
  EXPECT_NEAR(*loss, reference_loss, 1e-5 * std::max(1.0, reference_loss));

  // Every tensor; all elements of small ones, a seeded sample of big ones.
  testing::ExpectGradientsMatchCentralDifferences(
      specs, gradients, reference,
      [&](const DoubleMap& p) { return ReferenceLoss(layers, p, data); },
      /*max_elements_per_tensor=*/150, /*epsilon=*/1e-5);
}

INSTANTIATE_TEST_SUITE_P(
    Models, GradientCheck,
    ::testing::Values(GradientCase{"softmax", 784, 10, 8}, GradientCase{"softmax", 784, 10, 1},
                      GradientCase{"softmax", 5, 3, 4}, GradientCase{"mlp:16,12", 20, 5, 7},
                      GradientCase{"mlp:16,12", 20, 5, 1}, GradientCase{"mlp:32,16", 784, 10, 6},
                      GradientCase{"mlp:3", 4, 2, 6}, GradientCase{"mlp:9,7,6", 8, 4, 5}),
    [](const ::testing::TestParamInfo<GradientCase>& test) {
      std::string label = std::get<0>(test.param);
      for (char& c : label) {
        if (c == ':' || c == ',') c = '_';
      }
      return label + "_in" + std::to_string(std::get<1>(test.param)) + "_out" +
             std::to_string(std::get<2>(test.param)) + "_batch" +
             std::to_string(std::get<3>(test.param));
    });

}  // namespace
}  // namespace dcasgd::model
