#ifndef DCASGD_SERVICES_WORKER_MODEL_MODEL_INTERNAL_H_
#define DCASGD_SERVICES_WORKER_MODEL_MODEL_INTERNAL_H_

// Pieces the models of this folder share: the Eigen types, seeding, input
// validation, the softmax cross-entropy and the handling of the gradient map.
// Internal to services/worker/model (not part of the Model interface). Pure
// functions, thread-safe.

#include <Eigen/Core>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "services/worker/model/model.h"

namespace dcasgd::model::internal {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMatrixMap = Eigen::Map<const RowMatrix>;
using MatrixMap = Eigen::Map<RowMatrix>;
using ConstRowVectorMap = Eigen::Map<const Eigen::RowVectorXf>;
using RowVectorMap = Eigen::Map<Eigen::RowVectorXf>;

// Stddev of the output layer's initial weights: small, so the first
// predictions are close to uniform (loss ~ log(num_classes)).
inline constexpr float kOutputInitStddev = 0.01f;

// SplitMix64 finaliser: turns (seed, tensor index) into well-spread,
// independent per-tensor seeds.
uint64_t MixSeed(uint64_t seed, uint64_t index);

// A normal(0, stddev) weight tensor seeded with MixSeed(seed, index), and a
// zero bias tensor.
TensorSpec NormalWeights(std::string name, std::vector<int64_t> shape, float stddev, uint64_t seed,
                         uint64_t index);
TensorSpec ZeroBias(std::string name, int64_t length);

// The data of tensor `tensor` in `params`. INVALID_ARGUMENT naming the model
// and the tensor if it is missing or does not have exactly `length` elements.
absl::StatusOr<const float*> FindTensor(const ParameterMap& params, absl::string_view model_name,
                                        const std::string& tensor, size_t length);

// INVALID_ARGUMENT (naming the model) unless the batch is non-empty, the
// feature count is labels.size() * input_dim and every label is in
// [0, num_classes).
absl::Status CheckBatch(absl::string_view model_name, int input_dim, int num_classes,
                        absl::Span<const float> features, absl::Span<const int32_t> labels);

// INVALID_ARGUMENT unless batch_size >= 1 (Model::Evaluate).
absl::Status CheckEvaluationBatchSize(absl::string_view model_name, int batch_size);

// Replaces every row of `logits` by its softmax, in place, and returns the
// summed cross-entropy -log p[label] over the rows. Subtracting the row
// maximum first keeps exp() from overflowing; log-sum-exp then gives the loss
// without taking the log of a rounded probability. Adds the number of rows
// whose arg-max (first on ties) equals the label to `*correct`.
double SoftmaxCrossEntropy(Eigen::Ref<RowMatrix> logits, absl::Span<const int32_t> labels,
                           int64_t* correct);

// Turns the softmax probabilities left by SoftmaxCrossEntropy into
// d(mean loss)/d(logits) = (softmax - one_hot(label)) * scale, with
// scale = 1 / (examples in the whole batch).
void SoftmaxToLogitGradient(absl::Span<const int32_t> labels, float scale,
                            Eigen::Ref<RowMatrix> probabilities);

// Makes `*gradients` hold exactly the tensors `names` with `lengths`
// elements (removing other entries, resizing and reusing existing buffers)
// and returns their data pointers in the same order. Values are unspecified
// unless `zero` is set. The pointers stay valid until the map is modified.
std::vector<float*> ResetGradients(const std::vector<std::string>& names,
                                   const std::vector<size_t>& lengths, bool zero,
                                   ParameterMap* gradients);

}  // namespace dcasgd::model::internal

#endif  // DCASGD_SERVICES_WORKER_MODEL_MODEL_INTERNAL_H_
