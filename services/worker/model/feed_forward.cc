#include "services/worker/model/feed_forward.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "services/worker/model/model_internal.h"

namespace dcasgd::model {

using internal::ConstMatrixMap;
using internal::ConstRowVectorMap;
using internal::MatrixMap;
using internal::RowMatrix;
using internal::RowVectorMap;

std::vector<FeedForwardNetwork::Layer> FeedForwardNetwork::MakeLayers(
    const std::vector<std::string>& prefixes, const std::vector<int>& widths) {
  DCASGD_CHECK(widths.size() >= 2);
  DCASGD_CHECK(prefixes.size() == widths.size() - 1);
  std::vector<FeedForwardNetwork::Layer> layers;
  for (size_t l = 0; l < prefixes.size(); ++l) {
    DCASGD_CHECK(widths[l] >= 1 && widths[l + 1] >= 1);
    layers.push_back({absl::StrCat(prefixes[l], "/w"), absl::StrCat(prefixes[l], "/b"), widths[l],
                      widths[l + 1]});
  }
  return layers;
}

FeedForwardNetwork::FeedForwardNetwork(std::string name, std::vector<std::string> prefixes,
                                       std::vector<int> widths)
    : name_(std::move(name)), widths_(widths), layers_(MakeLayers(prefixes, widths)) {}

std::vector<TensorSpec> FeedForwardNetwork::ParameterSpecs(uint64_t seed) const {
  std::vector<TensorSpec> specs;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = layers_[l];
    const bool output = l + 1 == layers_.size();
    // He et al. 2015 for layers followed by a ReLU.
    const float stddev =
        output ? internal::kOutputInitStddev : std::sqrt(2.0f / static_cast<float>(layer.fan_in));
    specs.push_back(internal::NormalWeights(layer.weights_name, {layer.fan_in, layer.fan_out},
                                            stddev, seed, l));
    specs.push_back(internal::ZeroBias(layer.bias_name, layer.fan_out));
  }
  return specs;
}

absl::StatusOr<std::vector<FeedForwardNetwork::LayerWeights>> FeedForwardNetwork::FindWeights(
    const ParameterMap& params) const {
  std::vector<LayerWeights> weights;
  weights.reserve(layers_.size());
  for (const Layer& layer : layers_) {
    LayerWeights w;
    ASSIGN_OR_RETURN(w.weights, internal::FindTensor(params, name_, layer.weights_name,
                                                     static_cast<size_t>(layer.fan_in) *
                                                         static_cast<size_t>(layer.fan_out)));
    ASSIGN_OR_RETURN(w.bias, internal::FindTensor(params, name_, layer.bias_name,
                                                  static_cast<size_t>(layer.fan_out)));
    weights.push_back(w);
  }
  return weights;
}

namespace {

// Runs the layers on `input` (N x input_dim). Leaves the post-ReLU output of
// hidden layer l in (*hidden)[l] and the last layer's output in *logits.
template <typename Layers, typename Weights>
void Forward(const Layers& layers, const Weights& weights, const ConstMatrixMap& input,
             std::vector<RowMatrix>* hidden, RowMatrix* logits) {
  hidden->resize(layers.size() - 1);
  for (size_t l = 0; l < layers.size(); ++l) {
    const ConstMatrixMap w(weights[l].weights, layers[l].fan_in, layers[l].fan_out);
    const ConstRowVectorMap b(weights[l].bias, layers[l].fan_out);
    RowMatrix& out = l + 1 == layers.size() ? *logits : (*hidden)[l];
    if (l == 0) {
      out.noalias() = input * w;
    } else {
      out.noalias() = (*hidden)[l - 1] * w;
    }
    out.rowwise() += b;
    if (l + 1 < layers.size()) out = out.cwiseMax(0.0f);
  }
}

}  // namespace

