#include "core/tensor.h"

#include <cmath>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/check.h"

namespace dcasgd {

bool Initializer::operator==(const Initializer& o) const {
  return kind == o.kind && a == o.a && b == o.b && seed == o.seed && values == o.values;
}

bool TensorSpec::operator==(const TensorSpec& o) const {
  return name == o.name && shape == o.shape && chunk_elements == o.chunk_elements && init == o.init;
}

uint64_t TensorSpec::num_elements() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

uint64_t TensorSpec::num_chunks() const { return NumChunks(num_elements(), chunk_elements); }

uint64_t TensorSpec::chunk_offset(uint64_t chunk_index) const {
  return ChunkOffset(chunk_elements, chunk_index);
}

uint64_t TensorSpec::chunk_length(uint64_t chunk_index) const {
  return ChunkLength(num_elements(), chunk_elements, chunk_index);
}

std::string QuotedName(absl::string_view name) {
  constexpr size_t kShown = 64;
  if (name.size() <= kShown) return absl::StrCat("'", name, "'");
  size_t cut = kShown;
  // Back up to the start of a character (continuation bytes are 10xxxxxx).
  while (cut > 0 && (static_cast<unsigned char>(name[cut]) & 0xC0) == 0x80) --cut;
  return absl::StrCat("'", name.substr(0, cut), "...' (", name.size(), " bytes)");
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status ValidateTensorSpec(const TensorSpec& spec) {
  if (spec.name.empty()) {
    return absl::InvalidArgumentError("tensor name must not be empty");
  }
  if (spec.name.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat("tensor name ", QuotedName(spec.name),
                                                   " is longer than ", kMaxNameBytes, " bytes"));
  }
  if (spec.shape.size() > kMaxRank) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", QuotedName(spec.name), " has ",
                                                   spec.shape.size(), " dimensions; at most ",
                                                   kMaxRank, " are allowed"));
  }
  // 2^40 elements (4 TiB) is far above any shard; the bound keeps the
  // arithmetic below from overflowing.
  constexpr uint64_t kMaxElements = uint64_t{1} << 40;
  uint64_t n = 1;
  for (int64_t d : spec.shape) {
    if (d < 1) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", QuotedName(spec.name),
                                                     ": every dimension must be >= 1, got shape ",
                                                     ShapeString(spec.shape)));
    }
    if (static_cast<uint64_t>(d) > kMaxElements / n) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", QuotedName(spec.name), ": shape ",
                                                     ShapeString(spec.shape),
                                                     " has more than 2^40 elements"));
    }
    n *= static_cast<uint64_t>(d);
  }
  const Initializer& init = spec.init;
  switch (init.kind) {
    case Initializer::Kind::kZeros:
      break;
    case Initializer::Kind::kConstant:
      if (!std::isfinite(init.a)) {
        return absl::InvalidArgumentError(absl::StrCat("tensor ", QuotedName(spec.name),
                                                       ": constant initialiser must be finite"));
      }
      break;
    case Initializer::Kind::kUniform:
      if (!(std::isfinite(init.a) && std::isfinite(init.b) && init.a < init.b)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor ", QuotedName(spec.name),
            ": uniform initialiser needs finite low < high, got [", init.a, ", ", init.b, ")"));
      }
      break;
    case Initializer::Kind::kNormal:
      if (!(std::isfinite(init.a) && std::isfinite(init.b) && init.b >= 0)) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor ", QuotedName(spec.name),
                         ": normal initialiser needs a finite mean and stddev >= 0"));
      }
      break;
    case Initializer::Kind::kValues:
      if (init.values.size() != n) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor ", QuotedName(spec.name), ": explicit initial values have ", init.values.size(),
            " elements but shape ", ShapeString(spec.shape), " needs ", n));
      }
      for (float v : init.values) {
        if (!std::isfinite(v)) {
          return absl::InvalidArgumentError(absl::StrCat(
              "tensor ", QuotedName(spec.name), ": explicit initial values contain NaN or Inf"));
        }
      }
      break;
  }
  return absl::OkStatus();
}

TensorSpec ResolveDefaults(TensorSpec spec) {
  if (spec.chunk_elements == 0) spec.chunk_elements = kDefaultChunkElements;
  return spec;
}

void InitializeChunk(const TensorSpec& spec, uint64_t chunk_index, absl::Span<float> out) {
  DCASGD_CHECK(out.size() == spec.chunk_length(chunk_index));
  const Initializer& init = spec.init;
  // One generator per chunk, seeded from (seed, chunk index): the values do
  // not depend on which shard owns the chunk or on the shard count.
  std::seed_seq seq{static_cast<uint32_t>(init.seed), static_cast<uint32_t>(init.seed >> 32),
                    static_cast<uint32_t>(chunk_index), static_cast<uint32_t>(chunk_index >> 32)};
  switch (init.kind) {
    case Initializer::Kind::kZeros:
      std::fill(out.begin(), out.end(), 0.0f);
      break;
    case Initializer::Kind::kConstant:
      std::fill(out.begin(), out.end(), init.a);
      break;
    case Initializer::Kind::kUniform: {
      std::mt19937_64 rng(seq);
      std::uniform_real_distribution<float> dist(init.a, init.b);
      for (float& v : out) v = dist(rng);
      break;
    }
    case Initializer::Kind::kNormal: {
      std::mt19937_64 rng(seq);
      std::normal_distribution<float> dist(init.a, init.b);
      for (float& v : out) v = dist(rng);
      break;
    }
    case Initializer::Kind::kValues: {
      const uint64_t off = spec.chunk_offset(chunk_index);
      std::copy(init.values.begin() + off, init.values.begin() + off + out.size(), out.begin());
      break;
    }
  }
}

}  // namespace dcasgd
