// Test helpers: float32 values as the little-endian bytes of a Chunk's
// `values` (protos/dcasgd/v1/ps.proto) and of the store's chunk copies, and
// back.
#ifndef DCASGD_TESTS_TESTING_FLOAT_BYTES_H_
#define DCASGD_TESTS_TESTING_FLOAT_BYTES_H_

#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "base/shared_bytes.h"

namespace dcasgd {
namespace testing {

inline std::string Bytes(const std::vector<float>& values) {
  std::string bytes(values.size() * sizeof(float), '\0');
  if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

// Whole floats only: a trailing partial float is dropped.
inline std::vector<float> Floats(absl::string_view bytes) {
  std::vector<float> values(bytes.size() / sizeof(float));
  if (!values.empty()) std::memcpy(values.data(), bytes.data(), values.size() * sizeof(float));
  return values;
}
inline std::vector<float> Floats(const std::string& bytes) {
  return Floats(absl::string_view(bytes));
}
inline std::vector<float> Floats(const SharedBytes& bytes) { return Floats(bytes.view()); }

}  // namespace testing
}  // namespace dcasgd

#endif  // DCASGD_TESTS_TESTING_FLOAT_BYTES_H_
