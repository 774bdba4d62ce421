#include "services/worker/data/prepare_data.h"

#include <numeric>
#include <random>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "services/worker/data/data_shard.h"

namespace dcasgd::data {
namespace {

// A permutation of [0, n). Fisher-Yates driven by mt19937_64, whose output
// is fixed by the standard, so a seed gives the same data set everywhere
// (std::shuffle's result is implementation-defined). The modulo bias is below
// 2^-40 for data sets of this size.
// `salt` gives each split its own stream, so the test order is not a prefix
// of the train permutation.
std::vector<uint32_t> ExampleOrder(size_t n, const std::optional<uint64_t>& seed, uint64_t salt) {
  std::vector<uint32_t> order(n);
  std::iota(order.begin(), order.end(), 0u);
  if (!seed.has_value() || n < 2) return order;
  std::mt19937_64 rng(*seed ^ salt);
  for (size_t i = n - 1; i > 0; --i) {
    const size_t j = static_cast<size_t>(rng() % (i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

absl::Status CheckSplit(const std::string& split, const IdxImages& images, const IdxLabels& labels,
                        int shards) {
  if (images.count != labels.labels.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        split, " split has ", images.count, " images but ", labels.labels.size(), " labels"));
  }
  if (shards < 1 || static_cast<uint64_t>(shards) > images.count) {
    return absl::InvalidArgumentError(
        absl::StrCat(split, " shard count ", shards, " must be in [1, ", images.count, "]"));
  }
  return absl::OkStatus();
}

}  // namespace

std::string DataShardObjectName(const std::string& split, int index, int count) {
  return absl::StrFormat("%s/shard-%05d-of-%05d.dsd", split, index, count);
}

std::vector<uint64_t> ShardBoundaries(uint64_t count, int shards) {
  std::vector<uint64_t> bounds(static_cast<size_t>(shards) + 1);
  for (int i = 0; i <= shards; ++i) {
    bounds[static_cast<size_t>(i)] =
        count * static_cast<uint64_t>(i) / static_cast<uint64_t>(shards);
  }
  return bounds;
}

std::string ManifestToJson(const Manifest& manifest) {
  std::string out = "{\n";
  absl::StrAppend(&out, "  \"format\": \"dcasgd-data-shard\",\n");
  absl::StrAppend(&out, "  \"format_version\": ", kDataShardFormatVersion, ",\n");
  absl::StrAppend(&out, "  \"rows\": ", manifest.rows, ",\n");
  absl::StrAppend(&out, "  \"cols\": ", manifest.cols, ",\n");
  absl::StrAppend(&out, "  \"num_classes\": ", manifest.num_classes, ",\n");
  absl::StrAppend(&out, "  \"train_examples\": ", manifest.train_examples, ",\n");
  absl::StrAppend(&out, "  \"test_examples\": ", manifest.test_examples, ",\n");
  absl::StrAppend(&out,
                  "  \"seed\": ", manifest.seed.has_value() ? absl::StrCat(*manifest.seed) : "null",
                  ",\n");
  absl::StrAppend(&out, "  \"shards\": [");
  for (size_t i = 0; i < manifest.shards.size(); ++i) {
    const ManifestShard& s = manifest.shards[i];
    // Object names are generated ("split/shard-N-of-M.dsd"): no JSON escaping
    // is needed.
    absl::StrAppendFormat(&out,
                          "%s\n    {\"split\": \"%s\", \"object\": \"%s\", \"examples\": %d, "
                          "\"bytes\": %d, \"crc32\": %d}",
                          i == 0 ? "" : ",", s.split, s.object, s.examples, s.bytes, s.crc32);
  }
  absl::StrAppend(&out, manifest.shards.empty() ? "]\n" : "\n  ]\n", "}\n");
  return out;
}

absl::Status WriteSplit(const std::string& split, const IdxImages& images, const IdxLabels& labels,
                        const std::vector<uint32_t>& order, int shards, int num_classes,
                        storage::BlobStore& dest, Manifest* manifest) {
  RETURN_IF_ERROR(CheckSplit(split, images, labels, shards));
  const size_t example_size = size_t{images.rows} * images.cols;
  const std::vector<uint64_t> bounds = ShardBoundaries(images.count, shards);
  for (int i = 0; i < shards; ++i) {
    DataShard shard;
    shard.rows = images.rows;
    shard.cols = images.cols;
    shard.num_classes = static_cast<uint32_t>(num_classes);
    const uint64_t begin = bounds[static_cast<size_t>(i)];
    const uint64_t end = bounds[static_cast<size_t>(i) + 1];
    shard.pixels.reserve((end - begin) * example_size);
    shard.labels.reserve(end - begin);
    for (uint64_t pos = begin; pos < end; ++pos) {
      const size_t example = order[pos];
      const auto first = images.pixels.begin() + static_cast<ptrdiff_t>(example * example_size);
      shard.pixels.insert(shard.pixels.end(), first, first + static_cast<ptrdiff_t>(example_size));
      shard.labels.push_back(labels.labels[example]);
    }
    ASSIGN_OR_RETURN(const std::string encoded, EncodeDataShard(shard));
    const std::string object = DataShardObjectName(split, i, shards);
    RETURN_IF_ERROR(dest.Put(object, encoded));
    ManifestShard entry;
    entry.split = split;
    entry.object = object;
    entry.examples = end - begin;
    entry.bytes = encoded.size();
    entry.crc32 =
        Crc32(absl::string_view(encoded).substr(0, encoded.size() - kDataShardTrailerBytes));
    manifest->shards.push_back(std::move(entry));
  }
  return absl::OkStatus();
}

absl::StatusOr<Manifest> PrepareData(const PrepareDataOptions& options, storage::BlobStore& dest) {
  if (options.num_classes < 1 || options.num_classes > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("class count ", options.num_classes, " not in [1, 256]"));
  }
  const std::string dir = options.source_dir;
  ASSIGN_OR_RETURN(const IdxImages train_images,
                   ReadIdxImages(absl::StrCat(dir, "/train-images-idx3-ubyte.gz")));
  ASSIGN_OR_RETURN(const IdxLabels train_labels,
                   ReadIdxLabels(absl::StrCat(dir, "/train-labels-idx1-ubyte.gz")));
  ASSIGN_OR_RETURN(const IdxImages test_images,
                   ReadIdxImages(absl::StrCat(dir, "/t10k-images-idx3-ubyte.gz")));
  ASSIGN_OR_RETURN(const IdxLabels test_labels,
                   ReadIdxLabels(absl::StrCat(dir, "/t10k-labels-idx1-ubyte.gz")));
  if (train_images.rows != test_images.rows || train_images.cols != test_images.cols) {
    return absl::InvalidArgumentError(absl::StrCat("train images are ", train_images.rows, "x",
                                                   train_images.cols, " but test images are ",
                                                   test_images.rows, "x", test_images.cols));
  }
  // Validate both splits before writing anything.
  RETURN_IF_ERROR(CheckSplit("train", train_images, train_labels, options.train_shards));
  RETURN_IF_ERROR(CheckSplit("test", test_images, test_labels, options.test_shards));

  Manifest manifest;
  manifest.rows = train_images.rows;
  manifest.cols = train_images.cols;
  manifest.num_classes = static_cast<uint32_t>(options.num_classes);
  manifest.train_examples = train_images.count;
  manifest.test_examples = test_images.count;
  manifest.seed = options.seed;
  RETURN_IF_ERROR(WriteSplit("train", train_images, train_labels,
                             ExampleOrder(train_images.count, options.seed, 0),
                             options.train_shards, options.num_classes, dest, &manifest));
  RETURN_IF_ERROR(WriteSplit("test", test_images, test_labels,
                             ExampleOrder(test_images.count, options.seed, 0x9E3779B97F4A7C15ull),
                             options.test_shards, options.num_classes, dest, &manifest));
  RETURN_IF_ERROR(dest.Put("manifest.json", ManifestToJson(manifest)));
  return manifest;
}

}  // namespace dcasgd::data
