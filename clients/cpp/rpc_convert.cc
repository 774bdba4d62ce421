#include "clients/cpp/rpc_convert.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "protos/convert.h"

namespace dcasgd {
namespace client {

void SpecToProto(const TensorSpec& spec, v1::TensorSpec* out) { TensorSpecToProto(spec, out); }

absl::StatusOr<TensorLayout> LayoutFromProto(const v1::TensorSpec& spec) {
  TensorLayout layout;
  layout.name = spec.name();
  layout.num_elements = 1;
  for (int64_t d : spec.shape()) {
    if (d < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", spec.name(), "' has a dimension < 1: ", d));
    }
    layout.num_elements *= static_cast<uint64_t>(d);
  }
  if (spec.chunk_elements() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", spec.name(), "' has chunk_elements 0 (unresolved)"));
  }
  layout.chunk_elements = spec.chunk_elements();
  return layout;
}

}  // namespace client
}  // namespace dcasgd
