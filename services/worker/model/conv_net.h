#ifndef DCASGD_SERVICES_WORKER_MODEL_CONV_NET_H_
#define DCASGD_SERVICES_WORKER_MODEL_CONV_NET_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/tensor.h"
#include "services/worker/model/model.h"

namespace dcasgd::model {

// A small convolutional network for square one-channel images (Fashion-MNIST:
// the 784 features of an example are its 28 x 28 pixels, row by row):
//
//   conv1  5x5, 1 -> C1 channels, stride 1, zero padding 2 ("same"), ReLU
//   pool1  2x2 max, stride 2
//   conv2  5x5, C1 -> C2 channels, stride 1, padding 2, ReLU
//   pool2  2x2 max, stride 2
//   fc1    dense (S/4)^2 * C2 -> H, ReLU
//   fc2    dense H -> num_classes, softmax cross-entropy
//
// (S = image side; pooling floors odd sides, dropping the last row and
// column.) Tensors, row-major:
//   cnn/conv1/w [5, 5, 1, C1]   cnn/conv1/b [C1]
//   cnn/conv2/w [5, 5, C1, C2]  cnn/conv2/b [C2]
//   cnn/fc1/w   [F, H]          cnn/fc1/b   [H]     F = (S/4)^2 * C2
//   cnn/fc2/w   [H, classes]    cnn/fc2/b   [classes]
// A convolution weight w[ky][kx][ci][co] multiplies input channel ci at
// offset (ky - 2, kx - 2) from the output pixel; fc1's input is pool2's
// output in (y, x, channel) order.
//
// Math: activations are kept channels-last, so a convolution is one float32
// Eigen matrix product of the unrolled 5x5 patches ("im2col", batch x pixels
// rows by 25 * C_in columns) with the weights viewed as a [25 * C_in, C_out]
// matrix, forward and backward. Large batches are processed in passes of
// examples_per_pass() examples, so the scratch memory of one call stays
// bounded (64 MiB by default) whatever the batch size; gradients are summed over
// the passes. Every thread that calls Gradient or Evaluate keeps that scratch
// (thread_local) until it exits, so the buffers are allocated once, not on
// every step.
//
// Thread-safe (see Model): constant after construction, and calls on
// different threads use different scratch.
class ConvNet final : public Model {
 public:
  static constexpr int kKernelSide = 5;
  static constexpr int kPadding = 2;
  // The smallest image side that leaves pool2 at least 1 x 1.
  static constexpr int kMinImageSide = 4;
  // Bounds every size derived from the image (fc1's fan-in fits an int).
  static constexpr int kMaxImageSide = 1024;

  // The side of the square image with `input_dim` pixels. INVALID_ARGUMENT
  // unless input_dim is a perfect square of a side in [kMinImageSide,
  // kMaxImageSide].
  static absl::StatusOr<int> ImageSide(int input_dim);

  // The default bound on one pass's scratch, in floats (64 MiB).
  static constexpr size_t kDefaultScratchFloats = size_t{16} << 20;

  // Sizes must be >= 1 and image_side in [kMinImageSide, kMaxImageSide]
  // (CHECKed: the factory validates user input before calling this).
  // `scratch_floats` bounds one pass's activations and gradients (at least
  // one example per pass whatever the bound).
  ConvNet(int conv1_channels, int conv2_channels, int hidden, int image_side = 28,
          int num_classes = kFashionMnistClasses, size_t scratch_floats = kDefaultScratchFloats);

  std::string name() const override { return name_; }
  int input_dim() const override { return side_ * side_; }
  int num_classes() const override { return num_classes_; }

  std::vector<TensorSpec> ParameterSpecs(uint64_t seed) const override;
  absl::StatusOr<float> Gradient(const ParameterMap& params, absl::Span<const float> features,
                                 absl::Span<const int32_t> labels,
                                 ParameterMap* gradients) const override;
  absl::StatusOr<Evaluation> Evaluate(const ParameterMap& params, absl::Span<const float> features,
                                      absl::Span<const int32_t> labels,
                                      int batch_size) const override;

  // How many examples one forward/backward pass holds (>= 1).
  int examples_per_pass() const { return examples_per_pass_; }

 private:
  struct Activations;
  // The calling thread's scratch, kept between calls (see the class comment).
  static Activations& ThreadScratch();
  // The data of every tensor, in declaration order (see ParameterSpecs).
  using Weights = std::vector<const float*>;

  // Finds every tensor in `params`; INVALID_ARGUMENT naming the tensor if one
  // is missing or has the wrong length.
  absl::StatusOr<Weights> FindWeights(const ParameterMap& params) const;
  // Runs `examples` examples of `input` through the network, leaving every
  // layer's output (and pooling choices) in `*a`, the logits in a->logits.
  void Forward(const Weights& w, const float* input, int examples, Activations* a) const;
  // Given d(loss)/d(logits) in a->logits (of the Forward that filled `*a`),
  // adds the pass's gradient to every tensor's gradient in `grads`.
  void Backward(const Weights& w, int examples, Activations* a,
                const std::vector<float*>& grads) const;

  const int conv1_channels_;
  const int conv2_channels_;
  const int hidden_;
  const int side_;        // input image side S
  const int conv1_side_;  // conv1 output side (= S)
  const int pool1_side_;  // S / 2
  const int conv2_side_;  // = pool1_side_
  const int pool2_side_;  // S / 2 / 2
  const int flat_;        // pool2_side_^2 * C2: fc1's fan-in
  const int num_classes_;
  const std::string name_;
  const std::vector<std::string> tensor_names_;
  const std::vector<std::vector<int64_t>> tensor_shapes_;
  const std::vector<size_t> tensor_lengths_;
  const int examples_per_pass_;
};

}  // namespace dcasgd::model

#endif  // DCASGD_SERVICES_WORKER_MODEL_CONV_NET_H_
