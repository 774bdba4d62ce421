// dcasgd-prepare-data: writes the Fashion-MNIST data set as dcasgd data
// shards + manifest.json to a directory or an S3 bucket.
//   dcasgd-prepare-data --dest s3://bucket/prefix [--shards 20] [--seed 7]
// S3 credentials and endpoint come from the AWS_* environment variables.
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "services/worker/data/prepare_data.h"
#include "storage/blob_store.h"

ABSL_FLAG(std::string, source_dir, "/usr/share/datasets/fashion-mnist",
          "Directory with the gzip'd IDX files (train-*, t10k-*)");
ABSL_FLAG(std::string, dest, "",
          "Destination: s3://bucket/prefix, file:///dir or a directory path");
ABSL_FLAG(int, shards, 20, "Number of train shards");
ABSL_FLAG(int, test_shards, 1, "Number of test shards");
ABSL_FLAG(std::optional<uint64_t>, seed, std::nullopt,
          "Shuffle examples with this seed before sharding (default: file order)");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Writes the data set as data shards + manifest.json.\n"
      "Usage: dcasgd-prepare-data --dest s3://bucket/prefix|DIR [--shards N] "
      "[--test_shards N] [--seed S] [--source_dir DIR]");
  absl::ParseCommandLine(argc, argv);
  const std::string dest_uri = absl::GetFlag(FLAGS_dest);
  if (dest_uri.empty()) {
    std::fprintf(stderr, "dcasgd-prepare-data: --dest is required\n");
    return 2;
  }
  absl::StatusOr<std::unique_ptr<dcasgd::storage::BlobStore>> dest =
      dcasgd::storage::OpenBlobStore(dest_uri);
  if (!dest.ok()) {
    std::fprintf(stderr, "dcasgd-prepare-data: %s\n", dest.status().ToString().c_str());
    return 1;
  }
  dcasgd::data::PrepareDataOptions options;
  options.source_dir = absl::GetFlag(FLAGS_source_dir);
  options.train_shards = absl::GetFlag(FLAGS_shards);
  options.test_shards = absl::GetFlag(FLAGS_test_shards);
  options.seed = absl::GetFlag(FLAGS_seed);
  absl::StatusOr<dcasgd::data::Manifest> manifest = dcasgd::data::PrepareData(options, **dest);
  if (!manifest.ok()) {
    std::fprintf(stderr, "dcasgd-prepare-data: %s\n", manifest.status().ToString().c_str());
    return 1;
  }
  std::printf("wrote %zu shards (%llu train, %llu test examples) and manifest.json to %s\n",
              manifest->shards.size(), static_cast<unsigned long long>(manifest->train_examples),
              static_cast<unsigned long long>(manifest->test_examples), dest_uri.c_str());
  return 0;
}
