#ifndef DCASGD_TESTS_WORKER_MODEL_MODEL_TESTING_H_
#define DCASGD_TESTS_WORKER_MODEL_MODEL_TESTING_H_

// Small helpers shared by the model tests: seeded synthetic data, random
// parameters, a plain SGD step and the finite-difference check of a
// gradient. Header-only; not part of any library.

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "gtest/gtest.h"
#include "services/worker/model/model.h"

namespace dcasgd::model::testing {

// A labelled set: `features` is N x dim row-major.
struct Dataset {
  std::vector<float> features;
  std::vector<int32_t> labels;
};

// N examples with features uniform in [0, 1) and labels uniform in [0, classes).
inline Dataset RandomDataset(int n, int dim, int classes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> feature(0.0f, 1.0f);
  std::uniform_int_distribution<int32_t> label(0, classes - 1);
  Dataset data;
  data.features.resize(static_cast<size_t>(n) * dim);
  for (float& v : data.features) v = feature(rng);
  for (int i = 0; i < n; ++i) data.labels.push_back(label(rng));
  return data;
}

// Gaussian blobs: class c is centred at `separation` * e_c (dim >= classes)
// with per-coordinate noise `noise`. Linearly separable when separation is
// large against noise.
inline Dataset BlobDataset(int n, int dim, int classes, float separation, float noise,
                           uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> gauss(0.0f, noise);
  Dataset data;
  for (int i = 0; i < n; ++i) {
    const int32_t c = i % classes;
    for (int d = 0; d < dim; ++d) {
      data.features.push_back((d == c ? separation : 0.0f) + gauss(rng));
    }
    data.labels.push_back(c);
  }
  return data;
}

// params[name] -= learning_rate * gradients[name], for every gradient.
inline void SgdStep(const ParameterMap& gradients, float learning_rate, ParameterMap* params) {
  for (const auto& [name, grad] : gradients) {
    std::vector<float>& w = params->at(name);
    for (size_t i = 0; i < grad.size(); ++i) w[i] -= learning_rate * grad[i];
  }
}

// Every element random (biases too), scaled by the fan-in (all dimensions
// but the last; 0.1 for biases), so that every gradient element is
// exercised.
inline ParameterMap RandomParameters(const std::vector<TensorSpec>& specs, uint64_t seed) {
  std::mt19937_64 rng(seed);
  ParameterMap params;
  for (const TensorSpec& spec : specs) {
    double fan_in = 1;
    for (size_t d = 0; d + 1 < spec.shape.size(); ++d) fan_in *= double(spec.shape[d]);
    const double stddev = spec.shape.size() >= 2 ? 1.0 / std::sqrt(fan_in) : 0.1;
    std::normal_distribution<float> gauss(0.0f, static_cast<float>(stddev));
    std::vector<float>& values = params[spec.name];
    values.resize(spec.num_elements());
    for (float& v : values) v = gauss(rng);
  }
  return params;
}

// Parameters in double, for a reference forward pass.
using DoubleMap = absl::flat_hash_map<std::string, std::vector<double>>;

inline DoubleMap ToDouble(const ParameterMap& params) {
  DoubleMap reference;
  for (const auto& [tensor, values] : params) {
    reference[tensor].assign(values.begin(), values.end());
  }
  return reference;
}

// Compares the model's `gradients` of every tensor of `specs` with central
// differences of `reference_loss` around `params` (a double-precision
// reference: all elements of tensors up to `max_elements_per_tensor`, a
// seeded sample of bigger ones), and checks that the sampled gradients are
// not all zero, so that the check is not vacuous.
inline void ExpectGradientsMatchCentralDifferences(
    const std::vector<TensorSpec>& specs, const ParameterMap& gradients, DoubleMap params,
    const std::function<double(const DoubleMap&)>& reference_loss, size_t max_elements_per_tensor,
    double epsilon) {
  std::mt19937_64 rng(4);
  for (const TensorSpec& spec : specs) {
    SCOPED_TRACE(spec.name);
    ASSERT_TRUE(gradients.contains(spec.name));
    const std::vector<float>& analytic = gradients.at(spec.name);
    ASSERT_EQ(analytic.size(), spec.num_elements());
    std::vector<size_t> indices;
    if (analytic.size() <= max_elements_per_tensor) {
      for (size_t i = 0; i < analytic.size(); ++i) indices.push_back(i);
    } else {
      std::uniform_int_distribution<size_t> pick(0, analytic.size() - 1);
      for (size_t k = 0; k < max_elements_per_tensor; ++k) indices.push_back(pick(rng));
    }
    double numeric_magnitude = 0;
    for (size_t i : indices) {
      std::vector<double>& values = params[spec.name];
      const double saved = values[i];
      values[i] = saved + epsilon;
      const double plus = reference_loss(params);
      values[i] = saved - epsilon;
      const double minus = reference_loss(params);
      values[i] = saved;
      const double numeric = (plus - minus) / (2 * epsilon);
      numeric_magnitude += std::abs(numeric);
      EXPECT_NEAR(analytic[i], numeric, 1e-5 + 1e-3 * std::abs(numeric)) << "element " << i;
    }
    EXPECT_GT(numeric_magnitude / indices.size(), 1e-5);
  }
}

}  // namespace dcasgd::model::testing

#endif  // DCASGD_TESTS_WORKER_MODEL_MODEL_TESTING_H_