absl::StatusOr<float> FeedForwardNetwork::Gradient(const ParameterMap& params,
                                                   absl::Span<const float> features,
                                                   absl::Span<const int32_t> labels,
                                                   ParameterMap* gradients) const {
  ASSIGN_OR_RETURN(const std::vector<LayerWeights> weights, FindWeights(params));
  RETURN_IF_ERROR(internal::CheckBatch(name_, input_dim(), num_classes(), features, labels));
  const Eigen::Index n = static_cast<Eigen::Index>(labels.size());
  const ConstMatrixMap input(features.data(), n, input_dim());

  std::vector<RowMatrix> hidden;
  RowMatrix delta;  // d(loss)/d(layer output), N x fan_out, walking backwards
  Forward(layers_, weights, input, &hidden, &delta);
  int64_t correct = 0;
  const double loss_sum = internal::SoftmaxCrossEntropy(delta, labels, &correct);

  // d(mean loss)/d(logits) = (softmax - one_hot(label)) / N.
  internal::SoftmaxToLogitGradient(labels, 1.0f / static_cast<float>(n), delta);

  std::vector<std::string> names;
  std::vector<size_t> lengths;
  for (const Layer& layer : layers_) {
    names.push_back(layer.weights_name);
    lengths.push_back(static_cast<size_t>(layer.fan_in) * static_cast<size_t>(layer.fan_out));
    names.push_back(layer.bias_name);
    lengths.push_back(static_cast<size_t>(layer.fan_out));
  }
  const std::vector<float*> grad = internal::ResetGradients(names, lengths, false, gradients);
  for (size_t l = layers_.size(); l-- > 0;) {
    const Layer& layer = layers_[l];
    MatrixMap dw(grad[2 * l], layer.fan_in, layer.fan_out);
    RowVectorMap db(grad[2 * l + 1], layer.fan_out);
    if (l == 0) {
      dw.noalias() = input.transpose() * delta;
    } else {
      dw.noalias() = hidden[l - 1].transpose() * delta;
    }
    db = delta.colwise().sum();
    if (l == 0) break;
    // Back through the weights, then through the ReLU: its derivative is 1
    // where the (post-ReLU) activation is positive, else 0.
    const ConstMatrixMap w(weights[l].weights, layer.fan_in, layer.fan_out);
    RowMatrix delta_below = delta * w.transpose();
    delta = (hidden[l - 1].array() > 0.0f).select(delta_below.array(), 0.0f).matrix();
  }
  return static_cast<float>(loss_sum / static_cast<double>(n));
}

absl::StatusOr<Evaluation> FeedForwardNetwork::Evaluate(const ParameterMap& params,
                                                        absl::Span<const float> features,
                                                        absl::Span<const int32_t> labels,
                                                        int batch_size) const {
  RETURN_IF_ERROR(internal::CheckEvaluationBatchSize(name_, batch_size));
  ASSIGN_OR_RETURN(const std::vector<LayerWeights> weights, FindWeights(params));
  RETURN_IF_ERROR(internal::CheckBatch(name_, input_dim(), num_classes(), features, labels));

  std::vector<RowMatrix> hidden;
  RowMatrix logits;
  double loss_sum = 0;
  int64_t correct = 0;
  const size_t total = labels.size();
  for (size_t begin = 0; begin < total; begin += static_cast<size_t>(batch_size)) {
    const size_t count = std::min(total - begin, static_cast<size_t>(batch_size));
    const ConstMatrixMap input(features.data() + begin * static_cast<size_t>(input_dim()),
                               static_cast<Eigen::Index>(count), input_dim());
    Forward(layers_, weights, input, &hidden, &logits);
    loss_sum += internal::SoftmaxCrossEntropy(logits, labels.subspan(begin, count), &correct);
  }
  Evaluation result;
  result.examples = static_cast<int64_t>(total);
  result.mean_loss = loss_sum / static_cast<double>(total);
  result.accuracy = static_cast<double>(correct) / static_cast<double>(total);
  return result;
}

namespace {

std::vector<std::string> MlpPrefixes(size_t hidden_layers) {
  std::vector<std::string> prefixes;
  for (size_t l = 0; l <= hidden_layers; ++l) prefixes.push_back(absl::StrCat("mlp/fc", l));
  return prefixes;
}

std::vector<int> MlpWidths(int input_dim, const std::vector<int>& hidden_sizes, int num_classes) {
  DCASGD_CHECK(!hidden_sizes.empty());
  std::vector<int> widths = {input_dim};
  widths.insert(widths.end(), hidden_sizes.begin(), hidden_sizes.end());
  widths.push_back(num_classes);
  return widths;
}

}  // namespace

SoftmaxRegression::SoftmaxRegression(int input_dim, int num_classes)
    : FeedForwardNetwork("softmax", {"softmax"}, {input_dim, num_classes}) {}

Mlp::Mlp(std::vector<int> hidden_sizes, int input_dim, int num_classes)
    : FeedForwardNetwork(absl::StrCat("mlp:", absl::StrJoin(hidden_sizes, ",")),
                         MlpPrefixes(hidden_sizes.size()),
                         MlpWidths(input_dim, hidden_sizes, num_classes)) {}

}  // namespace dcasgd::model
