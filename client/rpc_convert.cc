#include "client/rpc_convert.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace dcasgd {
namespace client {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "chunk values travel as little-endian float32; this host is big-endian");

absl::Status FromGrpcStatus(const grpc::Status& status, absl::string_view shard) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(shard, ": ", status.error_message()));
}

void SpecToProto(const TensorSpec& spec, v1::TensorSpec* out) {
  out->Clear();
  out->set_name(spec.name);
  for (int64_t d : spec.shape) out->add_shape(d);
  out->set_chunk_elements(spec.chunk_elements);
  v1::Initializer* init = out->mutable_init();
  switch (spec.init.kind) {
    case Initializer::Kind::kZeros:
      init->mutable_zeros();
      break;
    case Initializer::Kind::kConstant:
      init->mutable_constant()->set_value(spec.init.a);
      break;
    case Initializer::Kind::kUniform: {
      v1::Initializer::Uniform* u = init->mutable_uniform();
      u->set_low(spec.init.a);
      u->set_high(spec.init.b);
      u->set_seed(spec.init.seed);
      break;
    }
    case Initializer::Kind::kNormal: {
      v1::Initializer::Normal* n = init->mutable_normal();
      n->set_mean(spec.init.a);
      n->set_stddev(spec.init.b);
      n->set_seed(spec.init.seed);
      break;
    }
    case Initializer::Kind::kValues:
      init->set_values(reinterpret_cast<const char*>(spec.init.values.data()),
                       spec.init.values.size() * sizeof(float));
      break;
  }
}

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
