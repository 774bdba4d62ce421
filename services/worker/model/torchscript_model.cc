// The TorchScript model (torchscript_model.h), built only with
// -DDCASGD_WITH_TORCH=ON. Every LibTorch call that can throw (c10::Error
// derives from std::exception) runs inside a try block of this file; no
// exception leaves it.

#include "services/worker/model/torchscript_model.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/script.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <filesystem>
#include <limits>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/status_macros.h"
#include "core/tensor.h"
#include "services/worker/model/model_internal.h"

namespace dcasgd::model {
namespace {

// A parameter tensor of more elements than this cannot be declared in one
// message anyway (the shards bound a message to --max_message_bytes).
constexpr int64_t kMaxParameterElements = int64_t{1} << 31;

// The message of a LibTorch exception without the C++ backtrace and the
// trailing newline (a TorchScript error keeps its TorchScript traceback).
std::string ExceptionText(const std::exception& e) {
  const auto* torch_error = dynamic_cast<const c10::Error*>(&e);
  return std::string(absl::StripTrailingAsciiWhitespace(
      torch_error != nullptr ? torch_error->what_without_backtrace() : e.what()));
}

std::string Contract(int input_dim, int num_classes) {
  return absl::StrCat("the module's forward must take one float32 tensor of N x ", input_dim,
                      " features and return one float32 tensor of N x ", num_classes, " logits");
}

std::vector<int64_t> Shape(const at::Tensor& tensor) {
  return std::vector<int64_t>(tensor.sizes().begin(), tensor.sizes().end());
}

// A private copy of the module: its own parameters (in the order of the
// model's specs) and buffers. Used by one call at a time.
struct Replica {
  torch::jit::Module module;
  std::vector<at::Tensor> parameters;
};

class TorchScriptModel final : public Model {
 public:
  TorchScriptModel(std::string name, torch::jit::Module prototype, std::vector<TensorSpec> specs,
                   int input_dim, int num_classes)
      : name_(std::move(name)),
        input_dim_(input_dim),
        num_classes_(num_classes),
        specs_(std::move(specs)),
        prototype_(std::move(prototype)) {
    for (const TensorSpec& spec : specs_) {
      names_.push_back(spec.name);
      lengths_.push_back(spec.num_elements());
    }
  }

  std::string name() const override { return name_; }
  int input_dim() const override { return input_dim_; }
  int num_classes() const override { return num_classes_; }
  // The module's saved values, whatever the seed.
  std::vector<TensorSpec> ParameterSpecs(uint64_t seed) const override { return specs_; }

  absl::StatusOr<float> Gradient(const ParameterMap& params, absl::Span<const float> features,
                                 absl::Span<const int32_t> labels,
                                 ParameterMap* gradients) const override;
  absl::StatusOr<Evaluation> Evaluate(const ParameterMap& params, absl::Span<const float> features,
                                      absl::Span<const int32_t> labels,
                                      int batch_size) const override;

 private:
  // Returns a replica to the pool when the call ends.
  class Lease {
   public:
    Lease(const TorchScriptModel* model, std::unique_ptr<Replica> replica)
        : model_(model), replica_(std::move(replica)) {}
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { model_->Return(std::move(replica_)); }
    Replica& operator*() const { return *replica_; }

   private:
    const TorchScriptModel* model_;
    std::unique_ptr<Replica> replica_;
  };

  // A free replica, or a new copy of the prototype. Throws what deepcopy()
  // throws (callers are inside their try blocks).
  std::unique_ptr<Replica> Borrow() const;
  void Return(std::unique_ptr<Replica> replica) const;
  // The data of every parameter in `params`, in spec order.
  absl::StatusOr<std::vector<const float*>> FindWeights(const ParameterMap& params) const;
  // Copies `weights` into the replica's parameters (no autograd record).
  void LoadWeights(const std::vector<const float*>& weights, Replica* replica) const;
  // forward(features) for `examples` rows, checked to be examples x
  // num_classes float32 logits.
  absl::StatusOr<at::Tensor> Logits(Replica* replica, const float* features,
                                    int64_t examples) const;
  absl::Status ModuleError(absl::string_view what, const std::exception& e) const;

