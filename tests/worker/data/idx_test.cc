#include "services/worker/data/idx.h"

#include <stdlib.h>
#include <zlib.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcasgd::data {
namespace {

using ::testing::HasSubstr;

constexpr char kFashionMnist[] = "/usr/share/datasets/fashion-mnist";

std::string BigEndian(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

std::string ImagesFile(uint32_t count, uint32_t rows, uint32_t cols, size_t data_bytes) {
  return BigEndian(0x803) + BigEndian(count) + BigEndian(rows) + BigEndian(cols) +
         std::string(data_bytes, '\x07');
}

TEST(IdxFashionMnist, TrainImagesAndLabels) {
  absl::StatusOr<IdxImages> images =
      ReadIdxImages(std::string(kFashionMnist) + "/train-images-idx3-ubyte.gz");
  ASSERT_TRUE(images.ok()) << images.status() << " (install dataset-fashion-mnist)";
  EXPECT_EQ(images->count, 60000u);
  EXPECT_EQ(images->rows, 28u);
  EXPECT_EQ(images->cols, 28u);
  EXPECT_EQ(images->pixels.size(), 60000u * 28 * 28);
  absl::StatusOr<IdxLabels> labels =
      ReadIdxLabels(std::string(kFashionMnist) + "/train-labels-idx1-ubyte.gz");
  ASSERT_TRUE(labels.ok()) << labels.status();
  ASSERT_EQ(labels->labels.size(), 60000u);
  // Fashion-MNIST is balanced: 6000 training examples per class 0..9.
  std::array<int, 10> per_class{};
  for (uint8_t label : labels->labels) {
    ASSERT_LT(label, 10);
    ++per_class[label];
  }
  for (int count : per_class) EXPECT_EQ(count, 6000);
  // Images are not blank: some ink, some background.
  size_t zeros = 0;
  for (uint8_t p : images->pixels) zeros += p == 0;
  EXPECT_GT(zeros, images->pixels.size() / 10);
  EXPECT_LT(zeros, images->pixels.size());
}

TEST(IdxFashionMnist, TestImagesAndLabels) {
  absl::StatusOr<IdxImages> images =
      ReadIdxImages(std::string(kFashionMnist) + "/t10k-images-idx3-ubyte.gz");
  ASSERT_TRUE(images.ok()) << images.status();
  EXPECT_EQ(images->count, 10000u);
  EXPECT_EQ(images->rows, 28u);
  EXPECT_EQ(images->cols, 28u);
  absl::StatusOr<IdxLabels> labels =
      ReadIdxLabels(std::string(kFashionMnist) + "/t10k-labels-idx1-ubyte.gz");
  ASSERT_TRUE(labels.ok()) << labels.status();
  std::array<int, 10> per_class{};
  for (uint8_t label : labels->labels) {
    ASSERT_LT(label, 10);
    ++per_class[label];
  }
  for (int count : per_class) EXPECT_EQ(count, 1000);
}

TEST(ParseIdxImages, ReadsHeaderAndPixels) {
  absl::StatusOr<IdxImages> images = ParseIdxImages(ImagesFile(2, 3, 4, 24), "x");
  ASSERT_TRUE(images.ok()) << images.status();
  EXPECT_EQ(images->count, 2u);
  EXPECT_EQ(images->rows, 3u);
  EXPECT_EQ(images->cols, 4u);
  EXPECT_EQ(images->pixels, std::vector<uint8_t>(24, 7));
  absl::StatusOr<IdxImages> empty = ParseIdxImages(ImagesFile(0, 28, 28, 0), "x");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->count, 0u);
}

TEST(ParseIdxImages, RejectsBadFilesAsDataLossNamingThem) {
  const std::string good = ImagesFile(2, 3, 4, 24);
  for (size_t len = 0; len < good.size(); ++len) {
    const absl::Status status = ParseIdxImages(good.substr(0, len), "cut.idx").status();
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << len;
    EXPECT_THAT(std::string(status.message()), HasSubstr("cut.idx"));
  }
  EXPECT_EQ(ParseIdxImages(good + "x", "long").status().code(), absl::StatusCode::kDataLoss);
  std::string labels_magic = good;
  labels_magic[3] = 0x01;
  EXPECT_EQ(ParseIdxImages(labels_magic, "m").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseIdxImages(ImagesFile(2, 0, 4, 0), "z").status().code(),
            absl::StatusCode::kDataLoss);
  // Dimensions whose product overflows 64 bits.
  EXPECT_EQ(ParseIdxImages(ImagesFile(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 8), "o").status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(ParseIdxLabels, ReadsAndRejects) {
  const std::string good = BigEndian(0x801) + BigEndian(3) + std::string("\x01\x02\x09", 3);
  absl::StatusOr<IdxLabels> labels = ParseIdxLabels(good, "l");
  ASSERT_TRUE(labels.ok()) << labels.status();
  EXPECT_EQ(labels->labels, (std::vector<uint8_t>{1, 2, 9}));
  for (size_t len = 0; len < good.size(); ++len) {
    const absl::Status status = ParseIdxLabels(good.substr(0, len), "cut-labels").status();
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << len;
    EXPECT_THAT(std::string(status.message()), HasSubstr("cut-labels"));
  }
  EXPECT_EQ(ParseIdxLabels(ImagesFile(1, 1, 1, 1), "img").status().code(),
            absl::StatusCode::kDataLoss);
}

class IdxFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::temp_directory_path() / "dcasgd-idx-XXXXXX").string();
    ASSERT_NE(::mkdtemp(dir_.data()), nullptr);
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string WriteGzip(const std::string& name, const std::string& bytes) {
    const std::string path = dir_ + "/" + name;
    gzFile file = gzopen(path.c_str(), "wb");
    EXPECT_NE(file, nullptr);
    EXPECT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())),
              static_cast<int>(bytes.size()));
    EXPECT_EQ(gzclose(file), Z_OK);
    return path;
  }
  std::string dir_;
};

TEST_F(IdxFiles, ReadsGzippedFiles) {
  const std::string path = WriteGzip("imgs.gz", ImagesFile(5, 2, 2, 20));
  absl::StatusOr<IdxImages> images = ReadIdxImages(path);
  ASSERT_TRUE(images.ok()) << images.status();
  EXPECT_EQ(images->count, 5u);
}

TEST_F(IdxFiles, TruncatedGzipIsDataLoss) {
  std::string noise(100000, '\0');
  for (size_t i = 0; i < noise.size(); ++i) noise[i] = static_cast<char>((i * 7919) % 251);
  const std::string path = WriteGzip("imgs.gz", ImagesFile(1000, 10, 10, 0) + noise);
  const auto size = std::filesystem::file_size(path);
  std::filesystem::resize_file(path, size / 2);
  const absl::Status status = ReadIdxImages(path).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(path));
}

TEST_F(IdxFiles, MissingFileIsNotFound) {
  const absl::Status status = ReadIdxLabels(dir_ + "/absent.gz").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("absent.gz"));
}

}  // namespace
}  // namespace dcasgd::data
