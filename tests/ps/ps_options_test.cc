#include "services/ps/ps_options.h"

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;

// A fake environment.
EnvLookup Env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

absl::StatusOr<PsOptions> Parse(std::vector<std::string> args,
                                std::map<std::string, std::string> env = {}) {
  return ParsePsOptions(args, Env(std::move(env)));
}

TEST(PsOptions, DefaultsWhenNothingIsGiven) {
  absl::StatusOr<PsOptions> options = Parse({});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->listen, "0.0.0.0:7000");
  EXPECT_EQ(options->metrics_address, "0.0.0.0:9100");
  EXPECT_EQ(options->shard.shard_index, 0u);
  EXPECT_EQ(options->shard.shard_count, 1u);
  EXPECT_EQ(options->shard.optimizer.rule, UpdateRule::kDcAsgdAdaptive);
  EXPECT_FLOAT_EQ(options->shard.optimizer.lambda0, 2.0f);
  EXPECT_EQ(options->shard.sync, SyncMode::kAsync);
  EXPECT_EQ(options->shard.max_staleness, -1);
  EXPECT_EQ(options->shard.lease, absl::Seconds(30));
  EXPECT_EQ(options->checkpoint_interval, absl::Seconds(60));
  EXPECT_EQ(options->checkpoint_min_interval, absl::Seconds(1));
  EXPECT_EQ(options->checkpoint_max_age, absl::Seconds(180)) << "three intervals";
  EXPECT_EQ(options->final_checkpoint_timeout, absl::Seconds(5));
  EXPECT_TRUE(options->checkpoint_dir.empty());
  EXPECT_EQ(options->max_message_bytes, 16 << 20);
  EXPECT_TRUE(options->port_file.empty());
}