  const std::string name_;
  const int input_dim_;
  const int num_classes_;
  const std::vector<TensorSpec> specs_;  // names, shapes and saved values
  std::vector<std::string> names_;       // specs_' names, for ResetGradients
  std::vector<size_t> lengths_;

  mutable absl::Mutex mu_;
  // Never run: only copied (deepcopy() reads its state, hence the mutex).
  torch::jit::Module prototype_ ABSL_GUARDED_BY(mu_);
  mutable std::vector<std::unique_ptr<Replica>> free_ ABSL_GUARDED_BY(mu_);
};

std::unique_ptr<Replica> TorchScriptModel::Borrow() const {
  absl::MutexLock lock(&mu_);
  if (!free_.empty()) {
    std::unique_ptr<Replica> replica = std::move(free_.back());
    free_.pop_back();
    return replica;
  }
  auto replica = std::make_unique<Replica>();
  // deepcopy, not clone: clone() shares the tensors. The copy keeps the
  // prototype's type and methods, whose execution is thread-safe.
  replica->module = prototype_.deepcopy();
  for (const std::string& name : names_) {
    for (const auto& p : replica->module.named_parameters(/*recurse=*/true)) {
      if (p.name == name) replica->parameters.push_back(p.value);
    }
  }
  for (at::Tensor& p : replica->parameters) p.requires_grad_(true);
  return replica;
}

void TorchScriptModel::Return(std::unique_ptr<Replica> replica) const {
  absl::MutexLock lock(&mu_);
  free_.push_back(std::move(replica));
}

absl::StatusOr<std::vector<const float*>> TorchScriptModel::FindWeights(
    const ParameterMap& params) const {
  std::vector<const float*> weights;
  weights.reserve(specs_.size());
  for (size_t i = 0; i < specs_.size(); ++i) {
    ASSIGN_OR_RETURN(const float* data,
                     internal::FindTensor(params, name_, names_[i], lengths_[i]));
    weights.push_back(data);
  }
  return weights;
}

void TorchScriptModel::LoadWeights(const std::vector<const float*>& weights,
                                   Replica* replica) const {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < weights.size(); ++i) {
    at::Tensor& parameter = replica->parameters[i];
    // from_blob wraps the caller's data without copying; it is only read.
    parameter.copy_(torch::from_blob(const_cast<float*>(weights[i]), parameter.sizes(),
                                     torch::TensorOptions().dtype(torch::kFloat32)));
  }
}

absl::StatusOr<at::Tensor> TorchScriptModel::Logits(Replica* replica, const float* features,
                                                    int64_t examples) const {
  const at::Tensor input = torch::from_blob(const_cast<float*>(features), {examples, input_dim_},
                                            torch::TensorOptions().dtype(torch::kFloat32));
  const torch::jit::IValue output = replica->module.forward({input});
  if (!output.isTensor()) {
    return absl::InvalidArgumentError(absl::StrCat("model '", name_, "': forward returned a ",
                                                   output.tagKind(), ", not a tensor; ",
                                                   Contract(input_dim_, num_classes_)));
  }
  at::Tensor logits = output.toTensor();
  if (logits.scalar_type() != torch::kFloat32 || logits.dim() != 2 || logits.size(0) != examples ||
      logits.size(1) != num_classes_) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", name_, "': forward mapped ", examples, " x ", input_dim_,
                     " features to a ", c10::toString(logits.scalar_type()), " tensor of shape ",
                     ShapeString(Shape(logits)), "; ", Contract(input_dim_, num_classes_)));
  }
  return logits;
}

