#ifndef DCASGD_BASE_SHARED_BYTES_H_
#define DCASGD_BASE_SHARED_BYTES_H_

#include <cstddef>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"

namespace dcasgd {

// An immutable block of bytes owned by reference counting: every copy is
// another reference to the same bytes, freed with the last one. A shard
// writes a chunk's new weights once into such a block and the same bytes
// serve as the worker's reply on the wire (a gRPC slice holds a reference
// until it is written) and as that worker's backup w_bak(m), where separate
// buffers cost a copy of the chunk per round and a zero-fill.
//
// The bytes never change once a block is shared: only the writer that
// Allocate returned the pointer to writes them, before the first copy.
// Thread-safe as std::shared_ptr is: copies may be made and dropped on any
// thread.
class SharedBytes {
 public:
  SharedBytes() = default;
  // Takes `bytes` without copying them.
  explicit SharedBytes(std::string bytes) {
    auto owned = std::make_shared<const std::string>(std::move(bytes));
    data_ = owned->data();
    size_ = owned->size();
    owner_ = std::move(owned);
  }
  // A block of `size` bytes left uninitialised (no zero-fill), aligned as
  // operator new aligns (so for floats), to write through `*data` before
  // the block is copied.
  static SharedBytes Allocate(size_t size, char** data) {
    std::shared_ptr<char[]> block(new char[size]);
    *data = block.get();
    SharedBytes out;
    out.data_ = block.get();
    out.size_ = size;
    out.owner_ = std::move(block);
    return out;
  }

  const char* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  absl::string_view view() const { return absl::string_view(data_, size_); }
  // The reference that keeps the bytes alive, for another owner (a gRPC
  // slice) to hold; null for an empty block made by the default constructor.
  const std::shared_ptr<const void>& owner() const { return owner_; }
  // Whether both refer to the same bytes.
  bool SameBlock(const SharedBytes& other) const {
    return data_ == other.data_ && size_ == other.size_;
  }

 private:
  std::shared_ptr<const void> owner_;
  const char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace dcasgd

#endif  // DCASGD_BASE_SHARED_BYTES_H_
