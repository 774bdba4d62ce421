#ifndef DCASGD_SERVICES_WORKER_MODEL_FEED_FORWARD_H_
#define DCASGD_SERVICES_WORKER_MODEL_FEED_FORWARD_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/tensor.h"
#include "services/worker/model/model.h"

namespace dcasgd::model {

// A stack of dense layers y = x W + b, ReLU after every layer but the last,
// softmax cross-entropy on the last. Layer l owns tensors "<prefix_l>/w"
// [fan_in, fan_out] (row-major) and "<prefix_l>/b" [fan_out]. The math runs in
// float32 on Eigen maps over the flat parameter vectors (weights are never
// copied), with one matrix product per layer and batch.
//
// Thread-safe (see Model). Constant after construction.
class FeedForwardNetwork : public Model {
 public:
  std::string name() const override { return name_; }
  int input_dim() const override { return widths_.front(); }
  int num_classes() const override { return widths_.back(); }

  std::vector<TensorSpec> ParameterSpecs(uint64_t seed) const override;
  absl::StatusOr<float> Gradient(const ParameterMap& params, absl::Span<const float> features,
                                 absl::Span<const int32_t> labels,
                                 ParameterMap* gradients) const override;
  absl::StatusOr<Evaluation> Evaluate(const ParameterMap& params, absl::Span<const float> features,
                                      absl::Span<const int32_t> labels,
                                      int batch_size) const override;

 protected:
  // `widths` = {input_dim, hidden..., num_classes}; `prefixes` names the
  // widths.size() - 1 layers. Sizes must be >= 1 (CHECKed: the factory
  // validates user input before calling this).
  FeedForwardNetwork(std::string name, std::vector<std::string> prefixes, std::vector<int> widths);

 private:
  struct Layer {
    std::string weights_name;
    std::string bias_name;
    int fan_in;
    int fan_out;
  };
  // Where one layer's tensors live inside a ParameterMap.
  struct LayerWeights {
    const float* weights;
    const float* bias;
  };

  static std::vector<Layer> MakeLayers(const std::vector<std::string>& prefixes,
                                       const std::vector<int>& widths);
  // Finds every layer's tensors in `params`; INVALID_ARGUMENT naming the
  // tensor if one is missing or has the wrong length.
  absl::StatusOr<std::vector<LayerWeights>> FindWeights(const ParameterMap& params) const;

  const std::string name_;
  const std::vector<int> widths_;
  const std::vector<Layer> layers_;
};

// Multinomial logistic regression: one dense layer "softmax/{w,b}".
class SoftmaxRegression final : public FeedForwardNetwork {
 public:
  explicit SoftmaxRegression(int input_dim = kFashionMnistFeatures,
                             int num_classes = kFashionMnistClasses);
};

// A ReLU multi-layer perceptron: layers "mlp/fc0" .. "mlp/fc<H>" for H
// hidden sizes (the last one is the output layer). hidden_sizes must be
// non-empty.
class Mlp final : public FeedForwardNetwork {
 public:
  explicit Mlp(std::vector<int> hidden_sizes, int input_dim = kFashionMnistFeatures,
               int num_classes = kFashionMnistClasses);
};

}  // namespace dcasgd::model

#endif  // DCASGD_SERVICES_WORKER_MODEL_FEED_FORWARD_H_