absl::Status TorchScriptModel::ModuleError(absl::string_view what, const std::exception& e) const {
  // The contract first: LibTorch's text may end in a multi-line traceback.
  return absl::InvalidArgumentError(absl::StrCat("model '", name_, "': ", what, " failed (",
                                                 Contract(input_dim_, num_classes_),
                                                 "): ", ExceptionText(e)));
}

absl::StatusOr<float> TorchScriptModel::Gradient(const ParameterMap& params,
                                                 absl::Span<const float> features,
                                                 absl::Span<const int32_t> labels,
                                                 ParameterMap* gradients) const {
  RETURN_IF_ERROR(internal::CheckBatch(name_, input_dim_, num_classes_, features, labels));
  ASSIGN_OR_RETURN(const std::vector<const float*> weights, FindWeights(params));
  const int64_t examples = static_cast<int64_t>(labels.size());
  try {
    Lease lease(this, Borrow());
    Replica& replica = *lease;
    LoadWeights(weights, &replica);
    replica.module.train(true);
    ASSIGN_OR_RETURN(const at::Tensor logits, Logits(&replica, features.data(), examples));
    const at::Tensor targets =
        torch::from_blob(const_cast<int32_t*>(labels.data()), {examples}, torch::kInt32)
            .to(torch::kInt64);
    const at::Tensor loss = at::cross_entropy_loss(logits, targets);  // mean over the batch
    const std::vector<at::Tensor> grads =
        torch::autograd::grad({loss}, replica.parameters, /*grad_outputs=*/{},
                              /*retain_graph=*/false, /*create_graph=*/false,
                              /*allow_unused=*/true);
    const float loss_value = loss.item<float>();
    // Only now is *gradients touched: nothing above failed.
    const std::vector<float*> out =
        internal::ResetGradients(names_, lengths_, /*zero=*/false, gradients);
    for (size_t i = 0; i < out.size(); ++i) {
      if (!grads[i].defined()) {  // a parameter forward does not use
        std::fill(out[i], out[i] + lengths_[i], 0.0f);
        continue;
      }
      const at::Tensor grad = grads[i].to(torch::kFloat32).contiguous();
      std::memcpy(out[i], grad.data_ptr<float>(), lengths_[i] * sizeof(float));
    }
    return loss_value;
  } catch (const std::exception& e) {
    return ModuleError("the gradient", e);
  }
}

absl::StatusOr<Evaluation> TorchScriptModel::Evaluate(const ParameterMap& params,
                                                      absl::Span<const float> features,
                                                      absl::Span<const int32_t> labels,
                                                      int batch_size) const {
  RETURN_IF_ERROR(internal::CheckEvaluationBatchSize(name_, batch_size));
  RETURN_IF_ERROR(internal::CheckBatch(name_, input_dim_, num_classes_, features, labels));
  ASSIGN_OR_RETURN(const std::vector<const float*> weights, FindWeights(params));
  const int64_t n = static_cast<int64_t>(labels.size());
  try {
    Lease lease(this, Borrow());
    Replica& replica = *lease;
    LoadWeights(weights, &replica);
    replica.module.train(false);
    torch::NoGradGuard no_grad;
    double loss_sum = 0;
    int64_t correct = 0;
    for (int64_t begin = 0; begin < n; begin += batch_size) {
      const int64_t rows = std::min<int64_t>(batch_size, n - begin);
      ASSIGN_OR_RETURN(const at::Tensor logits,
                       Logits(&replica, features.data() + begin * input_dim_, rows));
      const at::Tensor targets =
          torch::from_blob(const_cast<int32_t*>(labels.data() + begin), {rows}, torch::kInt32)
              .to(torch::kInt64);
      loss_sum +=
          at::cross_entropy_loss(logits.to(torch::kFloat64), targets, {}, at::Reduction::Sum)
              .item<double>();
      correct += logits.argmax(1).eq(targets).sum().item<int64_t>();
    }
    Evaluation result;
    result.examples = n;
    result.mean_loss = loss_sum / static_cast<double>(n);
    result.accuracy = static_cast<double>(correct) / static_cast<double>(n);
    return result;
  } catch (const std::exception& e) {
    return ModuleError("evaluation", e);
  }
}

