#include "services/worker/worker_options.h"

#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<WorkerOptions> Parse(std::vector<std::string> extra) {
  std::vector<std::string> args = {"--ps_addresses=127.0.0.1:1", "--data=/d", "--worker_name=w"};
  args.insert(args.end(), extra.begin(), extra.end());
  return ParseWorkerOptions(args, [](const std::string&) { return std::optional<std::string>(); });
}

TEST(WorkerOptions, WireDtypeDefaultsToFloat32AndTakesEachName) {
  absl::StatusOr<WorkerOptions> o = Parse({});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->wire_dtype, Dtype::kFloat32);
  for (const auto& [name, dtype] :
       std::vector<std::pair<std::string, Dtype>>{{"float32", Dtype::kFloat32},
                                                  {"bfloat16", Dtype::kBfloat16},
                                                  {"float16", Dtype::kFloat16},
                                                  {"bf16", Dtype::kBfloat16}}) {
    o = Parse({"--wire_dtype=" + name});
    ASSERT_TRUE(o.ok()) << name << ": " << o.status();
    EXPECT_EQ(o->wire_dtype, dtype) << name;
  }
}

TEST(WorkerOptions, UnknownWireDtypeNamesTheFlagAndTheChoices) {
  const absl::StatusOr<WorkerOptions> o = Parse({"--wire_dtype=int8"});
  ASSERT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(o.status().message(), HasSubstr("--wire_dtype"));
  EXPECT_THAT(o.status().message(), HasSubstr("'int8'"));
  EXPECT_THAT(o.status().message(), HasSubstr("float32 | bfloat16 | float16"));
}

}  // namespace
}  // namespace dcasgd
