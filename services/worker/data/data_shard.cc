#include "services/worker/data/data_shard.h"

#include <zlib.h>

#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dcasgd::data {
namespace {

constexpr uint32_t kMaxClasses = 256;  // labels are uint8

void PutLittleEndian32(uint32_t v, std::string* out) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

void PutLittleEndian64(uint64_t v, std::string* out) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

uint32_t GetLittleEndian32(absl::string_view bytes, size_t offset) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) {
    v = (v << 8) | static_cast<unsigned char>(bytes[offset + static_cast<size_t>(i)]);
  }
  return v;
}

uint64_t GetLittleEndian64(absl::string_view bytes, size_t offset) {
  return (uint64_t{GetLittleEndian32(bytes, offset + 4)} << 32) | GetLittleEndian32(bytes, offset);
}

}  // namespace

uint32_t Crc32(absl::string_view bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  // zlib takes uInt lengths: feed large inputs in pieces.
  constexpr size_t kPiece = 1u << 30;
  while (!bytes.empty()) {
    const size_t n = std::min(bytes.size(), kPiece);
    crc = crc32(crc, reinterpret_cast<const Bytef*>(bytes.data()), static_cast<uInt>(n));
    bytes.remove_prefix(n);
  }
  return static_cast<uint32_t>(crc);
}

absl::StatusOr<std::string> EncodeDataShard(const DataShard& shard) {
  if (shard.rows == 0 || shard.cols == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("data shard example size ", shard.rows, "x", shard.cols, " is empty"));
  }
  if (shard.num_classes == 0 || shard.num_classes > kMaxClasses) {
    return absl::InvalidArgumentError(
        absl::StrCat("data shard class count ", shard.num_classes, " not in [1, 256]"));
  }
  if (shard.pixels.size() != shard.example_count() * shard.example_size()) {
    return absl::InvalidArgumentError(absl::StrCat("data shard has ", shard.pixels.size(),
                                                   " pixels for ", shard.example_count(),
                                                   " examples of ", shard.rows, "x", shard.cols));
  }
  for (size_t i = 0; i < shard.labels.size(); ++i) {
    if (shard.labels[i] >= shard.num_classes) {
      return absl::InvalidArgumentError(absl::StrCat("data shard label ", int{shard.labels[i]},
                                                     " of example ", i, " is not below ",
                                                     shard.num_classes));
    }
  }
  std::string out;
  out.reserve(kDataShardHeaderBytes + shard.pixels.size() + shard.labels.size() +
              kDataShardTrailerBytes);
  out.append(kDataShardMagic.data(), kDataShardMagic.size());
  PutLittleEndian32(kDataShardFormatVersion, &out);
  PutLittleEndian32(0, &out);  // flags, reserved
  PutLittleEndian64(shard.example_count(), &out);
  PutLittleEndian32(shard.rows, &out);
  PutLittleEndian32(shard.cols, &out);
  PutLittleEndian32(shard.num_classes, &out);
  PutLittleEndian32(0, &out);  // reserved
  out.append(reinterpret_cast<const char*>(shard.pixels.data()), shard.pixels.size());
  out.append(reinterpret_cast<const char*>(shard.labels.data()), shard.labels.size());
  PutLittleEndian32(Crc32(out), &out);
  return out;
}

absl::StatusOr<DataShard> DecodeDataShard(absl::string_view bytes, absl::string_view name) {
  auto corrupt = [name](auto&&... what) {
    return absl::DataLossError(absl::StrCat("data shard ", name, " is corrupt: ", what...));
  };
  constexpr size_t kMinBytes = kDataShardHeaderBytes + kDataShardTrailerBytes;
  if (bytes.size() < kMinBytes) {
    return corrupt("truncated to ", bytes.size(), " bytes (header and trailer alone are ",
                   kMinBytes, ")");
  }
  if (bytes.substr(0, kDataShardMagic.size()) != kDataShardMagic) {
    return corrupt("bad magic (not a DCASGDDS data shard)");
  }
  const size_t body_size = bytes.size() - kDataShardTrailerBytes;
  const uint32_t stored_crc = GetLittleEndian32(bytes, body_size);
  const uint32_t actual_crc = Crc32(bytes.substr(0, body_size));
  if (stored_crc != actual_crc) {
    return corrupt("CRC-32 mismatch (stored 0x", absl::Hex(stored_crc, absl::kZeroPad8),
                   ", computed 0x", absl::Hex(actual_crc, absl::kZeroPad8),
                   "): truncated or damaged");
  }
  const uint32_t version = GetLittleEndian32(bytes, 8);
  if (version != kDataShardFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat("data shard ", name, " has format version ",
                                                      version, "; this build reads version ",
                                                      kDataShardFormatVersion));
  }
  const uint32_t flags = GetLittleEndian32(bytes, 12);
  const uint64_t count = GetLittleEndian64(bytes, 16);
  DataShard shard;
  shard.rows = GetLittleEndian32(bytes, 24);
  shard.cols = GetLittleEndian32(bytes, 28);
  shard.num_classes = GetLittleEndian32(bytes, 32);
  const uint32_t reserved = GetLittleEndian32(bytes, 36);
  if (flags != 0 || reserved != 0) return corrupt("reserved header fields are not zero");
  if (shard.rows == 0 || shard.cols == 0) {
    return corrupt("example size ", shard.rows, "x", shard.cols, " is empty");
  }
  if (shard.num_classes == 0 || shard.num_classes > kMaxClasses) {
    return corrupt("class count ", shard.num_classes, " not in [1, 256]");
  }
  const uint64_t example_size = uint64_t{shard.rows} * shard.cols;
  const uint64_t payload = body_size - kDataShardHeaderBytes;
  // Each example takes example_size + 1 bytes; compare without overflow.
  if (count > payload / (example_size + 1) || count * (example_size + 1) != payload) {
    return corrupt("header says ", count, " examples of ", shard.rows, "x", shard.cols,
                   " but the payload has ", payload, " bytes");
  }
  const size_t pixel_bytes = static_cast<size_t>(count * example_size);
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data()) + kDataShardHeaderBytes;
  shard.pixels.assign(data, data + pixel_bytes);
  shard.labels.assign(data + pixel_bytes, data + pixel_bytes + count);
  for (size_t i = 0; i < shard.labels.size(); ++i) {
    if (shard.labels[i] >= shard.num_classes) {
      return corrupt("label ", int{shard.labels[i]}, " of example ", i, " is not below ",
                     shard.num_classes);
    }
  }
  return shard;
}

LabeledExamples ToLabeledExamples(const DataShard& shard) {
  LabeledExamples examples;
  examples.count = shard.example_count();
  examples.feature_dim = shard.example_size();
  examples.num_classes = static_cast<int>(shard.num_classes);
  examples.features.resize(shard.pixels.size());
  // Division (not a reciprocal multiply) keeps 255 -> exactly 1.0f.
  for (size_t i = 0; i < shard.pixels.size(); ++i) {
    examples.features[i] = static_cast<float>(shard.pixels[i]) / 255.0f;
  }
  examples.labels.assign(shard.labels.begin(), shard.labels.end());
  return examples;
}

}  // namespace dcasgd::data
