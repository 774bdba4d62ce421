#include "wire/tensor_spec.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/endian.h"

namespace dcasgd {

bool IsValidUtf8(absl::string_view bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const auto* end = p + bytes.size();
  while (p < end) {
    const unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    int extra;
    uint32_t cp;
    uint32_t min;
    if ((c & 0xE0) == 0xC0) {
      extra = 1, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      extra = 2, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      extra = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return false;  // a continuation byte or 0xF8..0xFF as a lead byte
    }
    if (end - p <= extra) return false;
    for (int i = 1; i <= extra; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    p += extra + 1;
  }
  return true;
}

absl::Status ValidateName(absl::string_view what, absl::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  if (name.size() > kMaxNameBytes) {
    // Checked before UTF-8, so the message never quotes invalid bytes whole.
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has ", name.size(), " bytes; the limit is ", kMaxNameBytes));
  }
  if (!IsValidUtf8(name)) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not valid UTF-8"));
  }
  return absl::OkStatus();
}

absl::StatusOr<TensorSpec> TensorSpecFromProto(const v1::TensorSpec& proto) {
  TensorSpec spec;
  if (absl::Status s = ValidateName("tensor name", proto.name()); !s.ok()) return s;
  spec.name = proto.name();
  spec.shape.assign(proto.shape().begin(), proto.shape().end());
  spec.chunk_elements = proto.chunk_elements();
  const v1::Initializer& init = proto.init();
  switch (init.kind_case()) {
    case v1::Initializer::KIND_NOT_SET:
    case v1::Initializer::kZeros:
      spec.init.kind = Initializer::Kind::kZeros;
      break;
    case v1::Initializer::kConstant:
      spec.init.kind = Initializer::Kind::kConstant;
      spec.init.a = init.constant().value();
      break;
    case v1::Initializer::kUniform:
      spec.init.kind = Initializer::Kind::kUniform;
      spec.init.a = init.uniform().low();
      spec.init.b = init.uniform().high();
      spec.init.seed = init.uniform().seed();
      break;
    case v1::Initializer::kNormal:
      spec.init.kind = Initializer::Kind::kNormal;
      spec.init.a = init.normal().mean();
      spec.init.b = init.normal().stddev();
      spec.init.seed = init.normal().seed();
      break;
    case v1::Initializer::kValues: {
      const std::string& bytes = init.values();
      if (bytes.size() % sizeof(float) != 0) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "tensor %s: initializer values have %d bytes, not a multiple of 4 (float32)",
            QuotedName(proto.name()), bytes.size()));
      }
      spec.init.kind = Initializer::Kind::kValues;
      spec.init.values.resize(bytes.size() / sizeof(float));
      if (!bytes.empty()) std::memcpy(spec.init.values.data(), bytes.data(), bytes.size());
      break;
    }
  }
  return spec;
}

void TensorSpecToProto(const TensorSpec& spec, v1::TensorSpec* proto) {
  proto->Clear();
  proto->set_name(spec.name);
  for (int64_t d : spec.shape) proto->add_shape(d);
  proto->set_chunk_elements(spec.chunk_elements);
  v1::Initializer* init = proto->mutable_init();
  switch (spec.init.kind) {
    case Initializer::Kind::kZeros:
      init->mutable_zeros();
      break;
    case Initializer::Kind::kConstant:
      init->mutable_constant()->set_value(spec.init.a);
      break;
    case Initializer::Kind::kUniform:
      init->mutable_uniform()->set_low(spec.init.a);
      init->mutable_uniform()->set_high(spec.init.b);
      init->mutable_uniform()->set_seed(spec.init.seed);
      break;
    case Initializer::Kind::kNormal:
      init->mutable_normal()->set_mean(spec.init.a);
      init->mutable_normal()->set_stddev(spec.init.b);
      init->mutable_normal()->set_seed(spec.init.seed);
      break;
    case Initializer::Kind::kValues:
      init->set_values(std::string(reinterpret_cast<const char*>(spec.init.values.data()),
                                   spec.init.values.size() * sizeof(float)));
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

}  // namespace dcasgd
