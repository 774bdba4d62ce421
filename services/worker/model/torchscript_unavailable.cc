// CreateTorchScriptModel in executables without LibTorch (dcasgd-worker, and
// every build with DCASGD_WITH_TORCH=OFF, the default): the Eigen models
// work, "torchscript:PATH" says how to get it. dcasgd-worker-torch links
// torchscript_model.cc instead (services/worker/model/CMakeLists.txt).

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "services/worker/model/torchscript_model.h"

namespace dcasgd::model {

bool TorchScriptAvailable() { return false; }

absl::StatusOr<std::unique_ptr<Model>> CreateTorchScriptModel(absl::string_view path, int input_dim,
                                                              int num_classes) {
  return absl::FailedPreconditionError(
      absl::StrCat("model '", kTorchScriptPrefix, path,
                   "': this program is built without LibTorch: run dcasgd-worker-torch, built "
                   "with -DDCASGD_WITH_TORCH=ON (LibTorch comes from Debian's libtorch-dev: "
                   "scripts/install-deps.sh torch)"));
}

}  // namespace dcasgd::model
