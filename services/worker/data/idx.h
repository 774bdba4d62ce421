#ifndef DCASGD_SERVICES_WORKER_DATA_IDX_H_
#define DCASGD_SERVICES_WORKER_DATA_IDX_H_

// Decoding of the IDX files MNIST and Fashion-MNIST ship in (usually
// gzip'd): a big-endian header (magic 0x00000803 + count, rows, cols for
// images; magic 0x00000801 + count for labels) followed by uint8 data.
// Pure functions, thread-safe.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dcasgd::data {

struct IdxImages {
  uint32_t count = 0;
  uint32_t rows = 0;
  uint32_t cols = 0;
  std::vector<uint8_t> pixels;  // count * rows * cols, row-major per image
};

struct IdxLabels {
  std::vector<uint8_t> labels;
};

// Parse decompressed IDX bytes. DATA_LOSS naming `name` for a wrong magic, a
// zero dimension, or a size that does not match the header exactly (the
// product of the dimensions is overflow-checked).
absl::StatusOr<IdxImages> ParseIdxImages(absl::string_view bytes, absl::string_view name);
absl::StatusOr<IdxLabels> ParseIdxLabels(absl::string_view bytes, absl::string_view name);

// Reads a whole file through zlib (gzip'd or plain). NOT_FOUND if it does not
// exist, DATA_LOSS naming it if the gzip stream is corrupt or truncated.
absl::StatusOr<std::string> ReadGzipFile(const std::string& path);

// ReadGzipFile + Parse.
absl::StatusOr<IdxImages> ReadIdxImages(const std::string& path);
absl::StatusOr<IdxLabels> ReadIdxLabels(const std::string& path);

}  // namespace dcasgd::data

#endif  // DCASGD_SERVICES_WORKER_DATA_IDX_H_
