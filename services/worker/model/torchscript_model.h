#ifndef DCASGD_SERVICES_WORKER_MODEL_TORCHSCRIPT_MODEL_H_
#define DCASGD_SERVICES_WORKER_MODEL_TORCHSCRIPT_MODEL_H_

// A Model backed by a TorchScript module (torch.jit.script or torch.jit.trace,
// saved from Python with .save(PATH)), run through LibTorch. This header
// does not include LibTorch: the module lives behind the Model interface, and
// every LibTorch exception is caught inside torchscript_model.cc and turned
// into an absl::Status.
//
// What the module must be:
// - forward(x) takes one float32 tensor of N x input_dim (N examples, the
//   784 pixels of a Fashion-MNIST image scaled to [0, 1] for the worker) and
//   returns one float32 tensor of N x num_classes logits (10 for the worker),
//   for any N >= 1. Softmax cross-entropy is applied outside the module.
//   An image model reshapes inside forward (x.view(-1, 1, 28, 28)).
// - It has at least one parameter. Its parameters (named_parameters(), names
//   such as "fc1.weight") are the tensors trained on the shards, declared
//   with the module's saved values as initial values. Buffers (e.g. batch
//   norm running statistics) are not trained on the shards: each worker keeps
//   its own copy, updated by its own forward passes.
//
// Built with LibTorch only when the project is configured with
// -DDCASGD_WITH_TORCH=ON; otherwise CreateTorchScriptModel says so.

#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/worker/model/model.h"

namespace dcasgd::model {

// The factory prefix: CreateModel("torchscript:PATH") loads PATH.
inline constexpr absl::string_view kTorchScriptPrefix = "torchscript:";

// Loads the module saved at `path` and checks it: it must load, have at
// least one parameter of at most 2^31 elements, and map a batch of two
// examples of input_dim floats to 2 x num_classes float logits (one trial
// forward pass, run at load time so a wrong module fails before joining a
// job). Sets LibTorch's intra-op threads to 1 for the process (the worker
// runs one computation per thread, like the Eigen models; scale with more
// workers or --virtual_workers).
//
// Errors, each naming the path: NOT_FOUND if the file does not exist;
// INVALID_ARGUMENT if it is not a TorchScript module, has no parameters, has
// a parameter that is not float32, or its output has the wrong shape or type
// (quoting what the module must accept and return); FAILED_PRECONDITION,
// "built without LibTorch: configure with -DDCASGD_WITH_TORCH=ON", in a
// build without LibTorch.
//
// The returned model is thread-safe as the Model contract requires: a call
// borrows a private clone of the module (its own parameters and buffers)
// from a pool and returns it when done, so calls from several threads run in
// parallel without sharing mutable state; the pool grows to the number of
// concurrent callers. ParameterSpecs ignores the seed: the initial values
// are the module's saved values.
absl::StatusOr<std::unique_ptr<Model>> CreateTorchScriptModel(absl::string_view path, int input_dim,
                                                              int num_classes);

// Whether this build can load TorchScript modules (DCASGD_WITH_TORCH).
bool TorchScriptAvailable();

}  // namespace dcasgd::model

#endif  // DCASGD_SERVICES_WORKER_MODEL_TORCHSCRIPT_MODEL_H_
