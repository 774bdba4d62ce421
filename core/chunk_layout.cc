#include "core/chunk_layout.h"

#include <algorithm>

#include "base/check.h"

namespace dcasgd {

uint64_t NumChunks(uint64_t num_elements, uint32_t chunk_elements) {
  DCASGD_CHECK(chunk_elements >= 1);
  return (num_elements + chunk_elements - 1) / chunk_elements;
}

uint64_t ChunkLength(uint64_t num_elements, uint32_t chunk_elements, uint64_t index) {
  const uint64_t begin = ChunkOffset(chunk_elements, index);
  DCASGD_CHECK(begin < num_elements);
  return std::min<uint64_t>(chunk_elements, num_elements - begin);
}

}  // namespace dcasgd
