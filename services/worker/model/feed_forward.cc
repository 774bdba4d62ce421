#include "services/worker/model/feed_forward.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/check.h"
#include "core/status_macros.h"

namespace dcasgd::model {
namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMatrixMap = Eigen::Map<const RowMatrix>;
using MatrixMap = Eigen::Map<RowMatrix>;
using ConstRowVectorMap = Eigen::Map<const Eigen::RowVectorXf>;
using RowVectorMap = Eigen::Map<Eigen::RowVectorXf>;

// Stddev of the output layer's initial weights: small, so the first
// predictions are close to uniform (loss ~ log(num_classes)).
constexpr float kOutputInitStddev = 0.01f;

// SplitMix64 finaliser: turns (seed, tensor index) into well-spread,
// independent per-tensor seeds.
uint64_t MixSeed(uint64_t seed, uint64_t index) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

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

namespace {

// Replaces every row of `logits` by its softmax, in place, and returns the
// summed cross-entropy -log p[label] over the rows. Subtracting the row
// maximum first keeps exp() from overflowing; log-sum-exp then gives the loss
// without taking the log of a rounded probability. Counts rows whose arg-max
// (first on ties) equals the label in `*correct`.
double SoftmaxCrossEntropy(RowMatrix* logits, absl::Span<const int32_t> labels, int64_t* correct) {
  double loss = 0;
  for (Eigen::Index i = 0; i < logits->rows(); ++i) {
    auto row = logits->row(i);
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

}  // namespace

FeedForwardNetwork::FeedForwardNetwork(std::string name, std::vector<std::string> prefixes,
                                       std::vector<int> widths)
    : name_(std::move(name)), widths_(widths), layers_(MakeLayers(prefixes, widths)) {}

std::vector<TensorSpec> FeedForwardNetwork::ParameterSpecs(uint64_t seed) const {
  std::vector<TensorSpec> specs;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = layers_[l];
    const bool output = l + 1 == layers_.size();
    TensorSpec weights;
    weights.name = layer.weights_name;
    weights.shape = {layer.fan_in, layer.fan_out};
    weights.init.kind = Initializer::Kind::kNormal;
    weights.init.a = 0;
    // He et al. 2015 for layers followed by a ReLU.
    weights.init.b = output ? kOutputInitStddev : std::sqrt(2.0f / layer.fan_in);
    weights.init.seed = MixSeed(seed, l);
    specs.push_back(std::move(weights));

    TensorSpec bias;
    bias.name = layer.bias_name;
    bias.shape = {layer.fan_out};
    bias.init.kind = Initializer::Kind::kZeros;
    specs.push_back(std::move(bias));
  }
  return specs;
}

absl::StatusOr<std::vector<FeedForwardNetwork::LayerWeights>> FeedForwardNetwork::FindWeights(
    const ParameterMap& params) const {
  auto find = [&](const std::string& tensor, size_t length) -> absl::StatusOr<const float*> {
    auto it = params.find(tensor);
    if (it == params.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model '", name_, "': parameter '", tensor, "' is missing"));
    }
    if (it->second.size() != length) {
      return absl::InvalidArgumentError(absl::StrCat("model '", name_, "': parameter '", tensor,
                                                     "' has ", it->second.size(),
                                                     " elements, expected ", length));
    }
    return it->second.data();
  };
  std::vector<LayerWeights> weights;
  weights.reserve(layers_.size());
  for (const Layer& layer : layers_) {
    LayerWeights w;
    ASSIGN_OR_RETURN(w.weights,
                     find(layer.weights_name, static_cast<size_t>(layer.fan_in) * layer.fan_out));
    ASSIGN_OR_RETURN(w.bias, find(layer.bias_name, static_cast<size_t>(layer.fan_out)));
    weights.push_back(w);
  }
  return weights;
}

absl::Status FeedForwardNetwork::CheckBatch(absl::Span<const float> features,
                                            absl::Span<const int32_t> labels) const {
  if (labels.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("model '", name_, "': empty batch"));
  }
  if (features.size() != labels.size() * static_cast<size_t>(input_dim())) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", name_, "': ", features.size(), " feature values for ",
                     labels.size(), " labels, expected ", labels.size(), " x ", input_dim(), " = ",
                     labels.size() * static_cast<size_t>(input_dim())));
  }
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= num_classes()) {
      return absl::InvalidArgumentError(absl::StrCat("model '", name_, "': label ", labels[i],
                                                     " of example ", i, " is not in [0, ",
                                                     num_classes(), ")"));
    }
  }
  return absl::OkStatus();
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
  RETURN_IF_ERROR(CheckBatch(features, labels));
  const Eigen::Index n = static_cast<Eigen::Index>(labels.size());
  const ConstMatrixMap input(features.data(), n, input_dim());

  std::vector<RowMatrix> hidden;
  RowMatrix delta;  // d(loss)/d(layer output), N x fan_out, walking backwards
  Forward(layers_, weights, input, &hidden, &delta);
  int64_t correct = 0;
  const double loss_sum = SoftmaxCrossEntropy(&delta, labels, &correct);

  // d(mean loss)/d(logits) = (softmax - one_hot(label)) / N.
  for (Eigen::Index i = 0; i < n; ++i) delta(i, labels[i]) -= 1.0f;
  delta *= 1.0f / static_cast<float>(n);

  // Drop stale entries, then size the model's gradients (reusing buffers).
  for (auto it = gradients->begin(); it != gradients->end();) {
    const bool ours = std::any_of(layers_.begin(), layers_.end(), [&](const Layer& layer) {
      return it->first == layer.weights_name || it->first == layer.bias_name;
    });
    if (ours) {
      ++it;
    } else {
      gradients->erase(it++);
    }
  }
  // All insertions come first: an insertion may rehash and move the vectors.
  for (const Layer& layer : layers_) {
    (*gradients)[layer.weights_name].resize(static_cast<size_t>(layer.fan_in) * layer.fan_out);
    (*gradients)[layer.bias_name].resize(static_cast<size_t>(layer.fan_out));
  }
  for (size_t l = layers_.size(); l-- > 0;) {
    const Layer& layer = layers_[l];
    std::vector<float>& grad_w = gradients->find(layer.weights_name)->second;
    std::vector<float>& grad_b = gradients->find(layer.bias_name)->second;
    MatrixMap dw(grad_w.data(), layer.fan_in, layer.fan_out);
    RowVectorMap db(grad_b.data(), layer.fan_out);
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
  if (batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", name_, "': evaluation batch size must be >= 1, got ", batch_size));
  }
  ASSIGN_OR_RETURN(const std::vector<LayerWeights> weights, FindWeights(params));
  RETURN_IF_ERROR(CheckBatch(features, labels));

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
    loss_sum += SoftmaxCrossEntropy(&logits, labels.subspan(begin, count), &correct);
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
