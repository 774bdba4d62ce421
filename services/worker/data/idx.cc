#include "services/worker/data/idx.h"

#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dcasgd::data {
namespace {

constexpr uint32_t kImagesMagic = 0x00000803;
constexpr uint32_t kLabelsMagic = 0x00000801;

uint32_t ReadBigEndian32(absl::string_view bytes, size_t offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data() + offset);
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

}  // namespace

absl::StatusOr<IdxImages> ParseIdxImages(absl::string_view bytes, absl::string_view name) {
  constexpr size_t kHeader = 16;
  if (bytes.size() < kHeader) {
    return absl::DataLossError(absl::StrCat("IDX images ", name, ": ", bytes.size(),
                                            " bytes is shorter than the 16-byte header"));
  }
  const uint32_t magic = ReadBigEndian32(bytes, 0);
  if (magic != kImagesMagic) {
    return absl::DataLossError(absl::StrCat("IDX images ", name, ": magic 0x",
                                            absl::Hex(magic, absl::kZeroPad8),
                                            " is not 0x00000803 (uint8, 3 dimensions)"));
  }
  IdxImages images;
  images.count = ReadBigEndian32(bytes, 4);
  images.rows = ReadBigEndian32(bytes, 8);
  images.cols = ReadBigEndian32(bytes, 12);
  if (images.rows == 0 || images.cols == 0) {
    return absl::DataLossError(
        absl::StrCat("IDX images ", name, ": zero image size ", images.rows, "x", images.cols));
  }
  // count * rows fits in 64 bits; the product with cols may not.
  const uint64_t count_rows = uint64_t{images.count} * images.rows;
  const bool overflows = count_rows > std::numeric_limits<uint64_t>::max() / images.cols;
  if (overflows || count_rows * images.cols != bytes.size() - kHeader) {
    return absl::DataLossError(absl::StrCat(
        "IDX images ", name, ": header says ", images.count, " images of ", images.rows, "x",
        images.cols, " but the file has ", bytes.size() - kHeader, " data bytes"));
  }
  images.pixels.assign(bytes.begin() + kHeader, bytes.end());
  return images;
}

absl::StatusOr<IdxLabels> ParseIdxLabels(absl::string_view bytes, absl::string_view name) {
  constexpr size_t kHeader = 8;
  if (bytes.size() < kHeader) {
    return absl::DataLossError(absl::StrCat("IDX labels ", name, ": ", bytes.size(),
                                            " bytes is shorter than the 8-byte header"));
  }
  const uint32_t magic = ReadBigEndian32(bytes, 0);
  if (magic != kLabelsMagic) {
    return absl::DataLossError(absl::StrCat("IDX labels ", name, ": magic 0x",
                                            absl::Hex(magic, absl::kZeroPad8),
                                            " is not 0x00000801 (uint8, 1 dimension)"));
  }
  const uint32_t count = ReadBigEndian32(bytes, 4);
  if (count != bytes.size() - kHeader) {
    return absl::DataLossError(absl::StrCat("IDX labels ", name, ": header says ", count,
                                            " labels but the file has ", bytes.size() - kHeader,
                                            " data bytes"));
  }
  IdxLabels labels;
  labels.labels.assign(bytes.begin() + kHeader, bytes.end());
  return labels;
}

absl::StatusOr<std::string> ReadGzipFile(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) {
    const int err = errno;
    const std::string message = absl::StrCat("cannot open ", path, ": ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(message) : absl::InternalError(message);
  }
  gzbuffer(file, 1 << 17);
  std::string out;
  char buffer[1 << 16];
  while (true) {
    const int n = gzread(file, buffer, sizeof(buffer));
    if (n < 0) {
      int zerr = 0;
      const std::string message = absl::StrCat(path, ": corrupt gzip data: ", gzerror(file, &zerr));
      gzclose(file);
      return absl::DataLossError(message);
    }
    if (n == 0) break;
    out.append(buffer, static_cast<size_t>(n));
  }
  // gzread reports a truncated stream only through gzerror / gzclose.
  int zerr = Z_OK;
  const char* error = gzerror(file, &zerr);
  if (zerr != Z_OK && zerr != Z_STREAM_END) {
    const std::string message = absl::StrCat(path, ": corrupt gzip data: ", error);
    gzclose(file);
    return absl::DataLossError(message);
  }
  if (gzclose(file) != Z_OK) {
    return absl::DataLossError(absl::StrCat(path, ": truncated or corrupt gzip stream"));
  }
  return out;
}

absl::StatusOr<IdxImages> ReadIdxImages(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadGzipFile(path);
  if (!bytes.ok()) return bytes.status();
  return ParseIdxImages(*bytes, path);
}

absl::StatusOr<IdxLabels> ReadIdxLabels(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadGzipFile(path);
  if (!bytes.ok()) return bytes.status();
  return ParseIdxLabels(*bytes, path);
}

}  // namespace dcasgd::data
