#include "base/shared_bytes.h"

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "gtest/gtest.h"

namespace dcasgd {
namespace {

TEST(SharedBytes, DefaultIsEmptyWithNoOwner) {
  const SharedBytes none;
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(none.size(), 0u);
  EXPECT_EQ(none.view(), "");
  EXPECT_EQ(none.owner(), nullptr);
}

TEST(SharedBytes, CopiesReferToTheBytesWrittenOnce) {
  char* data = nullptr;
  SharedBytes block = SharedBytes::Allocate(16, &data);
  ASSERT_NE(data, nullptr);
  EXPECT_EQ(block.data(), data);
  EXPECT_EQ(block.size(), 16u);
  // Aligned for floats, as the shard writes floats through the pointer.
  EXPECT_EQ(reinterpret_cast<uintptr_t>(data) % alignof(float), 0u);
  std::memcpy(data, "0123456789abcdef", 16);
  const SharedBytes copy = block;
  EXPECT_TRUE(copy.SameBlock(block));
  EXPECT_EQ(copy.data(), block.data());
  EXPECT_EQ(copy.view(), "0123456789abcdef");
  // Another block of equal bytes is not the same block.
  char* other = nullptr;
  const SharedBytes equal = SharedBytes::Allocate(16, &other);
  std::memcpy(other, data, 16);
  EXPECT_EQ(equal.view(), copy.view());
  EXPECT_FALSE(equal.SameBlock(copy));
}

TEST(SharedBytes, TakesAStringWithoutCopyingIt) {
  std::string bytes(1000, 'x');  // beyond any small-string buffer
  const char* where = bytes.data();
  const SharedBytes block(std::move(bytes));
  EXPECT_EQ(block.data(), where);
  EXPECT_EQ(block.view(), std::string(1000, 'x'));
}

// The bytes live while any reference does (a copy, or the owner a gRPC
// slice holds) and are freed with the last one.
TEST(SharedBytes, TheLastReferenceFreesTheBytes) {
  std::weak_ptr<const void> watch;
  std::shared_ptr<const void> held;
  {
    char* data = nullptr;
    SharedBytes block = SharedBytes::Allocate(8, &data);
    std::memcpy(data, "abcdefgh", 8);
    watch = block.owner();
    SharedBytes copy = block;
    block = SharedBytes();
    EXPECT_FALSE(watch.expired());
    EXPECT_EQ(copy.view(), "abcdefgh");
    held = copy.owner();
  }
  EXPECT_FALSE(watch.expired());
  EXPECT_EQ(std::memcmp(held.get(), "abcdefgh", 8), 0);
  held.reset();
  EXPECT_TRUE(watch.expired());
}

}  // namespace
}  // namespace dcasgd
