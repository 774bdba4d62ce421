#include "services/worker/model/model_internal.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "base/check.h"

namespace dcasgd::model::internal {

uint64_t MixSeed(uint64_t seed, uint64_t index) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

TensorSpec NormalWeights(std::string name, std::vector<int64_t> shape, float stddev, uint64_t seed,
                         uint64_t index) {
  TensorSpec weights;
  weights.name = std::move(name);
  weights.shape = std::move(shape);
  weights.init.kind = Initializer::Kind::kNormal;
  weights.init.a = 0;
  weights.init.b = stddev;
  weights.init.seed = MixSeed(seed, index);
  return weights;
}

TensorSpec ZeroBias(std::string name, int64_t length) {
  TensorSpec bias;
  bias.name = std::move(name);
  bias.shape = {length};
  bias.init.kind = Initializer::Kind::kZeros;
  return bias;
}

absl::StatusOr<const float*> FindTensor(const ParameterMap& params, absl::string_view model_name,
                                        const std::string& tensor, size_t length) {
  auto it = params.find(tensor);
  if (it == params.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", model_name, "': parameter '", tensor, "' is missing"));
  }
  if (it->second.size() != length) {
    return absl::InvalidArgumentError(absl::StrCat("model '", model_name, "': parameter '", tensor,
                                                   "' has ", it->second.size(),
                                                   " elements, expected ", length));
  }
  return it->second.data();
}

absl::Status CheckBatch(absl::string_view model_name, int input_dim, int num_classes,
                        absl::Span<const float> features, absl::Span<const int32_t> labels) {
  if (labels.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("model '", model_name, "': empty batch"));
  }
  const size_t expected = labels.size() * static_cast<size_t>(input_dim);
  if (features.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", model_name, "': ", features.size(), " feature values for ", labels.size(),
        " labels, expected ", labels.size(), " x ", input_dim, " = ", expected));
  }
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= num_classes) {
      return absl::InvalidArgumentError(absl::StrCat("model '", model_name, "': label ", labels[i],
                                                     " of example ", i, " is not in [0, ",
                                                     num_classes, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckEvaluationBatchSize(absl::string_view model_name, int batch_size) {
  if (batch_size >= 1) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "model '", model_name, "': evaluation batch size must be >= 1, got ", batch_size));
}

double SoftmaxCrossEntropy(Eigen::Ref<RowMatrix> logits, absl::Span<const int32_t> labels,
                           int64_t* correct) {
  double loss = 0;
  for (Eigen::Index i = 0; i < logits.rows(); ++i) {
    auto row = logits.row(i);
    Eigen::Index predicted = 0;
    const float max = row.maxCoeff(&predicted);
    if (predicted == labels[i]) ++*correct;
    row.array() -= max;
    const float shifted_label_logit = row(labels[i]);
    row = row.array().exp();
    const float sum = row.sum();
    loss += std::log(static_cast<double>(sum)) - shifted_label_logit;
    row /= sum;
  }
  return loss;
}

void SoftmaxToLogitGradient(absl::Span<const int32_t> labels, float scale,
                            Eigen::Ref<RowMatrix> probabilities) {
  for (Eigen::Index i = 0; i < probabilities.rows(); ++i) probabilities(i, labels[i]) -= 1.0f;
  probabilities *= scale;
}

std::vector<float*> ResetGradients(const std::vector<std::string>& names,
                                   const std::vector<size_t>& lengths, bool zero,
                                   ParameterMap* gradients) {
  DCASGD_CHECK(names.size() == lengths.size());
  const absl::flat_hash_set<std::string> ours(names.begin(), names.end());
  for (auto it = gradients->begin(); it != gradients->end();) {
    if (ours.contains(it->first)) {
      ++it;
    } else {
      gradients->erase(it++);
    }
  }
  // All insertions come first: an insertion may rehash and move the vectors.
  for (size_t i = 0; i < names.size(); ++i) (*gradients)[names[i]].resize(lengths[i]);
  std::vector<float*> data;
  data.reserve(names.size());
  for (const std::string& name : names) {
    std::vector<float>& values = gradients->find(name)->second;
    if (zero) std::fill(values.begin(), values.end(), 0.0f);
    data.push_back(values.data());
  }
  return data;
}

}  // namespace dcasgd::model::internal
