#ifndef DCASGD_SERVICES_WORKER_DATA_PREPARE_DATA_H_
#define DCASGD_SERVICES_WORKER_DATA_PREPARE_DATA_H_

// Turns the Fashion-MNIST (or MNIST) IDX files into the data set workers read:
// data shards "train/shard-IIIII-of-NNNNN.dsd" and "test/shard-...dsd" plus
// "manifest.json" (docs/data-format.md), written to any BlobStore. The
// library behind the dcasgd-prepare-data tool.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/worker/data/idx.h"
#include "storage/blob_store.h"

namespace dcasgd::data {

struct PrepareDataOptions {
  // Holds train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
  // t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz.
  std::string source_dir = "/usr/share/datasets/fashion-mnist";
  int train_shards = 20;
  int test_shards = 1;
  // Set: examples of each split are shuffled (deterministically for the seed)
  // before being cut into contiguous ranges. Unset: file order.
  std::optional<uint64_t> seed;
  int num_classes = 10;
};

struct ManifestShard {
  std::string split;   // "train" or "test"
  std::string object;  // key relative to the destination root
  uint64_t examples = 0;
  uint64_t bytes = 0;
  uint32_t crc32 = 0;  // the shard's trailer (CRC-32 of all bytes before it)
};

struct Manifest {
  uint32_t rows = 0;
  uint32_t cols = 0;
  uint32_t num_classes = 0;
  uint64_t train_examples = 0;
  uint64_t test_examples = 0;
  std::optional<uint64_t> seed;
  std::vector<ManifestShard> shards;  // train shards in order, then test
};

// "SPLIT/shard-%05d-of-%05d.dsd".
std::string DataShardObjectName(const std::string& split, int index, int count);

// Splits `count` examples into `shards` contiguous ranges whose sizes differ
// by at most one; returns the `shards + 1` boundaries (first 0, last count).
std::vector<uint64_t> ShardBoundaries(uint64_t count, int shards);

// The manifest as JSON (stable key order, one shard per line).
std::string ManifestToJson(const Manifest& manifest);

// Cuts one split into `shards` shards and Puts them. `order` (size = example
// count) gives the example index for each position. Appends to `manifest`.
absl::Status WriteSplit(const std::string& split, const IdxImages& images, const IdxLabels& labels,
                        const std::vector<uint32_t>& order, int shards, int num_classes,
                        storage::BlobStore& dest, Manifest* manifest);

// Reads the IDX files, writes every shard, then the manifest last (so a
// manifest's presence means the data set is complete). INVALID_ARGUMENT for
// shard counts < 1 or larger than the split, or image/label counts that
// disagree; errors of reading or writing pass through.
absl::StatusOr<Manifest> PrepareData(const PrepareDataOptions& options, storage::BlobStore& dest);

}  // namespace dcasgd::data

#endif  // DCASGD_SERVICES_WORKER_DATA_PREPARE_DATA_H_
