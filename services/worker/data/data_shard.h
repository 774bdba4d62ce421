#ifndef DCASGD_SERVICES_WORKER_DATA_DATA_SHARD_H_
#define DCASGD_SERVICES_WORKER_DATA_DATA_SHARD_H_

// The data-shard object format (docs/data-format.md): a 40-byte little-endian
// header (magic "DCASGDDS", format version, example count, rows, cols, number
// of classes), uint8 pixels, uint8 labels, and a CRC-32 trailer over
// everything before it. One shard is the unit a worker leases and reads.
// Pure functions, thread-safe.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dcasgd::data {

inline constexpr absl::string_view kDataShardMagic = "DCASGDDS";
inline constexpr uint32_t kDataShardFormatVersion = 1;
inline constexpr size_t kDataShardHeaderBytes = 40;
inline constexpr size_t kDataShardTrailerBytes = 4;

// Examples as stored: `pixels` holds example_count() images of rows x cols
// uint8 values, row-major, one after another; `labels` one class per example.
struct DataShard {
  uint32_t rows = 0;
  uint32_t cols = 0;
  uint32_t num_classes = 0;
  std::vector<uint8_t> pixels;
  std::vector<uint8_t> labels;

  size_t example_count() const { return labels.size(); }
  size_t example_size() const { return size_t{rows} * cols; }
};

// Serializes `shard`. INVALID_ARGUMENT if rows, cols or num_classes is 0,
// num_classes > 256, pixels.size() != example_count() * rows * cols, or a
// label is >= num_classes.
absl::StatusOr<std::string> EncodeDataShard(const DataShard& shard);

// Parses an encoded shard. `name` (e.g. the object's URI) is put into every
// error message. DATA_LOSS for anything truncated or corrupt: too short,
// wrong magic, CRC mismatch, impossible dimensions, a size that disagrees
// with the header, a label out of range. FAILED_PRECONDITION for an intact
// shard of an unsupported (newer) format version. A shard that fails to
// decode must never be trained on.
absl::StatusOr<DataShard> DecodeDataShard(absl::string_view bytes, absl::string_view name);

// The CRC-32 (IEEE 802.3, as zlib's crc32) of `bytes`.
uint32_t Crc32(absl::string_view bytes);

// Examples ready for a model: features scaled to [0, 1] (pixel / 255),
// row-major, `feature_dim` = rows * cols floats per example; labels as ints in
// [0, num_classes).
struct LabeledExamples {
  size_t count = 0;
  size_t feature_dim = 0;
  int num_classes = 0;
  std::vector<float> features;  // count * feature_dim
  std::vector<int> labels;      // count
};

LabeledExamples ToLabeledExamples(const DataShard& shard);

}  // namespace dcasgd::data

#endif  // DCASGD_SERVICES_WORKER_DATA_DATA_SHARD_H_
