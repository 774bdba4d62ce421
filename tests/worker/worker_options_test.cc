#include "services/worker/worker_options.h"

#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/worker/worker.h"

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

TEST(WorkerOptions, ReplicatedShardsAreWrittenAsTwoMembers) {
  absl::StatusOr<WorkerOptions> o = Parse({"--ps_addresses=a:1|b:1, c:1"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->shard_addresses, (std::vector<std::string>{"a:1", "c:1"}));
  EXPECT_EQ(o->replica_addresses, (std::vector<std::string>{"b:1", ""}));
  EXPECT_EQ(CoordinatorAddress(*o), "a:1|b:1");
  o = Parse({"--ps_addresses=a:1,c:1"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_TRUE(o->replica_addresses.empty()) << "no shard has two members";
  EXPECT_EQ(CoordinatorAddress(*o), "a:1");
}

TEST(WorkerOptions, BadMembersNameTheShard) {
  for (const char* list : {"a:1|", "a:1,|b:1", "a:1|b:1|c:1", "a:1,b:1|b:1"}) {
    const absl::StatusOr<WorkerOptions> o = Parse({std::string("--ps_addresses=") + list});
    ASSERT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument) << list;
    EXPECT_THAT(o.status().message(), HasSubstr("--ps_addresses: shard ")) << list;
  }
}

TEST(WorkerOptions, TheTemplateWithTwoReplicasNumbersMembersBAfterTheShards) {
  absl::StatusOr<WorkerOptions> o = Parse({"--ps_addresses=", "--ps_address_template=ps-{i}:7000",
                                           "--shard_count=2", "--ps_replicas=2"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->shard_addresses, (std::vector<std::string>{"ps-0:7000", "ps-1:7000"}));
  EXPECT_EQ(o->replica_addresses, (std::vector<std::string>{"ps-2:7000", "ps-3:7000"}));
  o = Parse({"--ps_addresses=", "--ps_address_template=ps-{i}:7000", "--shard_count=2"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_TRUE(o->replica_addresses.empty());
  EXPECT_EQ(Parse({"--ps_replicas=3"}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(WorkerOptions, PipelineDepthIsAutoForATrainerByDefault) {
  absl::StatusOr<WorkerOptions> o = Parse({});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_TRUE(o->pipeline_depth_auto);
  EXPECT_EQ(o->pipeline_depth, 0u);
  o = Parse({"--pipeline_depth=auto"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_TRUE(o->pipeline_depth_auto);
}

TEST(WorkerOptions, AutoPipelineDepthIsZeroForVirtualWorkersAndTheEvaluator) {
  absl::StatusOr<WorkerOptions> o = Parse({"--virtual_workers=4"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_FALSE(o->pipeline_depth_auto);
  EXPECT_EQ(o->pipeline_depth, 0u);
  o = Parse({"--role=eval"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_FALSE(o->pipeline_depth_auto);
}

TEST(WorkerOptions, AnExplicitPipelineDepthIsKept) {
  for (uint32_t depth = 0; depth <= kMaxPipelineDepth; ++depth) {
    const absl::StatusOr<WorkerOptions> o = Parse({"--pipeline_depth=" + std::to_string(depth)});
    ASSERT_TRUE(o.ok()) << depth << ": " << o.status();
    EXPECT_FALSE(o->pipeline_depth_auto);
    EXPECT_EQ(o->pipeline_depth, depth);
  }
}

TEST(WorkerOptions, BadPipelineDepthNamesTheFlagAndTheRange) {
  for (const std::string bad : {"5", "-1", "one", "", "1.5"}) {
    const absl::StatusOr<WorkerOptions> o = Parse({"--pipeline_depth=" + bad});
    ASSERT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(o.status().message(), HasSubstr("--pipeline_depth")) << bad;
    EXPECT_THAT(o.status().message(), HasSubstr("auto or in [0, 4]")) << bad;
  }
  const absl::StatusOr<WorkerOptions> o = Parse({"--pipeline_depth=1", "--virtual_workers=2"});
  ASSERT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(o.status().message(), HasSubstr("virtual workers"));
}

TEST(WorkerOptions, DataCacheIs256MiBByDefaultAndZeroTurnsItOff) {
  absl::StatusOr<WorkerOptions> o = Parse({});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->data_cache_bytes, size_t{256} << 20);
  o = Parse({"--data_cache_mb=0"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->data_cache_bytes, 0u);
  o = Parse({"--data_cache_mb=1024"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->data_cache_bytes, size_t{1} << 30);
}

TEST(WorkerOptions, BadDataCacheSizeNamesTheFlagAndTheRange) {
  for (const std::string bad : {"-1", "1048577", "lots"}) {
    const absl::StatusOr<WorkerOptions> o = Parse({"--data_cache_mb=" + bad});
    ASSERT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(o.status().message(), HasSubstr("--data_cache_mb")) << bad;
  }
}

ShardStatus Shard(uint32_t index, std::string rule, std::string sync) {
  ShardStatus status;
  status.shard_index = index;
  status.rule = std::move(rule);
  status.sync = std::move(sync);
  return status;
}

TEST(AutoPipelineDepth, OneUnderDcasgdWithAsyncOnEveryShard) {
  std::string why;
  EXPECT_EQ(AutoPipelineDepth({Shard(0, "dcasgd-a", "async"), Shard(1, "dcasgd-a", "async")}, &why),
            1u);
  EXPECT_THAT(why, HasSubstr("dcasgd-a"));
  EXPECT_EQ(AutoPipelineDepth({Shard(0, "dcasgd-c", "async")}, &why), 1u);
}

TEST(AutoPipelineDepth, ZeroForAnyOtherRuleOrSyncModeNamingTheShard) {
  std::string why;
  EXPECT_EQ(AutoPipelineDepth({Shard(0, "asgd", "async")}, &why), 0u);
  EXPECT_THAT(why, HasSubstr("shard 0 runs asgd with sync async"));
  EXPECT_EQ(AutoPipelineDepth({Shard(0, "dcasgd-a", "ssgd")}, &why), 0u);
  EXPECT_THAT(why, HasSubstr("sync ssgd"));
  EXPECT_EQ(AutoPipelineDepth({Shard(0, "dcasgd-a", "ssp")}, &why), 0u);
  EXPECT_EQ(AutoPipelineDepth({Shard(0, "dcasgd-a", "async"), Shard(1, "asgd", "async")}, &why),
            0u);
  EXPECT_THAT(why, HasSubstr("shard 1"));
  // An older shard that does not report its rule: stay at today's behaviour.
  EXPECT_EQ(AutoPipelineDepth({Shard(0, "", "")}, &why), 0u);
  EXPECT_EQ(AutoPipelineDepth({}, &why), 0u);
}

}  // namespace
}  // namespace dcasgd
