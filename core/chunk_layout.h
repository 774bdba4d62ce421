#ifndef DCASGD_CORE_CHUNK_LAYOUT_H_
#define DCASGD_CORE_CHUNK_LAYOUT_H_

// The chunk arithmetic of the API (ps.proto "Chunking and placement"), the
// one copy the shard (core/tensor.h TensorSpec) and the clients
// (clients/cpp/chunk_plan.h) share: a tensor of n elements in chunks of c
// elements has ceil(n / c) chunks; chunk i starts at element i * c and holds
// c elements, except a shorter last one.

#include <cstdint>
#include <string>

namespace dcasgd {

// ceil(num_elements / chunk_elements); 0 for an empty tensor. Requires
// chunk_elements >= 1.
uint64_t NumChunks(uint64_t num_elements, uint32_t chunk_elements);
// The first element of chunk `index`.
inline uint64_t ChunkOffset(uint32_t chunk_elements, uint64_t index) {
  return index * uint64_t{chunk_elements};
}
// Elements of chunk `index`. Requires index < NumChunks(...).
uint64_t ChunkLength(uint64_t num_elements, uint32_t chunk_elements, uint64_t index);

// What it takes to split a declared tensor into chunks: its name, size and
// resolved chunk size (no initialiser: explicit initial values can be large
// and are never needed again after the declaration).
struct TensorLayout {
  std::string name;
  uint64_t num_elements = 0;
  uint32_t chunk_elements = 0;  // resolved, >= 1

  uint64_t num_chunks() const { return NumChunks(num_elements, chunk_elements); }
  uint64_t chunk_offset(uint64_t index) const { return ChunkOffset(chunk_elements, index); }
  uint64_t chunk_length(uint64_t index) const {
    return ChunkLength(num_elements, chunk_elements, index);
  }
};

}  // namespace dcasgd

#endif  // DCASGD_CORE_CHUNK_LAYOUT_H_
