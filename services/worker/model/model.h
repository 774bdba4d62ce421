#ifndef DCASGD_SERVICES_WORKER_MODEL_MODEL_H_
#define DCASGD_SERVICES_WORKER_MODEL_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/tensor.h"

namespace dcasgd::model {

// Named flat (row-major) float32 tensors: the weights pulled from the
// parameter servers, or the gradients pushed to them. The same map type the
// C++ client uses for Pull/Push.
using ParameterMap = absl::flat_hash_map<std::string, std::vector<float>>;

// Fashion-MNIST: 28x28 grey images scaled to [0, 1], ten classes.
inline constexpr int kFashionMnistFeatures = 784;
inline constexpr int kFashionMnistClasses = 10;

// Mean loss and accuracy of a model over a set of examples.
struct Evaluation {
  double mean_loss = 0;  // mean softmax cross-entropy (natural log)
  double accuracy = 0;   // fraction of examples whose arg-max class is the label
  int64_t examples = 0;
};

// A classifier trained with softmax cross-entropy. A Model holds only its
// architecture; the weights live outside it (in a ParameterMap), so one Model
// serves any number of weight versions.
//
// Batches: `features` holds N examples of input_dim() floats each, row-major
// (N x input_dim), and `labels` holds N class indices in [0, num_classes()).
// N is labels.size().
//
// Thread-safety: all methods are const and keep no shared state; a Model may
// be used from several threads at once. Methods compute on the calling thread
// only (one thread per worker process, by design).
class Model {
 public:
  virtual ~Model() = default;

  // The factory string this model was made from, e.g. "mlp:256,128".
  virtual std::string name() const = 0;
  virtual int input_dim() const = 0;
  virtual int num_classes() const = 0;

  // The tensors to declare on the parameter servers, in a fixed order, with
  // deterministic seeded initialisers: weights of hidden layers are normal
  // with stddev sqrt(2 / fan_in) (He), weights of the output layer normal with
  // stddev 0.01, biases zero. Every random tensor gets its own seed derived
  // from `seed` and its position, so the same seed gives equal specs and a
  // different seed different weights. chunk_elements is left 0 (the default).
  virtual std::vector<TensorSpec> ParameterSpecs(uint64_t seed) const = 0;

  // Mean softmax cross-entropy of the batch under `params` and its gradient
  // with respect to every model tensor. On success `*gradients` holds exactly
  // the model's tensors (same names and lengths as ParameterSpecs), reusing
  // any buffers already in it; entries of other names are removed. Tensors in
  // `params` that the model does not use are ignored.
  //
  // INVALID_ARGUMENT (and `*gradients` untouched) if a model tensor is missing
  // from `params` or has the wrong length, if N == 0, if features.size() !=
  // N * input_dim(), or if a label is out of range. Non-finite weights or
  // features are not detected: they give a non-finite loss.
  virtual absl::StatusOr<float> Gradient(const ParameterMap& params,
                                         absl::Span<const float> features,
                                         absl::Span<const int32_t> labels,
                                         ParameterMap* gradients) const = 0;

  // Mean loss and accuracy over all examples, computed `batch_size` examples
  // at a time (the result does not depend on batch_size beyond float
  // rounding). INVALID_ARGUMENT for the same inputs as Gradient, and if
  // batch_size < 1.
  virtual absl::StatusOr<Evaluation> Evaluate(const ParameterMap& params,
                                              absl::Span<const float> features,
                                              absl::Span<const int32_t> labels,
                                              int batch_size = 1024) const = 0;
};

// Makes a model from its name:
//   "softmax"        softmax regression, input_dim -> num_classes
//   "mlp:H1,H2,..."  ReLU multi-layer perceptron with hidden sizes H1, H2, ...
//                    (each in [1, 65536], at least one), e.g. "mlp:256,128"
//   "cnn", "cnn:C1,C2,H"  the convolutional network of conv_net.h
//   "torchscript:PATH"    a TorchScript module saved from Python
//                    (torchscript_model.h: CreateTorchScriptModel and its
//                    errors; FAILED_PRECONDITION in a build without LibTorch)
// INVALID_ARGUMENT, quoting the string and the accepted forms, for anything
// else, and when input_dim or num_classes is < 1 (num_classes < 2).
absl::StatusOr<std::unique_ptr<Model>> CreateModel(absl::string_view name,
                                                   int input_dim = kFashionMnistFeatures,
                                                   int num_classes = kFashionMnistClasses);

// The initial values of `specs`, exactly as the parameter server computes
// them (core::InitializeChunk on every chunk, chunk_elements 0 meaning the
// default), so a local single-process baseline starts from the same weights
// as a run against the servers. INVALID_ARGUMENT if a spec is invalid
// (ValidateTensorSpec) or a name repeats.
absl::StatusOr<ParameterMap> InitializeParameters(const std::vector<TensorSpec>& specs);

}  // namespace dcasgd::model

#endif  // DCASGD_SERVICES_WORKER_MODEL_MODEL_H_
