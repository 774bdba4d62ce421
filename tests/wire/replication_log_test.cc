// The replication log's conversions (wire/replication_log.h): every kind of
// entry, worker records, backup copies and snapshot headers survive the round
// trip proto -> core -> proto unchanged, and malformed messages are
// INVALID_ARGUMENT naming what is wrong, never a crash.
#include "wire/replication_log.h"

#include <set>
#include <string>
#include <variant>

#include "base/clock.h"
#include "base/secret.h"
#include "core/shard_store.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "tests/testing/float_bytes.h"

namespace dcasgd {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using testing::Bytes;
using ::testing::HasSubstr;

const std::string kSession(kSecretBytes, '\x5a');

v1::Chunk* AddGradient(google::protobuf::RepeatedPtrField<v1::Chunk>* chunks,
                       const std::string& tensor, uint64_t index) {
  v1::Chunk* c = chunks->Add();
  c->set_tensor(tensor);
  c->set_chunk_index(index);
  c->set_values(Bytes({1.5f, -2.25f, 3.0f}));
  return c;
}

// One entry of every kind this version knows, each field set.
std::vector<v1::LogEntry> EveryKind() {
  std::vector<v1::LogEntry> out;
  auto next = [&out] {
    v1::LogEntry& e = out.emplace_back();
    e.set_seq(out.size() + (uint64_t{1} << 33));
    return &e;
  };
  {
    v1::TensorSpec* t = next()->mutable_declare()->add_tensors();
    t->set_name("layer/w");
    t->add_shape(3);
    t->add_shape(5);
    t->set_chunk_elements(4);
    t->mutable_init()->mutable_uniform()->set_low(-1);
    t->mutable_init()->mutable_uniform()->set_high(1);
    t->mutable_init()->mutable_uniform()->set_seed(7);
  }
  {
    v1::LogEntry::Join* j = next()->mutable_join();
    j->set_worker_name("worker-3");
    j->set_worker_id(0xfedcba9876543210u);
    j->set_session(kSession);
    j->set_pull_version(42);
    j->set_pipeline_depth(2);
    j->add_ended_worker_ids(5);
    j->add_ended_worker_ids(9);
  }
  {
    v1::LogEntry::LeaseEnd* l = next()->mutable_lease_end();
    l->add_worker_ids(11);
    l->set_reason(v1::LogEntry::LeaseEnd::REASON_EXPIRED);
  }
  {
    v1::LogEntry::LeaseEnd* l = next()->mutable_lease_end();
    l->add_worker_ids(12);
    l->set_reason(v1::LogEntry::LeaseEnd::REASON_LEAVE);
  }
  next()->mutable_record_pull()->set_worker_id(3);
  out.back().mutable_record_pull()->set_version(77);
  {
    v1::LogEntry::PullChunk* p = next()->mutable_pull_chunk();
    p->set_worker_id(3);
    p->set_tensor("layer/w");
    p->set_chunk_index(2);
    p->set_live(true);
  }
  {
    v1::LogEntry::Push* p = next()->mutable_push();
    p->set_worker_id(3);
    p->set_step(8);
    p->set_base_step(6);
    p->set_version(99);
    p->set_staleness(4);
    p->set_pull_back(true);
    AddGradient(p->mutable_gradients(), "layer/w", 0);
    AddGradient(p->mutable_gradients(), "layer/b", 1);
  }
  {
    v1::LogEntry::SsgdRound* r = next()->mutable_ssgd_round();
    r->set_version(100);
    for (uint64_t w : {4, 2}) {
      v1::LogEntry::SsgdRound::RoundPush* p = r->add_pushes();
      p->set_worker_id(w);
      p->set_step(w * 10);
      p->set_pull_back(w == 4);
      AddGradient(p->mutable_gradients(), "layer/w", w);
    }
  }
  next()->mutable_coordinator_state()->set_state("dcasgd-coordinator 1\nepoch 3\n");
  next()->mutable_checkpoint();
  next()->mutable_digest();
  {
    v1::LogEntry::SnapshotChunk* c = next()->mutable_snapshot_chunk();
    c->set_tensor("layer/w");
    c->set_chunk_index(3);
    c->set_part(0);
    c->set_last_part(true);
    c->set_weights(Bytes({1, 2}));
    c->set_mean_square(Bytes({0.5f, 0.25f}));
    c->set_gap_scale(Bytes({3, 4}));
    v1::BackupCopy* b = c->add_backups();
    b->set_worker_id(3);
    b->set_step(6);
    b->set_values(std::string(4, '\x01'));  // two bfloat16 words
  }
  next()->mutable_snapshot_end()->set_header_seq(5);
  {
    v1::LogEntry::Replay* r = next()->mutable_replay();
    r->set_worker_id(3);
    r->set_step(8);
    for (uint64_t index : {0, 2}) {
      v1::LogEntry::Replay::ChunkId* c = r->add_chunks();
      c->set_tensor("layer/w");
      c->set_chunk_index(index);
    }
  }
  return out;
}

TEST(ReplicationLog, EveryKindRoundTrips) {
  const std::vector<v1::LogEntry> entries = EveryKind();
  ASSERT_EQ(entries.size(), 14u);
  std::set<size_t> kinds;
  for (const v1::LogEntry& proto : entries) {
    absl::StatusOr<LogEntry> entry = LogEntryFromProto(proto);
    ASSERT_TRUE(entry.ok()) << entry.status() << "\n" << proto.DebugString();
    EXPECT_EQ(entry->seq, proto.seq());
    kinds.insert(entry->op.index());
    v1::LogEntry back;
    LogEntryToProto(*entry, &back);
    EXPECT_TRUE(MessageDifferencer::Equals(proto, back)) << proto.DebugString() << "\nbecame\n"
                                                         << back.DebugString();
  }
  EXPECT_EQ(kinds.size(), std::variant_size_v<LogEntry::Op>);
}

TEST(ReplicationLog, CoreFieldsAreTheProtoFields) {
  const std::vector<v1::LogEntry> entries = EveryKind();
  absl::StatusOr<LogEntry> push = LogEntryFromProto(entries[6]);
  ASSERT_TRUE(push.ok()) << push.status();
  EXPECT_STREQ(LogEntryKindName(push->op), "Push");
  const LogPush& p = std::get<LogPush>(push->op);
  EXPECT_EQ(p.worker_id, 3u);
  EXPECT_EQ(p.step, 8u);
  EXPECT_EQ(p.base_step, 6u);
  EXPECT_EQ(p.version, 99u);
  EXPECT_EQ(p.staleness, 4u);
  EXPECT_TRUE(p.pull_back);
  ASSERT_EQ(p.gradients.size(), 2u);
  EXPECT_EQ(p.gradients[1].tensor, "layer/b");
  EXPECT_EQ(p.gradients[1].values, Bytes({1.5f, -2.25f, 3.0f}));

  absl::StatusOr<LogEntry> join = LogEntryFromProto(entries[1]);
  ASSERT_TRUE(join.ok()) << join.status();
  const LogJoin& j = std::get<LogJoin>(join->op);
  EXPECT_EQ(j.worker_id, 0xfedcba9876543210u);
  EXPECT_EQ(j.session, kSession);
  EXPECT_EQ(j.pipeline_depth, 2u);
  EXPECT_EQ(j.ended_worker_ids, (std::vector<WorkerId>{5, 9}));

  absl::StatusOr<LogEntry> snap = LogEntryFromProto(entries[11]);
  ASSERT_TRUE(snap.ok()) << snap.status();
  const LogSnapshotChunk& c = std::get<LogSnapshotChunk>(snap->op);
  EXPECT_EQ(c.state.index, 3u);
  EXPECT_EQ(c.state.weights, (std::vector<float>{1, 2}));
  EXPECT_TRUE(c.state.momentum.empty());
  ASSERT_EQ(c.backups.size(), 1u);
  EXPECT_EQ(c.backups[0].step, 6u);

  absl::StatusOr<LogEntry> replay = LogEntryFromProto(entries[13]);
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_STREQ(LogEntryKindName(replay->op), "Replay");
  const LogReplay& r = std::get<LogReplay>(replay->op);
  EXPECT_EQ(r.worker_id, 3u);
  EXPECT_EQ(r.step, 8u);
  ASSERT_EQ(r.chunks.size(), 2u);
  EXPECT_EQ(r.chunks[1].tensor, "layer/w");
  EXPECT_EQ(r.chunks[1].chunk_index, 2u);
}

// Breaks one field of a valid entry; the conversion must refuse it.
struct Malformed {
  const char* name;
  size_t entry;  // index into EveryKind()
  void (*brk)(v1::LogEntry*);
  const char* message;
};

class ReplicationLogMalformed : public ::testing::TestWithParam<Malformed> {};

TEST_P(ReplicationLogMalformed, IsInvalidArgumentNamingTheField) {
  const Malformed& m = GetParam();
  v1::LogEntry proto = EveryKind()[m.entry];
  m.brk(&proto);
  absl::StatusOr<LogEntry> entry = LogEntryFromProto(proto);
  ASSERT_FALSE(entry.ok()) << proto.DebugString();
  EXPECT_EQ(entry.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(entry.status().message(), HasSubstr(m.message));
}

INSTANTIATE_TEST_SUITE_P(
    Fields, ReplicationLogMalformed,
    ::testing::Values(
        Malformed{"SeqZero", 0, [](v1::LogEntry* e) { e->set_seq(0); }, "seq is 0"},
        Malformed{"NoKind", 0, [](v1::LogEntry* e) { e->clear_op(); }, "no kind"},
        Malformed{"DeclareEmpty", 0,
                  [](v1::LogEntry* e) { e->mutable_declare()->clear_tensors(); }, "tensors has 0"},
        Malformed{"DeclareUnresolved", 0,
                  [](v1::LogEntry* e) {
                    e->mutable_declare()->mutable_tensors(0)->set_chunk_elements(0);
                  },
                  "chunk_elements 0"},
        Malformed{"DeclareBadName", 0,
                  [](v1::LogEntry* e) { e->mutable_declare()->mutable_tensors(0)->set_name(""); },
                  "tensor name is empty"},
        Malformed{"JoinShortSession", 1,
                  [](v1::LogEntry* e) { e->mutable_join()->set_session("abc"); },
                  "session has 3 bytes"},
        Malformed{"JoinIdZero", 1, [](v1::LogEntry* e) { e->mutable_join()->set_worker_id(0); },
                  "worker_id is 0"},
        Malformed{"JoinDeepPipeline", 1,
                  [](v1::LogEntry* e) { e->mutable_join()->set_pipeline_depth(99); },
                  "pipeline_depth 99"},
        Malformed{"JoinEndedZero", 1,
                  [](v1::LogEntry* e) { e->mutable_join()->add_ended_worker_ids(0); },
                  "ended_worker_ids is 0"},
        Malformed{"JoinBadUtf8Name", 1,
                  [](v1::LogEntry* e) { e->mutable_join()->set_worker_name("\xff\xfe"); },
                  "not valid UTF-8"},
        Malformed{"LeaseEndUnknownReason", 2,
                  [](v1::LogEntry* e) {
                    e->mutable_lease_end()->set_reason(
                        static_cast<v1::LogEntry::LeaseEnd::Reason>(7));
                  },
                  "reason 7"},
        Malformed{"LeaseEndNobody", 2,
                  [](v1::LogEntry* e) { e->mutable_lease_end()->clear_worker_ids(); },
                  "worker_ids has 0"},
        Malformed{"RecordPullIdZero", 4,
                  [](v1::LogEntry* e) { e->mutable_record_pull()->set_worker_id(0); },
                  "worker_id is 0"},
        Malformed{"PullChunkNoTensor", 5,
                  [](v1::LogEntry* e) { e->mutable_pull_chunk()->clear_tensor(); }, "tensor"},
        Malformed{"PushVersionZero", 6, [](v1::LogEntry* e) { e->mutable_push()->set_version(0); },
                  "version is 0"},
        Malformed{"PushNoGradient", 6,
                  [](v1::LogEntry* e) { e->mutable_push()->clear_gradients(); },
                  "gradients has 0"},
        Malformed{"PushOddBytes", 6,
                  [](v1::LogEntry* e) {
                    e->mutable_push()->mutable_gradients(1)->set_values(std::string(7, 'x'));
                  },
                  "has 7 bytes"},
        Malformed{"PushBfloat16", 6,
                  [](v1::LogEntry* e) {
                    e->mutable_push()->mutable_gradients(0)->set_dtype(v1::DTYPE_BFLOAT16);
                  },
                  "float32 only"},
        Malformed{"RoundNoPushes", 7,
                  [](v1::LogEntry* e) { e->mutable_ssgd_round()->clear_pushes(); },
                  "pushes has 0"},
        Malformed{"RoundEmptyGradient", 7,
                  [](v1::LogEntry* e) {
                    e->mutable_ssgd_round()->mutable_pushes(1)->mutable_gradients(0)->clear_values();
                  },
                  "has 0 bytes"},
        Malformed{"SnapshotChunkOddWeights", 11,
                  [](v1::LogEntry* e) {
                    e->mutable_snapshot_chunk()->set_weights(std::string(5, 'x'));
                  },
                  "weights has 5 bytes"},
        Malformed{"SnapshotChunkNoWeights", 11,
                  [](v1::LogEntry* e) { e->mutable_snapshot_chunk()->clear_weights(); },
                  "no weights"},
        Malformed{"SnapshotChunkShortMeanSquare", 11,
                  [](v1::LogEntry* e) {
                    e->mutable_snapshot_chunk()->set_mean_square(Bytes({1}));
                  },
                  "mean_square has 1 values"},
        Malformed{"SnapshotChunkOddBackup", 11,
                  [](v1::LogEntry* e) {
                    e->mutable_snapshot_chunk()->mutable_backups(0)->set_values("abc");
                  },
                  "3 bytes"},
        Malformed{"SnapshotChunkBackupIdZero", 11,
                  [](v1::LogEntry* e) {
                    e->mutable_snapshot_chunk()->mutable_backups(0)->set_worker_id(0);
                  },
                  "worker_id is 0"},
        Malformed{"ReplayIdZero", 13, [](v1::LogEntry* e) { e->mutable_replay()->set_worker_id(0); },
                  "worker_id is 0"},
        Malformed{"ReplayStepZero", 13, [](v1::LogEntry* e) { e->mutable_replay()->set_step(0); },
                  "step is 0"},
        Malformed{"ReplayNoChunks", 13, [](v1::LogEntry* e) { e->mutable_replay()->clear_chunks(); },
                  "chunks has 0"},
        Malformed{"ReplayBadTensorName", 13,
                  [](v1::LogEntry* e) {
                    e->mutable_replay()->mutable_chunks(1)->set_tensor("\xff");
                  },
                  "not valid UTF-8"}),
    [](const ::testing::TestParamInfo<Malformed>& param) { return param.param.name; });

// A field of a newer protocol in the op's place is parsed as an unknown
// field: the entry has no kind this version knows.
TEST(ReplicationLog, UnknownKindFromTheWireIsRefused) {
  v1::LogEntry proto;
  proto.set_seq(4);
  std::string bytes = proto.SerializeAsString();
  // Field 40, length-delimited, 2 bytes of payload.
  bytes += std::string("\xc2\x02\x02\x08\x01", 5);
  v1::LogEntry parsed;
  ASSERT_TRUE(parsed.ParseFromString(bytes));
  EXPECT_EQ(parsed.op_case(), v1::LogEntry::OP_NOT_SET);
  absl::StatusOr<LogEntry> entry = LogEntryFromProto(parsed);
  ASSERT_FALSE(entry.ok());
  EXPECT_EQ(entry.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(entry.status().message(), HasSubstr("log entry 4"));
  EXPECT_THAT(entry.status().message(), HasSubstr("no kind this version knows"));
}

v1::WorkerRecord Record() {
  v1::WorkerRecord r;
  r.set_worker_id(17);
  r.set_worker_name("worker-17");
  r.set_session(kSession);
  r.set_pipeline_depth(1);
  v1::WorkerRecord::Base* b = r.add_bases();
  b->set_step(3);
  b->set_version(30);
  b = r.add_bases();
  b->set_step(0);
  b->set_version(31);
  r.set_pull_version(31);
  r.set_ssp_clock(12);
  r.set_last_step(3);
  r.set_last_step_version(30);
  r.set_last_step_staleness(2);
  return r;
}

TEST(ReplicationLog, WorkerRecordRoundTrips) {
  const v1::WorkerRecord proto = Record();
  absl::StatusOr<WorkerRecord> record = WorkerRecordFromProto(proto);
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_EQ(record->bases.size(), 2u);
  EXPECT_EQ(record->bases.back().version, 31u);
  v1::WorkerRecord back;
  WorkerRecordToProto(*record, &back);
  EXPECT_TRUE(MessageDifferencer::Equals(proto, back)) << back.DebugString();
}

TEST(ReplicationLog, WorkerRecordWithOnlyAPullVersionHasOneBase) {
  v1::WorkerRecord proto = Record();
  proto.clear_bases();
  absl::StatusOr<WorkerRecord> record = WorkerRecordFromProto(proto);
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_EQ(record->bases, (std::vector<WorkerRecord::Base>{{0, 31}}));
}

TEST(ReplicationLog, MalformedWorkerRecordsAreRefused) {
  struct Case {
    void (*brk)(v1::WorkerRecord*);
    const char* message;
  };
  for (const Case& c : {
           Case{[](v1::WorkerRecord* r) { r->set_worker_id(0); }, "worker_id is 0"},
           Case{[](v1::WorkerRecord* r) { r->set_session(""); }, "session has 0 bytes"},
           Case{[](v1::WorkerRecord* r) { r->set_pull_version(5); }, "pull_version 5"},
           Case{[](v1::WorkerRecord* r) { r->set_pipeline_depth(0); }, "bases has 2 items"},
           Case{[](v1::WorkerRecord* r) { r->set_pipeline_depth(5); }, "pipeline_depth 5"},
           Case{[](v1::WorkerRecord* r) { r->clear_worker_name(); }, "worker_name is empty"},
       }) {
    v1::WorkerRecord proto = Record();
    c.brk(&proto);
    absl::StatusOr<WorkerRecord> record = WorkerRecordFromProto(proto);
    ASSERT_FALSE(record.ok()) << c.message;
    EXPECT_EQ(record.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(record.status().message(), HasSubstr(c.message));
  }
}

TEST(ReplicationLog, SnapshotHeaderRoundTrips) {
  v1::SnapshotHeader proto;
  proto.set_seq(1000);
  proto.set_version(512);
  *proto.add_tensors() = EveryKind()[0].declare().tensors(0);
  *proto.add_workers() = Record();
  proto.set_coordinator_state("state");
  proto.set_chunk_count(4);
  absl::StatusOr<SnapshotHeader> header = SnapshotHeaderFromProto(proto);
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->tensors.size(), 1u);
  EXPECT_EQ(header->workers.size(), 1u);
  v1::SnapshotHeader back;
  SnapshotHeaderToProto(*header, &back);
  EXPECT_TRUE(MessageDifferencer::Equals(proto, back)) << back.DebugString();

  proto.mutable_workers(0)->set_session("x");
  absl::StatusOr<SnapshotHeader> bad = SnapshotHeaderFromProto(proto);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("snapshot header at seq 1000"));
}

// Every entry a store sequences.
class RecordingSink final : public LogSink {
 public:
  void Append(LogEntry entry) override { entries.push_back(std::move(entry)); }
  std::vector<LogEntry> entries;  // one thread in this test
};

// A store's log sent over the wire (core -> proto -> bytes -> proto -> core)
// and applied to a second store gives the same state, backups and worker
// table included; so does its snapshot header.
TEST(ReplicationLog, AStoresLogSurvivesTheWire) {
  ManualClock clock;
  ShardConfig config;
  config.optimizer = OptimizerConfig::ForRule(UpdateRule::kDcAsgdAdaptive);
  config.optimizer.backup_dtype = Dtype::kBfloat16;
  RecordingSink sink;
  ShardStore primary(config, &clock);
  primary.SetLogSink(&sink);
  TensorSpec spec;
  spec.name = "w";
  spec.shape = {10};
  spec.chunk_elements = 4;
  spec.init.kind = Initializer::Kind::kUniform;
  spec.init.a = -1;
  spec.init.b = 1;
  ASSERT_TRUE(primary.Declare({spec}).ok());
  absl::StatusOr<JoinResult> a = primary.Join("a", 1);
  absl::StatusOr<JoinResult> b = primary.Join("b");
  ASSERT_TRUE(a.ok() && b.ok());
  for (WorkerId w : {a->worker_id, b->worker_id}) {
    absl::StatusOr<PullPlan> plan = primary.PlanPull(w, {});
    ASSERT_TRUE(plan.ok());
    std::string values;
    for (const ChunkRef& ref : plan->chunks) primary.ReadChunk(*plan, ref, &values);
  }
  for (uint64_t step = 1; step <= 3; ++step) {
    bool ok = false;
    primary.SubmitPush(
        step % 2 ? a->worker_id : b->worker_id, step,
        {GradientChunk{"w", 2, Bytes({0.5f, -0.25f})}, GradientChunk{"w", 0, Bytes({1, 2, 3, 4})}},
        step != 2, [&ok](absl::StatusOr<PushResult> r) { ok = r.ok(); },
        step != 2 ? ShardStore::ChunkSink([](AppliedChunk) {}) : nullptr);
    ASSERT_TRUE(ok) << step;
  }
  {
    // A pull, then step 3 of the pipelined worker again: a Replay entry.
    absl::StatusOr<PullPlan> plan = primary.PlanPull(a->worker_id, {});
    ASSERT_TRUE(plan.ok());
    std::string values;
    for (const ChunkRef& ref : plan->chunks) primary.ReadChunk(*plan, ref, &values);
    bool replayed = false;
    primary.SubmitPush(
        a->worker_id, 3,
        {GradientChunk{"w", 2, Bytes({0.5f, -0.25f})}, GradientChunk{"w", 0, Bytes({1, 2, 3, 4})}},
        true, [&replayed](absl::StatusOr<PushResult> r) { replayed = r.ok() && r->replayed; },
        [](AppliedChunk) {});
    ASSERT_TRUE(replayed);
    ASSERT_TRUE(std::holds_alternative<LogReplay>(sink.entries.back().op));
  }
  ASSERT_TRUE(primary.Leave(b->worker_id).ok());

  ShardStore replica(config, &clock);
  for (const LogEntry& entry : sink.entries) {
    v1::LogEntry proto;
    LogEntryToProto(entry, &proto);
    v1::LogEntry parsed;
    ASSERT_TRUE(parsed.ParseFromString(proto.SerializeAsString()));
    absl::StatusOr<LogEntry> back = LogEntryFromProto(parsed);
    ASSERT_TRUE(back.ok()) << back.status();
    ASSERT_TRUE(replica.ApplyEntry(*back).ok()) << LogEntryKindName(back->op) << " " << back->seq;
  }
  const ReplicationSnapshot want = primary.TakeReplicationSnapshot();
  const ReplicationSnapshot got = replica.TakeReplicationSnapshot();
  EXPECT_EQ(got.header.seq, want.header.seq);
  EXPECT_EQ(got.header.version, 3u);
  ASSERT_EQ(got.chunks.size(), want.chunks.size());
  for (size_t i = 0; i < got.chunks.size(); ++i) {
    v1::LogEntry x, y;
    LogEntryToProto(LogEntry{1, want.chunks[i]}, &x);
    LogEntryToProto(LogEntry{1, got.chunks[i]}, &y);
    EXPECT_TRUE(MessageDifferencer::Equals(x, y)) << x.DebugString() << y.DebugString();
  }
  v1::SnapshotHeader x, y;
  SnapshotHeaderToProto(want.header, &x);
  SnapshotHeaderToProto(got.header, &y);
  EXPECT_TRUE(MessageDifferencer::Equals(x, y)) << x.DebugString() << y.DebugString();
  EXPECT_EQ(x.workers_size(), 1);
  EXPECT_EQ(x.workers(0).bases_size(), 2) << "the pipelined worker's ring of bases";
}

}  // namespace
}  // namespace dcasgd