// The module's parameters as tensor specs with their values; INVALID_ARGUMENT
// for none, a non-float32 one or one too large.
absl::StatusOr<std::vector<TensorSpec>> SpecsOf(const std::string& model_name,
                                                torch::jit::Module& module) {
  std::vector<TensorSpec> specs;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) {
    const at::Tensor& value = p.value;
    if (value.scalar_type() != torch::kFloat32) {
      return absl::InvalidArgumentError(
          absl::StrCat("model '", model_name, "': parameter '", p.name, "' is ",
                       c10::toString(value.scalar_type()),
                       "; every parameter must be float32 (call .float() "
                       "on the module before scripting it)"));
    }
    if (value.numel() > kMaxParameterElements) {
      return absl::InvalidArgumentError(absl::StrCat("model '", model_name, "': parameter '",
                                                     p.name, "' has more than ",
                                                     kMaxParameterElements, " elements"));
    }
    TensorSpec spec;
    spec.name = p.name;
    spec.shape = Shape(value);
    spec.init.kind = Initializer::Kind::kValues;
    const at::Tensor flat = value.detach().contiguous();
    spec.init.values.assign(flat.data_ptr<float>(), flat.data_ptr<float>() + flat.numel());
    RETURN_IF_ERROR(ValidateTensorSpec(spec));
    specs.push_back(std::move(spec));
  }
  if (specs.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", model_name,
                     "': the module has no parameters (named_parameters() is empty); there is "
                     "nothing to train"));
  }
  return specs;
}

}  // namespace

bool TorchScriptAvailable() { return true; }

absl::StatusOr<std::unique_ptr<Model>> CreateTorchScriptModel(absl::string_view path, int input_dim,
                                                              int num_classes) {
  const std::string name = absl::StrCat(kTorchScriptPrefix, path);
  const std::string file(path);
  std::error_code error;
  if (!std::filesystem::exists(file, error)) {
    return absl::NotFoundError(absl::StrCat("model '", name, "': no file '", file,
                                            "' (save a module with torch.jit.script(module)"
                                            ".save(PATH) in Python)"));
  }
  if (!std::filesystem::is_regular_file(file, error)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", name, "': '", file, "' is not a regular file"));
  }
  // One thread per computation: the worker's parallelism is its processes and
  // virtual workers, and the shards share the machine's cores.
  at::set_num_threads(1);
  torch::jit::Module module;
  try {
    module = torch::jit::load(file);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", name, "': '", file, "' is not a TorchScript module (",
                     ExceptionText(e), "); save one with torch.jit.script(module).save(PATH)"));
  }
  absl::StatusOr<std::vector<TensorSpec>> specs;
  try {
    specs = SpecsOf(name, module);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", name, "': reading the parameters failed: ", ExceptionText(e)));
  }
  if (!specs.ok()) return specs.status();
  // A trial evaluation of two zero examples (Evaluate catches what the
  // module throws): a module that does not accept the worker's batches fails
  // here, before joining a job.
  ParameterMap weights;
  for (const TensorSpec& spec : *specs) weights[spec.name] = spec.init.values;
  auto model = std::make_unique<TorchScriptModel>(name, std::move(module), *std::move(specs),
                                                  input_dim, num_classes);
  const std::vector<float> features(2 * static_cast<size_t>(input_dim), 0.0f);
  const std::vector<int32_t> labels = {0, 0};
  const absl::Status trial = model->Evaluate(weights, features, labels, 2).status();
  if (!trial.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("a trial forward pass on 2 x ", input_dim, " zeros: ", trial.message()));
  }
  return std::unique_ptr<Model>(std::move(model));
}

}  // namespace dcasgd::model
