#include "services/worker/model/conv_net.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/status_macros.h"
#include "services/worker/model/model_internal.h"

namespace dcasgd::model {

using internal::ConstMatrixMap;
using internal::ConstRowVectorMap;
using internal::MatrixMap;
using internal::RowMatrix;
using internal::RowVectorMap;

namespace {

constexpr int kTaps = ConvNet::kKernelSide * ConvNet::kKernelSide;

// Tensor order of ParameterSpecs, Weights and the gradient pointers.
enum TensorIndex { kConv1W, kConv1B, kConv2W, kConv2B, kFc1W, kFc1B, kFc2W, kFc2B, kTensorCount };

int OutputSide(int side) { return side + 2 * ConvNet::kPadding - ConvNet::kKernelSide + 1; }

// Unrolls the 5x5 patches of a channels-last image batch (`examples` images
// of side x side pixels x `channels`, row-major) into `cols`: one row per
// output pixel (example, y, x), holding the patch in (ky, kx, channel) order,
// zero where it reaches into the padding. Each kernel row's in-image part is
// contiguous in both layouts, so it moves as one copy.
void Im2Col(const float* image, int examples, int side, int channels, int out_side, float* cols) {
  const size_t tap_row = size_t{ConvNet::kKernelSide} * channels;
  const size_t row_length = size_t{kTaps} * channels;
  for (int e = 0; e < examples; ++e) {
    const float* src = image + size_t(e) * side * side * channels;
    for (int oy = 0; oy < out_side; ++oy) {
      for (int ox = 0; ox < out_side; ++ox) {
        float* row = cols + ((size_t(e) * out_side + oy) * out_side + ox) * row_length;
        // Kernel columns whose input column lies inside the image.
        const int kx_begin = std::max(0, ConvNet::kPadding - ox);
        const int kx_end = std::min(ConvNet::kKernelSide, side + ConvNet::kPadding - ox);
        for (int ky = 0; ky < ConvNet::kKernelSide; ++ky) {
          float* dst = row + ky * tap_row;
          const int iy = oy + ky - ConvNet::kPadding;
          if (iy < 0 || iy >= side || kx_begin >= kx_end) {
            std::fill(dst, dst + tap_row, 0.0f);
            continue;
          }
          std::fill(dst, dst + size_t(kx_begin) * channels, 0.0f);
          const float* from =
              src + (size_t(iy) * side + (ox + kx_begin - ConvNet::kPadding)) * channels;
          std::copy(from, from + size_t(kx_end - kx_begin) * channels, dst + kx_begin * channels);
          std::fill(dst + size_t(kx_end) * channels, dst + tap_row, 0.0f);
        }
      }
    }
  }
}

// The adjoint of Im2Col: adds every patch row of `cols` back onto the pixels
// it was copied from. `image` must be zeroed (or hold what to add to).
void Col2ImAdd(const float* cols, int examples, int side, int channels, int out_side,
               float* image) {
  const size_t tap_row = size_t{ConvNet::kKernelSide} * channels;
  const size_t row_length = size_t{kTaps} * channels;
  for (int e = 0; e < examples; ++e) {
    float* dst = image + size_t(e) * side * side * channels;
    for (int oy = 0; oy < out_side; ++oy) {
      for (int ox = 0; ox < out_side; ++ox) {
        const float* row = cols + ((size_t(e) * out_side + oy) * out_side + ox) * row_length;
        const int kx_begin = std::max(0, ConvNet::kPadding - ox);
        const int kx_end = std::min(ConvNet::kKernelSide, side + ConvNet::kPadding - ox);
        if (kx_begin >= kx_end) continue;
        const Eigen::Index length = Eigen::Index(kx_end - kx_begin) * channels;
        for (int ky = 0; ky < ConvNet::kKernelSide; ++ky) {
          const int iy = oy + ky - ConvNet::kPadding;
          if (iy < 0 || iy >= side) continue;
          Eigen::Map<Eigen::ArrayXf>(
              dst + (size_t(iy) * side + (ox + kx_begin - ConvNet::kPadding)) * channels, length) +=
              Eigen::Map<const Eigen::ArrayXf>(row + ky * tap_row + kx_begin * channels, length);
        }
      }
    }
  }
}

// 2x2 max pooling with stride 2 of a channels-last batch `in` (`examples`
// images of side x side x channels), followed by ReLU, into `out` (pooled =
// side / 2; an odd side's last row and column are dropped). ReLU is monotone,
// so relu(max(window)) = max(relu(window)): this equals ReLU-then-pool at a
// quarter of the ReLU work.
void MaxPoolRelu(const float* in, int examples, int side, int channels, float* out) {
  const int pooled = side / 2;
  for (int e = 0; e < examples; ++e) {
    for (int py = 0; py < pooled; ++py) {
      for (int px = 0; px < pooled; ++px) {
        const size_t top_left = (size_t(e) * side + 2 * py) * side + 2 * px;
        const float* in0 = in + top_left * channels;
        const float* in1 = in0 + channels;
        const float* in2 = in0 + size_t(side) * channels;
        const float* in3 = in2 + channels;
        float* o = out + ((size_t(e) * pooled + py) * pooled + px) * channels;
        for (int c = 0; c < channels; ++c) {
          o[c] = std::max(std::max(std::max(in0[c], in1[c]), std::max(in2[c], in3[c])), 0.0f);
        }
      }
    }
  }
}

// The backward pass of MaxPoolRelu, given its input `in` and output `out`:
// each output's gradient goes to the first input of its window equal to the
// output (the one max() chose), if the output is positive (else ReLU blocked
// it); every other input gets 0. `d_in` is fully overwritten.
void MaxPoolReluBackward(const float* d_out, const float* in, const float* out, int examples,
                         int side, int channels, float* d_in) {
  const int pooled = side / 2;
  if (side % 2 != 0) {
    // The last row and column belong to no window.
    std::fill(d_in, d_in + size_t(examples) * side * side * channels, 0.0f);
  }
  for (int e = 0; e < examples; ++e) {
    for (int py = 0; py < pooled; ++py) {
      for (int px = 0; px < pooled; ++px) {
        const size_t top_left = (size_t(e) * side + 2 * py) * side + 2 * px;
        const size_t offsets[4] = {top_left * channels, (top_left + 1) * channels,
                                   (top_left + side) * channels, (top_left + side + 1) * channels};
        const float* in0 = in + offsets[0];
        const float* in1 = in + offsets[1];
        const float* in2 = in + offsets[2];
        float* d0 = d_in + offsets[0];
        float* d1 = d_in + offsets[1];
        float* d2 = d_in + offsets[2];
        float* d3 = d_in + offsets[3];
        const size_t o = ((size_t(e) * pooled + py) * pooled + px) * channels;
        // Branch-free, so the compiler vectorises over channels. If no input
        // equals the output (it was clipped to 0), the gradient is 0 anyway.
        for (int c = 0; c < channels; ++c) {
          const float m = out[o + c];
          const float g = m > 0.0f ? d_out[o + c] : 0.0f;
          const bool h0 = in0[c] == m;
          const bool h1 = !h0 && in1[c] == m;
          const bool h2 = !h0 && !h1 && in2[c] == m;
          const bool h3 = !h0 && !h1 && !h2;
          d0[c] = h0 ? g : 0.0f;
          d1[c] = h1 ? g : 0.0f;
          d2[c] = h2 ? g : 0.0f;
          d3[c] = h3 ? g : 0.0f;
        }
      }
    }
  }
}

}  // namespace

// A float buffer viewed as a row-major matrix. It only grows, so a thread
// that keeps its Activations allocates them once instead of every call (large
// fresh allocations are fresh pages from the kernel, and faulting them in
// cost about as much as the arithmetic of a step).
class ScratchMatrix {
 public:
  MatrixMap View(Eigen::Index rows, Eigen::Index cols) {
    const size_t size = static_cast<size_t>(rows) * static_cast<size_t>(cols);
    if (data_.size() < size) data_.resize(size);
    return MatrixMap(data_.data(), rows, cols);
  }

