#ifndef DCASGD_TESTS_WORKER_MODEL_MODEL_TESTING_H_
#define DCASGD_TESTS_WORKER_MODEL_MODEL_TESTING_H_

// Small helpers shared by the model tests: seeded synthetic data and a plain
// SGD step. Header-only; not part of any library.

#include <cstdint>
#include <random>
#include <vector>

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

}  // namespace dcasgd::model::testing

#endif  // DCASGD_TESTS_WORKER_MODEL_MODEL_TESTING_H_