TEST(PsOptions, ReadsEveryFormOfFlag) {
  absl::StatusOr<PsOptions> options = Parse({"--listen=127.0.0.1:0",
                                             "--shard_count",
                                             "4",
                                             "-shard_index=3",
                                             "--update_rule=asgd",
                                             "--sync=ssp",
                                             "--ssp_bound=2",
                                             "--ssp_policy=reject",
                                             "--max_staleness=8",
                                             "--lr=0.5",
                                             "--momentum=0.9",
                                             "--weight_decay=0.001",
                                             "--staleness_aware",
                                             "--gap_aware",
                                             "--gap_decay=0.99",
                                             "--lr_schedule=step",
                                             "--lr_decay_factor=0.5",
                                             "--lr_decay_every=100",
                                             "--lease_seconds=2.5",
                                             "--checkpoint_dir=/ckpt",
                                             "--checkpoint_interval_seconds=5",
                                             "--metrics_address=",
                                             "--max_message_bytes=2048",
                                             "--max_push_bytes=4096",
                                             "--port_file=/tmp/p"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->listen, "127.0.0.1:0");
  EXPECT_EQ(options->shard.shard_count, 4u);
  EXPECT_EQ(options->shard.shard_index, 3u);
  EXPECT_EQ(options->shard.optimizer.rule, UpdateRule::kAsgd);
  EXPECT_EQ(options->shard.sync, SyncMode::kSsp);
  EXPECT_EQ(options->shard.ssp_bound, 2u);
  EXPECT_EQ(options->shard.ssp_policy, SspPolicy::kReject);
  EXPECT_EQ(options->shard.max_staleness, 8);
  EXPECT_FLOAT_EQ(options->shard.optimizer.learning_rate, 0.5f);
  EXPECT_FLOAT_EQ(options->shard.optimizer.momentum, 0.9f);
  EXPECT_FLOAT_EQ(options->shard.optimizer.weight_decay, 0.001f);
  EXPECT_TRUE(options->shard.optimizer.staleness_aware);
  EXPECT_TRUE(options->shard.optimizer.gap_aware);
  EXPECT_FLOAT_EQ(options->shard.optimizer.gap_decay, 0.99f);
  EXPECT_EQ(options->shard.optimizer.schedule, LrSchedule::kStepDecay);
  EXPECT_FLOAT_EQ(options->shard.optimizer.decay_factor, 0.5f);
  EXPECT_EQ(options->shard.optimizer.decay_every, 100u);
  EXPECT_EQ(options->shard.lease, absl::Milliseconds(2500));
  EXPECT_EQ(options->checkpoint_dir, "/ckpt");
  EXPECT_EQ(options->checkpoint_interval, absl::Seconds(5));
  EXPECT_EQ(options->metrics_address, "");
  EXPECT_EQ(options->max_message_bytes, 2048);
  EXPECT_EQ(options->max_push_bytes, 4096);
  EXPECT_EQ(options->port_file, "/tmp/p");
}

TEST(PsOptions, NoPrefixTurnsABoolOff) {
  absl::StatusOr<PsOptions> options =
      Parse({"--nostaleness_aware"}, {{"DCASGD_STALENESS_AWARE", "true"}});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_FALSE(options->shard.optimizer.staleness_aware);
}

TEST(PsOptions, EnvironmentSetsFlags) {
  absl::StatusOr<PsOptions> options = Parse({}, {{"DCASGD_LR", "0.25"},
                                                 {"DCASGD_SHARD_COUNT", "2"},
                                                 {"DCASGD_SHARD_INDEX", "1"},
                                                 {"DCASGD_CHECKPOINT_DIR", "/data"},
                                                 {"DCASGD_STALENESS_AWARE", "true"},
                                                 {"DCASGD_GAP_AWARE", "true"}});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_FLOAT_EQ(options->shard.optimizer.learning_rate, 0.25f);
  EXPECT_EQ(options->shard.shard_count, 2u);
  EXPECT_EQ(options->shard.shard_index, 1u);
  EXPECT_EQ(options->checkpoint_dir, "/data");
  EXPECT_TRUE(options->shard.optimizer.staleness_aware);
  EXPECT_TRUE(options->shard.optimizer.gap_aware);
}

TEST(PsOptions, FlagWinsOverEnvironment) {
  absl::StatusOr<PsOptions> options = Parse({"--lr=0.3"}, {{"DCASGD_LR", "0.7"}});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_FLOAT_EQ(options->shard.optimizer.learning_rate, 0.3f);
}

TEST(PsOptions, RepeatedParsesDoNotLeakValues) {
  ASSERT_TRUE(Parse({"--lr=0.3", "--update_rule=asgd"}).ok());
  absl::StatusOr<PsOptions> options = Parse({});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_FLOAT_EQ(options->shard.optimizer.learning_rate, 0.1f);
  EXPECT_EQ(options->shard.optimizer.rule, UpdateRule::kDcAsgdAdaptive);
}

TEST(PsOptions, Lambda0DefaultsDependOnTheRule) {
  absl::StatusOr<PsOptions> constant = Parse({"--update_rule=dcasgd-c"});
  ASSERT_TRUE(constant.ok()) << constant.status();
  EXPECT_FLOAT_EQ(constant->shard.optimizer.lambda0, 0.04f);
  absl::StatusOr<PsOptions> adaptive = Parse({"--update_rule=dcasgd-a"});
  ASSERT_TRUE(adaptive.ok()) << adaptive.status();
  EXPECT_FLOAT_EQ(adaptive->shard.optimizer.lambda0, 2.0f);
  absl::StatusOr<PsOptions> given = Parse({"--update_rule=dcasgd-c", "--lambda0=0.5"});
  ASSERT_TRUE(given.ok()) << given.status();
  EXPECT_FLOAT_EQ(given->shard.optimizer.lambda0, 0.5f);
  absl::StatusOr<PsOptions> from_env =
      Parse({"--update_rule=dcasgd-c"}, {{"DCASGD_LAMBDA0", "1.5"}});
  ASSERT_TRUE(from_env.ok()) << from_env.status();
  EXPECT_FLOAT_EQ(from_env->shard.optimizer.lambda0, 1.5f);
}

TEST(PsOptions, AutoShardIndexTakesTheHostnameSuffix) {
  absl::StatusOr<PsOptions> options =
      Parse({"--shard_index=auto", "--shard_count=8"}, {{"HOSTNAME", "dcasgd-ps-7"}});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->shard.shard_index, 7u);

  absl::StatusOr<PsOptions> no_number =
      Parse({"--shard_index=auto", "--shard_count=8"}, {{"HOSTNAME", "laptop"}});
  EXPECT_EQ(no_number.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(no_number.status().message(), HasSubstr("HOSTNAME"));
  EXPECT_EQ(Parse({"--shard_index=auto"}).status().code(), absl::StatusCode::kInvalidArgument);
}

struct BadCase {
  std::vector<std::string> args;
  std::map<std::string, std::string> env;
  std::string message;  // a substring the error must contain
};

class PsOptionsErrors : public ::testing::TestWithParam<BadCase> {};

TEST_P(PsOptionsErrors, AreInvalidArgumentNamingTheCulprit) {
  absl::StatusOr<PsOptions> options = Parse(GetParam().args, GetParam().env);
  ASSERT_FALSE(options.ok());
  EXPECT_EQ(options.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(options.status().message(), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    PsOptions, PsOptionsErrors,
    ::testing::Values(
        BadCase{{"--no_such_flag=1"}, {}, "no_such_flag"},
        BadCase{{"positional"}, {}, "positional"}, BadCase{{"--lr=fast"}, {}, "lr"},
        BadCase{{}, {{"DCASGD_LR", "fast"}}, "DCASGD_LR"}, BadCase{{"--lr"}, {}, "needs a value"},
        BadCase{{"--shard_count=2", "--shard_index=2"}, {}, "shard_index"},
        BadCase{{"--shard_count=0"}, {}, "shard_count"},
        BadCase{{"--shard_index=-1"}, {}, "shard_index"},
        BadCase{{"--update_rule=adam"}, {}, "update_rule"},
        BadCase{{"--sync=sometimes"}, {}, "sync"},
        BadCase{{"--ssp_policy=maybe"}, {}, "ssp_policy"},
        BadCase{{"--lr_schedule=cosine"}, {}, "lr_schedule"},
        BadCase{{"--lease_seconds=0"}, {}, "lease_seconds"},
        BadCase{{"--tls_cert=/c"}, {}, "TLS needs both --tls_cert and --tls_key"},
        BadCase{{"--tls_ca=/ca"}, {}, "TLS needs both --tls_cert and --tls_key"},
        BadCase{{"--auth_cert_roles=w1=worker"}, {}, "--auth_cert_roles needs --tls_ca"},
        BadCase{{"--auth_cert_roles=w1"}, {}, "w1"},
        BadCase{{"--tls_reload_seconds=0"}, {}, "--tls_reload_seconds=0: must be positive"},
        BadCase{{"--auth_reload_seconds=-1"}, {}, "--auth_reload_seconds=-1: must be positive"},
        BadCase{{"--checkpoint_interval_seconds=-1"}, {}, "checkpoint_interval"},
        BadCase{{"--max_staleness=-2"}, {}, "max_staleness"},
        BadCase{{"--max_push_bytes=0"}, {}, "max_push_bytes"},
        BadCase{{"--max_message_bytes=10"}, {}, "max_message_bytes"},
        BadCase{{"--lr=-1"}, {}, "learning_rate"}, BadCase{{"--max_workers=0"}, {}, "max_workers"},
        BadCase{{"--max_workers=100000"}, {}, "max_workers"},
        BadCase{{"--memory_budget_bytes=-1"}, {}, "memory_budget_bytes"},
        BadCase{{"--max_inflight_bytes=-5"}, {}, "max_inflight_bytes"},
        BadCase{{"--max_gradient_abs=0"}, {}, "max_gradient_abs"},
        BadCase{{"--max_weight_abs=inf"}, {}, "max_weight_abs"},
        BadCase{{"--update_rule=dcasgd-c", "--lambda0=1e30"}, {}, "overflow float32"},
        BadCase{{"--gap_aware", "--gap_decay=1"}, {}, "gap_decay"},
        BadCase{{"--gap_aware", "--sync=ssgd"}, {}, "gap-aware damping needs asynchronous"},
        BadCase{{"--backup_dtype=int8"},
                {},
                "--backup_dtype: unknown backup dtype 'int8': use one of float32 | bfloat16 | "
                "float16"},
        BadCase{{}, {{"DCASGD_BACKUP_DTYPE", "half"}}, "unknown backup dtype 'half'"},
        BadCase{{"--backup_dtype=float16"},
                {},
                "float16 backups hold |w| <= 65504 only, but max_weight_abs is 1e+06: lower "
                "max_weight_abs to at most 65504"}));

TEST(PsOptions, BackupDtype) {
  absl::StatusOr<PsOptions> defaults = Parse({});
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->shard.optimizer.backup_dtype, Dtype::kFloat32);
  absl::StatusOr<PsOptions> bf16 = Parse({"--backup_dtype=bfloat16"});
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  EXPECT_EQ(bf16->shard.optimizer.backup_dtype, Dtype::kBfloat16);
  EXPECT_THAT(bf16->DebugString(), HasSubstr("backup_dtype=bfloat16"));
  absl::StatusOr<PsOptions> fp16 =
      Parse({"--max_weight_abs=1000"}, {{"DCASGD_BACKUP_DTYPE", "float16"}});
  ASSERT_TRUE(fp16.ok()) << fp16.status();
  EXPECT_EQ(fp16->shard.optimizer.backup_dtype, Dtype::kFloat16);
  EXPECT_THAT(PsOptionsUsage(), HasSubstr("backup_dtype"));
}

TEST(PsOptions, MemoryLimitsAndBounds) {
  absl::StatusOr<PsOptions> defaults = Parse({});
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->shard.max_workers, 64u);
  // 90% of the detected limit, and 1/8 of that in flight within [16 MiB, 1 GiB].
  EXPECT_GT(defaults->shard.memory_budget_bytes, 0u);
  EXPECT_THAT(defaults->memory_budget_source, HasSubstr("90% of"));
  EXPECT_EQ(defaults->shard.inflight_budget_bytes,
            std::clamp<uint64_t>(defaults->shard.memory_budget_bytes / 8, uint64_t{16} << 20,
                                 uint64_t{1} << 30));
  EXPECT_FLOAT_EQ(defaults->shard.optimizer.max_gradient_abs, 1e6f);
  EXPECT_FLOAT_EQ(defaults->shard.optimizer.max_weight_abs, 1e6f);

  absl::StatusOr<PsOptions> given =
      Parse({"--memory_budget_bytes=1073741824", "--max_workers=8", "--max_gradient_abs=10"},
            {{"DCASGD_MAX_INFLIGHT_BYTES", "1048576"}, {"DCASGD_MAX_WEIGHT_ABS", "100"}});
  ASSERT_TRUE(given.ok()) << given.status();
  EXPECT_EQ(given->shard.memory_budget_bytes, uint64_t{1} << 30);
  EXPECT_EQ(given->memory_budget_source, "--memory_budget_bytes");
  EXPECT_EQ(given->shard.max_workers, 8u);
  EXPECT_EQ(given->shard.inflight_budget_bytes, uint64_t{1} << 20);
  EXPECT_FLOAT_EQ(given->shard.optimizer.max_gradient_abs, 10.0f);
  EXPECT_FLOAT_EQ(given->shard.optimizer.max_weight_abs, 100.0f);
  EXPECT_THAT(given->DebugString(), HasSubstr("memory_budget=1.0 GiB (--memory_budget_bytes)"));
}

TEST(PsOptions, CheckpointDurabilityFlags) {
  absl::StatusOr<PsOptions> options =
      Parse({"--checkpoint_interval_seconds=10", "--checkpoint_min_interval_seconds=0.5",
             "--final_checkpoint_timeout_seconds=20"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->checkpoint_max_age, absl::Seconds(30)) << "three intervals by default";
  EXPECT_EQ(options->checkpoint_min_interval, absl::Milliseconds(500));
  EXPECT_EQ(options->final_checkpoint_timeout, absl::Seconds(20));
  options = Parse({"--checkpoint_max_age_seconds=7"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->checkpoint_max_age, absl::Seconds(7));
  for (const char* bad : {"--checkpoint_min_interval_seconds=-1", "--checkpoint_max_age_seconds=-2",
                          "--final_checkpoint_timeout_seconds=nan"}) {
    absl::StatusOr<PsOptions> rejected = Parse({bad});
    EXPECT_EQ(rejected.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(rejected.status().message(),
                HasSubstr(std::string(bad).substr(2, std::string(bad).find('=') - 2)));
  }
}

TEST(PsOptions, UsageListsEveryFlagWithItsVariable) {
  const std::string usage = PsOptionsUsage();
  EXPECT_THAT(usage, HasSubstr("--shard_index (DCASGD_SHARD_INDEX)"));
  EXPECT_THAT(usage, HasSubstr("--max_push_bytes (DCASGD_MAX_PUSH_BYTES)"));
}

TEST(PsOptions, DebugStringShowsTheConfig) {
  absl::StatusOr<PsOptions> options = Parse({"--shard_count=3", "--shard_index=2"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_THAT(options->DebugString(), HasSubstr("shard=2/3"));
}

TEST(PsOptions, OneReplicaIsTheDefaultAndTakesNoPeer) {
  absl::StatusOr<PsOptions> options = Parse({});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_FALSE(options->replication.enabled());
  EXPECT_THAT(options->DebugString(), ::testing::Not(HasSubstr("replicas=2")));
  absl::StatusOr<PsOptions> peer = Parse({"--peer_address=127.0.0.1:1"});
  EXPECT_EQ(peer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(peer.status().message(), HasSubstr("need --replicas=2"));
}

TEST(PsOptions, ReplicatedMemberFlags) {
  absl::StatusOr<PsOptions> options =
      Parse({"--replicas=2", "--member=b", "--peer_address=10.0.0.1:7000",
             "--witness_address=10.0.0.9:7000", "--replication_heartbeat_ms=100",
             "--replication_lease_ms=1000", "--failover_timeout_ms=1500",
             "--replication_buffer_bytes=2097152", "--peer_token_file=/t", "--peer_tls_ca=/ca",
             "--peer_tls_cert=/c", "--peer_tls_key=/k"});
  ASSERT_TRUE(options.ok()) << options.status();
  const ReplicationOptions& r = options->replication;
  EXPECT_TRUE(r.enabled());
  EXPECT_EQ(r.member, v1::MEMBER_B);
  EXPECT_EQ(r.peer_address, "10.0.0.1:7000");
  EXPECT_EQ(r.witness_address, "10.0.0.9:7000");
  EXPECT_EQ(r.heartbeat, absl::Milliseconds(100));
  EXPECT_EQ(r.lease, absl::Seconds(1));
  EXPECT_EQ(r.failover_timeout, absl::Milliseconds(1500));
  EXPECT_EQ(r.buffer_bytes, 2u << 20);
  EXPECT_EQ(r.peer_security.token_file, "/t");
  EXPECT_EQ(r.peer_security.ca, "/ca");
  EXPECT_EQ(r.peer_security.cert, "/c");
  EXPECT_EQ(r.peer_security.key, "/k");
  EXPECT_THAT(options->DebugString(), HasSubstr("replicas=2 member=b"));
}

TEST(PsOptions, MemberAutoFromThePodOrdinal) {
  // Pod 3 of a 2-shard pair StatefulSet: member b of shard 1; its peer is pod 1.
  absl::StatusOr<PsOptions> options =
      Parse({"--replicas=2", "--shard_count=2", "--shard_index=auto",
             "--peer_address=ps-{i}.ps:7000", "--witness_address=w:7000"},
            {{"HOSTNAME", "dcasgd-ps-3"}});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->replication.member, v1::MEMBER_B);
  EXPECT_EQ(options->shard.shard_index, 1u);
  EXPECT_EQ(options->replication.peer_address, "ps-1.ps:7000");
  absl::StatusOr<PsOptions> a = Parse({"--replicas=2", "--shard_count=2", "--shard_index=auto",
                                       "--peer_address=ps-{i}.ps:7000", "--witness_address=w:7000"},
                                      {{"HOSTNAME", "dcasgd-ps-0"}});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->replication.member, v1::MEMBER_A);
  EXPECT_EQ(a->replication.peer_address, "ps-2.ps:7000");
}

struct BadReplication {
  std::vector<std::string> args;
  std::string message;
};

class PsOptionsBadReplication : public ::testing::TestWithParam<BadReplication> {};

TEST_P(PsOptionsBadReplication, IsInvalidArgumentNamingTheFlag) {
  std::vector<std::string> args = GetParam().args;
  absl::StatusOr<PsOptions> options = Parse(args);
  ASSERT_FALSE(options.ok());
  EXPECT_EQ(options.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(options.status().message(), HasSubstr(GetParam().message));
}

TEST(PsOptions, ReadsTheServerSecurityFlags) {
  absl::StatusOr<PsOptions> options =
      Parse({"--tls_cert=/c", "--tls_key=/k", "--tls_ca=/ca", "--tls_reload_seconds=2",
             "--auth_tokens_file=/t", "--auth_reload_seconds=3", "--auth_cert_roles=w1=worker",
             "--health_listen=127.0.0.1:0"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->tls.cert, "/c");
  EXPECT_EQ(options->tls.key, "/k");
  EXPECT_EQ(options->tls.client_ca, "/ca");
  EXPECT_EQ(options->tls.reload_interval, absl::Seconds(2));
  EXPECT_EQ(options->auth.tokens_file, "/t");
  EXPECT_EQ(options->auth.reload_interval, absl::Seconds(3));
  EXPECT_EQ(options->auth.cert_roles.size(), 1u);
  EXPECT_EQ(options->health_listen, "127.0.0.1:0");
  EXPECT_THAT(options->DebugString(), HasSubstr("tls=mutual auth=tokens+certificates"));
  options = Parse({});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_THAT(options->DebugString(), HasSubstr("tls=off auth=off"));
}

INSTANTIATE_TEST_SUITE_P(
    Flags, PsOptionsBadReplication,
    ::testing::Values(
        BadReplication{{"--replicas=3"}, "--replicas=3: must be 1 or 2"},
        BadReplication{{"--replicas=2", "--witness_address=w:1"}, "needs --peer_address"},
        BadReplication{{"--replicas=2", "--peer_address=p:1"}, "--witness_address"},
        BadReplication{
            {"--replicas=2", "--peer_address=p:1", "--witness_address=w:1", "--member=c"},
            "--member='c'"},
        BadReplication{{"--replicas=2", "--peer_address=p:1", "--witness_address=w:1", "--member=a",
                        "--replication_lease_ms=2000", "--failover_timeout_ms=2400"},
                       "at least --replication_lease_ms + 500 = 2500"},
        BadReplication{{"--replicas=2", "--peer_address=p:1", "--witness_address=w:1", "--member=a",
                        "--replication_heartbeat_ms=2000"},
                       "--replication_heartbeat_ms must be below"},
        BadReplication{{"--replicas=2", "--peer_address=p:1", "--witness_address=w:1", "--member=a",
                        "--replication_buffer_bytes=1000"},
                       "at least 1 MiB"},
        BadReplication{{"--replicas=2", "--peer_address=p:1", "--witness_address=w:1", "--member=a",
                        "--failover_timeout_ms=0"},
                       "--failover_timeout_ms=0"},
        BadReplication{{"--replicas=2", "--peer_address=p:1", "--witness_address=w:1", "--member=a",
                        "--peer_tls_ca=/ca", "--peer_tls_cert=/c"},
                       "--peer_tls_cert and --peer_tls_key go together"},
        BadReplication{{"--replicas=2", "--peer_address=p:1", "--witness_address=w:1", "--member=a",
                        "--peer_tls_cert=/c", "--peer_tls_key=/k"},
                       "--peer_tls_cert needs --peer_tls_ca"}));

}  // namespace
}  // namespace dcasgd