 private:
  std::vector<float> data_;
};

// The per-thread scratch of one pass: every layer's output (rows = examples x
// pixels, channels-last, or examples) and the backward pass's gradients. The
// views are re-made with the same sizes in Forward and Backward.
struct ConvNet::Activations {
  ScratchMatrix cols1;   // conv1's input patches: examples*O1^2 x 25
  ScratchMatrix conv1;   // before ReLU: examples*O1^2 x C1
  ScratchMatrix pool1;   // after ReLU and pooling: examples*Q1^2 x C1
  ScratchMatrix cols2;   // examples*O2^2 x 25*C1
  ScratchMatrix conv2;   // examples*O2^2 x C2
  ScratchMatrix pool2;   // examples x F (= examples*Q2^2 x C2 in memory)
  ScratchMatrix fc1;     // after ReLU: examples x H
  ScratchMatrix logits;  // examples x classes; d(loss)/d(logits) before Backward
  ScratchMatrix d_fc1, d_pool2, d_conv2, d_cols2, d_pool1, d_conv1;
};

ConvNet::Activations& ConvNet::ThreadScratch() {
  // One per thread: calls on different threads never share scratch, and one
  // thread never runs two passes at once.
  thread_local Activations scratch;
  return scratch;
}

absl::StatusOr<int> ConvNet::ImageSide(int input_dim) {
  const int side =
      input_dim < 1 ? 0 : static_cast<int>(std::lround(std::sqrt(static_cast<double>(input_dim))));
  if (int64_t{side} * side != input_dim || side < kMinImageSide || side > kMaxImageSide) {
    return absl::InvalidArgumentError(
        absl::StrCat("a cnn takes square one-channel images: input_dim (", input_dim,
                     ") must be S * S for an image side S in [", kMinImageSide, ", ", kMaxImageSide,
                     "], e.g. 784"));
  }
  return side;
}

namespace {

std::vector<std::string> TensorNames() {
  return {"cnn/conv1/w", "cnn/conv1/b", "cnn/conv2/w", "cnn/conv2/b",
          "cnn/fc1/w",   "cnn/fc1/b",   "cnn/fc2/w",   "cnn/fc2/b"};
}

std::vector<size_t> Lengths(const std::vector<std::vector<int64_t>>& shapes) {
  std::vector<size_t> lengths;
  for (const std::vector<int64_t>& shape : shapes) {
    size_t length = 1;
    for (int64_t d : shape) length *= static_cast<size_t>(d);
    lengths.push_back(length);
  }
  return lengths;
}

// Floats of one example's activations and backward scratch (see Activations).
size_t ScratchFloatsPerExample(size_t c1, size_t c2, size_t h, size_t classes, size_t o1, size_t q1,
                               size_t o2, size_t q2) {
  const size_t cols1 = o1 * o1 * kTaps, conv1 = o1 * o1 * c1, pool1 = q1 * q1 * c1;
  const size_t cols2 = o2 * o2 * kTaps * c1, conv2 = o2 * o2 * c2, pool2 = q2 * q2 * c2;
  // The pooling choices are bytes: a quarter of a float each.
  return cols1 + 2 * conv1 + 2 * pool1 + pool1 / 4 + 2 * cols2 + 2 * conv2 + 2 * pool2 + pool2 / 4 +
         2 * h + classes;
}

}  // namespace

ConvNet::ConvNet(int conv1_channels, int conv2_channels, int hidden, int image_side,
                 int num_classes, size_t scratch_floats)
    : conv1_channels_(conv1_channels),
      conv2_channels_(conv2_channels),
      hidden_(hidden),
      side_(image_side),
      conv1_side_(OutputSide(image_side)),
      pool1_side_(conv1_side_ / 2),
      conv2_side_(OutputSide(pool1_side_)),
      pool2_side_(conv2_side_ / 2),
      flat_(pool2_side_ * pool2_side_ * conv2_channels),
      num_classes_(num_classes),
      name_(absl::StrCat("cnn:", conv1_channels, ",", conv2_channels, ",", hidden)),
      tensor_names_(TensorNames()),
      tensor_shapes_({{kKernelSide, kKernelSide, 1, conv1_channels},
                      {conv1_channels},
                      {kKernelSide, kKernelSide, conv1_channels, conv2_channels},
                      {conv2_channels},
                      {flat_, hidden},
                      {hidden},
                      {hidden, num_classes},
                      {num_classes}}),
      tensor_lengths_(Lengths(tensor_shapes_)),
      examples_per_pass_(static_cast<int>(std::clamp<size_t>(
          scratch_floats / ScratchFloatsPerExample(conv1_channels, conv2_channels, hidden,
                                                   num_classes, conv1_side_, pool1_side_,
                                                   conv2_side_, pool2_side_),
          1, std::numeric_limits<int>::max()))) {
  DCASGD_CHECK(conv1_channels >= 1 && conv2_channels >= 1 && hidden >= 1 && num_classes >= 2);
  DCASGD_CHECK(image_side >= kMinImageSide && image_side <= kMaxImageSide && pool2_side_ >= 1);
}

std::vector<TensorSpec> ConvNet::ParameterSpecs(uint64_t seed) const {
  // He et al. 2015 (stddev sqrt(2 / fan_in)) for the three layers followed by
  // a ReLU, a convolution's fan-in being its patch size 25 * C_in; the small
  // output-layer stddev of every model for fc2.
  const float stddevs[kTensorCount / 2] = {
      std::sqrt(2.0f / static_cast<float>(kTaps)),
      std::sqrt(2.0f / static_cast<float>(kTaps * conv1_channels_)),
      std::sqrt(2.0f / static_cast<float>(flat_)), internal::kOutputInitStddev};
  std::vector<TensorSpec> specs;
  for (int layer = 0; layer < kTensorCount / 2; ++layer) {
    specs.push_back(internal::NormalWeights(tensor_names_[2 * layer], tensor_shapes_[2 * layer],
                                            stddevs[layer], seed, layer));
    specs.push_back(
        internal::ZeroBias(tensor_names_[2 * layer + 1], tensor_shapes_[2 * layer + 1][0]));
  }
  return specs;
}

absl::StatusOr<ConvNet::Weights> ConvNet::FindWeights(const ParameterMap& params) const {
  Weights weights;
  weights.reserve(kTensorCount);
  for (int t = 0; t < kTensorCount; ++t) {
    ASSIGN_OR_RETURN(const float* data,
                     internal::FindTensor(params, name_, tensor_names_[t], tensor_lengths_[t]));
    weights.push_back(data);
  }
  return weights;
}

void ConvNet::Forward(const Weights& w, const float* input, int examples, Activations* a) const {
  const Eigen::Index n = examples;
  const int c1 = conv1_channels_, c2 = conv2_channels_;

  MatrixMap cols1 = a->cols1.View(n * conv1_side_ * conv1_side_, kTaps);
  Im2Col(input, examples, side_, 1, conv1_side_, cols1.data());
  MatrixMap conv1 = a->conv1.View(cols1.rows(), c1);
  conv1.noalias() = cols1 * ConstMatrixMap(w[kConv1W], kTaps, c1);
  conv1.rowwise() += ConstRowVectorMap(w[kConv1B], c1);
  MatrixMap pool1 = a->pool1.View(n * pool1_side_ * pool1_side_, c1);
  MaxPoolRelu(conv1.data(), examples, conv1_side_, c1, pool1.data());

  MatrixMap cols2 = a->cols2.View(n * conv2_side_ * conv2_side_, Eigen::Index{kTaps} * c1);
  Im2Col(pool1.data(), examples, pool1_side_, c1, conv2_side_, cols2.data());
  MatrixMap conv2 = a->conv2.View(cols2.rows(), c2);
  conv2.noalias() = cols2 * ConstMatrixMap(w[kConv2W], Eigen::Index{kTaps} * c1, c2);
  conv2.rowwise() += ConstRowVectorMap(w[kConv2B], c2);
  MatrixMap pool2 = a->pool2.View(n, flat_);
  MaxPoolRelu(conv2.data(), examples, conv2_side_, c2, pool2.data());

  MatrixMap fc1 = a->fc1.View(n, hidden_);
  fc1.noalias() = pool2 * ConstMatrixMap(w[kFc1W], flat_, hidden_);
  fc1.rowwise() += ConstRowVectorMap(w[kFc1B], hidden_);
  fc1 = fc1.cwiseMax(0.0f);
  MatrixMap logits = a->logits.View(n, num_classes_);
  logits.noalias() = fc1 * ConstMatrixMap(w[kFc2W], hidden_, num_classes_);
  logits.rowwise() += ConstRowVectorMap(w[kFc2B], num_classes_);
}

void ConvNet::Backward(const Weights& w, int examples, Activations* a,
                       const std::vector<float*>& grads) const {
  const Eigen::Index n = examples;
  const int c1 = conv1_channels_, c2 = conv2_channels_;
  // The views Forward filled.
  const MatrixMap cols1 = a->cols1.View(n * conv1_side_ * conv1_side_, kTaps);
  const MatrixMap conv1 = a->conv1.View(cols1.rows(), c1);
  const MatrixMap pool1 = a->pool1.View(n * pool1_side_ * pool1_side_, c1);
  const MatrixMap cols2 = a->cols2.View(n * conv2_side_ * conv2_side_, Eigen::Index{kTaps} * c1);
  const MatrixMap conv2 = a->conv2.View(cols2.rows(), c2);
  const MatrixMap pool2 = a->pool2.View(n, flat_);
  const MatrixMap fc1 = a->fc1.View(n, hidden_);
  const MatrixMap d_logits = a->logits.View(n, num_classes_);

  MatrixMap(grads[kFc2W], hidden_, num_classes_).noalias() += fc1.transpose() * d_logits;
  RowVectorMap(grads[kFc2B], num_classes_) += d_logits.colwise().sum();
  // Through fc2's weights, then fc1's ReLU (derivative 1 where the output is
  // positive, else 0).
  MatrixMap d_fc1 = a->d_fc1.View(n, hidden_);
  d_fc1.noalias() = d_logits * ConstMatrixMap(w[kFc2W], hidden_, num_classes_).transpose();
  d_fc1 = (fc1.array() > 0.0f).select(d_fc1.array(), 0.0f).matrix();

  MatrixMap(grads[kFc1W], flat_, hidden_).noalias() += pool2.transpose() * d_fc1;
  RowVectorMap(grads[kFc1B], hidden_) += d_fc1.colwise().sum();
  MatrixMap d_pool2 = a->d_pool2.View(n, flat_);
  d_pool2.noalias() = d_fc1 * ConstMatrixMap(w[kFc1W], flat_, hidden_).transpose();

  MatrixMap d_conv2 = a->d_conv2.View(cols2.rows(), c2);
  MaxPoolReluBackward(d_pool2.data(), conv2.data(), pool2.data(), examples, conv2_side_, c2,
                      d_conv2.data());
  MatrixMap(grads[kConv2W], Eigen::Index{kTaps} * c1, c2).noalias() += cols2.transpose() * d_conv2;
  RowVectorMap(grads[kConv2B], c2) += d_conv2.colwise().sum();
  MatrixMap d_cols2 = a->d_cols2.View(cols2.rows(), cols2.cols());
  d_cols2.noalias() =
      d_conv2 * ConstMatrixMap(w[kConv2W], Eigen::Index{kTaps} * c1, c2).transpose();

  MatrixMap d_pool1 = a->d_pool1.View(pool1.rows(), c1);
  d_pool1.setZero();
  Col2ImAdd(d_cols2.data(), examples, pool1_side_, c1, conv2_side_, d_pool1.data());
  MatrixMap d_conv1 = a->d_conv1.View(cols1.rows(), c1);
  MaxPoolReluBackward(d_pool1.data(), conv1.data(), pool1.data(), examples, conv1_side_, c1,
                      d_conv1.data());
  MatrixMap(grads[kConv1W], kTaps, c1).noalias() += cols1.transpose() * d_conv1;
  RowVectorMap(grads[kConv1B], c1) += d_conv1.colwise().sum();
}

absl::StatusOr<float> ConvNet::Gradient(const ParameterMap& params,
                                        absl::Span<const float> features,
                                        absl::Span<const int32_t> labels,
                                        ParameterMap* gradients) const {
  ASSIGN_OR_RETURN(const Weights weights, FindWeights(params));
  RETURN_IF_ERROR(internal::CheckBatch(name_, input_dim(), num_classes(), features, labels));
  const std::vector<float*> grads =
      internal::ResetGradients(tensor_names_, tensor_lengths_, /*zero=*/true, gradients);

  // d(mean loss)/d(logits) = (softmax - one_hot(label)) / N for the whole
  // batch of N, so the passes' gradients simply add up.
  const size_t total = labels.size();
  const float scale = 1.0f / static_cast<float>(total);
  Activations& a = ThreadScratch();
  double loss_sum = 0;
  int64_t correct = 0;
  for (size_t begin = 0; begin < total; begin += static_cast<size_t>(examples_per_pass_)) {
    const size_t count = std::min(total - begin, static_cast<size_t>(examples_per_pass_));
    const absl::Span<const int32_t> pass_labels = labels.subspan(begin, count);
    Forward(weights, features.data() + begin * static_cast<size_t>(input_dim()),
            static_cast<int>(count), &a);
    MatrixMap logits = a.logits.View(static_cast<Eigen::Index>(count), num_classes_);
    loss_sum += internal::SoftmaxCrossEntropy(logits, pass_labels, &correct);
    internal::SoftmaxToLogitGradient(pass_labels, scale, logits);
    Backward(weights, static_cast<int>(count), &a, grads);
  }
  return static_cast<float>(loss_sum / static_cast<double>(total));
}

absl::StatusOr<Evaluation> ConvNet::Evaluate(const ParameterMap& params,
                                             absl::Span<const float> features,
                                             absl::Span<const int32_t> labels,
                                             int batch_size) const {
  RETURN_IF_ERROR(internal::CheckEvaluationBatchSize(name_, batch_size));
  ASSIGN_OR_RETURN(const Weights weights, FindWeights(params));
  RETURN_IF_ERROR(internal::CheckBatch(name_, input_dim(), num_classes(), features, labels));

  // A pass never holds more than examples_per_pass_ (memory) nor more than
  // batch_size examples (the caller's choice).
  const size_t step = static_cast<size_t>(std::min(batch_size, examples_per_pass_));
  const size_t total = labels.size();
  Activations& a = ThreadScratch();
  double loss_sum = 0;
  int64_t correct = 0;
  for (size_t begin = 0; begin < total; begin += step) {
    const size_t count = std::min(total - begin, step);
    Forward(weights, features.data() + begin * static_cast<size_t>(input_dim()),
            static_cast<int>(count), &a);
    loss_sum +=
        internal::SoftmaxCrossEntropy(a.logits.View(static_cast<Eigen::Index>(count), num_classes_),
                                      labels.subspan(begin, count), &correct);
  }
  Evaluation result;
  result.examples = static_cast<int64_t>(total);
  result.mean_loss = loss_sum / static_cast<double>(total);
  result.accuracy = static_cast<double>(correct) / static_cast<double>(total);
  return result;
}

}  // namespace dcasgd::model
