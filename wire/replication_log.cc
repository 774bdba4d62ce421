#include "wire/replication_log.h"

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/endian.h"
#include "base/secret.h"
#include "base/status_macros.h"
#include "wire/tensor_spec.h"

namespace dcasgd {
namespace {

// Errors name the entry (its seq and kind) and the field.
absl::Status Bad(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

absl::Status CheckCount(absl::string_view where, absl::string_view field, size_t n, size_t min,
                        size_t max) {
  if (n < min || n > max) {
    return Bad(where, absl::StrCat(field, " has ", n, " items; expected ", min, " to ", max));
  }
  return absl::OkStatus();
}

absl::Status CheckId(absl::string_view where, absl::string_view field, uint64_t id) {
  return id == 0 ? Bad(where, absl::StrCat(field, " is 0 (ids are non-zero)")) : absl::OkStatus();
}

// Little-endian float32 bytes as floats (base/endian.h).
absl::StatusOr<std::vector<float>> FloatsFromBytes(absl::string_view where, absl::string_view field,
                                                   const std::string& bytes) {
  if (bytes.size() % sizeof(float) != 0) {
    return Bad(where,
               absl::StrCat(field, " has ", bytes.size(), " bytes, not a multiple of 4 (float32)"));
  }
  std::vector<float> out(bytes.size() / sizeof(float));
  if (!bytes.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

std::string BytesOf(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

// A gradient chunk of an entry: a valid name, float32, a non-empty multiple
// of 4 bytes.
absl::StatusOr<std::vector<GradientChunk>> GradientsFromProto(
    absl::string_view where, const google::protobuf::RepeatedPtrField<v1::Chunk>& chunks) {
  RETURN_IF_ERROR(CheckCount(where, "gradients", chunks.size(), 1, kMaxLogChunks));
  std::vector<GradientChunk> out;
  out.reserve(chunks.size());
  for (const v1::Chunk& c : chunks) {
    RETURN_IF_ERROR(ValidateName(absl::StrCat(where, ": gradient tensor name"), c.tensor()));
    if (c.dtype() != v1::DTYPE_FLOAT32) {
      return Bad(where, absl::StrCat("gradient chunk ", c.chunk_index(), " has dtype ", c.dtype(),
                                     "; log entries carry float32 only"));
    }
    if (c.values().empty() || c.values().size() % sizeof(float) != 0) {
      return Bad(where, absl::StrCat("gradient chunk ", c.chunk_index(), " has ", c.values().size(),
                                     " bytes, not a positive multiple of 4"));
    }
    out.push_back(GradientChunk{c.tensor(), c.chunk_index(), c.values()});
  }
  return out;
}

void GradientsToProto(const std::vector<GradientChunk>& chunks,
                      google::protobuf::RepeatedPtrField<v1::Chunk>* out) {
  for (const GradientChunk& g : chunks) {
    v1::Chunk* c = out->Add();
    c->set_tensor(g.tensor);
    c->set_chunk_index(g.chunk_index);
    c->set_values(g.values);
  }
}

absl::StatusOr<LogDeclare> DeclareFromProto(absl::string_view where,
                                            const v1::LogEntry::Declare& p) {
  RETURN_IF_ERROR(CheckCount(where, "tensors", p.tensors_size(), 1, kMaxLogTensors));
  LogDeclare d;
  for (const v1::TensorSpec& t : p.tensors()) {
    absl::StatusOr<TensorSpec> spec = TensorSpecFromProto(t);
    if (!spec.ok()) return Bad(where, spec.status().message());
    if (spec->chunk_elements == 0) {
      return Bad(where, absl::StrCat("tensor ", QuotedName(spec->name),
                                     " has chunk_elements 0 (entries carry resolved specs)"));
    }
    d.tensors.push_back(*std::move(spec));
  }
  return d;
}

absl::StatusOr<LogJoin> JoinFromProto(absl::string_view where, const v1::LogEntry::Join& p) {
  RETURN_IF_ERROR(ValidateName(absl::StrCat(where, ": worker_name"), p.worker_name()));
  RETURN_IF_ERROR(CheckId(where, "worker_id", p.worker_id()));
  if (p.session().size() != kSecretBytes) {
    return Bad(where,
               absl::StrCat("session has ", p.session().size(), " bytes; expected ", kSecretBytes));
  }
  if (p.pipeline_depth() > kMaxPipelineDepth) {
    return Bad(where, absl::StrCat("pipeline_depth ", p.pipeline_depth(), " is above ",
                                   kMaxPipelineDepth));
  }
  RETURN_IF_ERROR(
      CheckCount(where, "ended_worker_ids", p.ended_worker_ids_size(), 0, kMaxLogWorkers));
  LogJoin j;
  j.worker_name = p.worker_name();
  j.worker_id = p.worker_id();
  j.session = p.session();
  j.pull_version = p.pull_version();
  j.pipeline_depth = p.pipeline_depth();
  for (uint64_t id : p.ended_worker_ids()) {
    RETURN_IF_ERROR(CheckId(where, "ended_worker_ids", id));
    j.ended_worker_ids.push_back(id);
  }
  return j;
}

absl::StatusOr<LogReplay> ReplayFromProto(absl::string_view where, const v1::LogEntry::Replay& p) {
  RETURN_IF_ERROR(CheckId(where, "worker_id", p.worker_id()));
  if (p.step() == 0) return Bad(where, "step is 0 (only a push step is repeated)");
  RETURN_IF_ERROR(CheckCount(where, "chunks", p.chunks_size(), 1, kMaxLogChunks));
  LogReplay r;
  r.worker_id = p.worker_id();
  r.step = p.step();
  r.chunks.reserve(p.chunks_size());
  for (const v1::LogEntry::Replay::ChunkId& c : p.chunks()) {
    RETURN_IF_ERROR(ValidateName(absl::StrCat(where, ": tensor"), c.tensor()));
    r.chunks.push_back({c.tensor(), c.chunk_index()});
  }
  return r;
}

absl::StatusOr<LogLeaseEnd> LeaseEndFromProto(absl::string_view where,
                                              const v1::LogEntry::LeaseEnd& p) {
  RETURN_IF_ERROR(CheckCount(where, "worker_ids", p.worker_ids_size(), 1, kMaxLogWorkers));
  LogLeaseEnd e;
  switch (p.reason()) {
    case v1::LogEntry::LeaseEnd::REASON_LEAVE:
      e.reason = LogLeaseEnd::Reason::kLeave;
      break;
    case v1::LogEntry::LeaseEnd::REASON_EXPIRED:
      e.reason = LogLeaseEnd::Reason::kExpired;
      break;
    default:
      return Bad(where, absl::StrCat("reason ", p.reason(), " is not leave (1) or expired (2)"));
  }
  for (uint64_t id : p.worker_ids()) {
    RETURN_IF_ERROR(CheckId(where, "worker_ids", id));
    e.worker_ids.push_back(id);
  }
  return e;
}

absl::StatusOr<LogPush> PushFromProto(absl::string_view where, const v1::LogEntry::Push& p) {
  RETURN_IF_ERROR(CheckId(where, "worker_id", p.worker_id()));
  if (p.version() == 0) return Bad(where, "version is 0 (a push creates version 1 or later)");
  LogPush push;
  push.worker_id = p.worker_id();
  push.step = p.step();
  push.base_step = p.base_step();
  push.version = p.version();
  push.staleness = p.staleness();
  push.pull_back = p.pull_back();
  ASSIGN_OR_RETURN(push.gradients, GradientsFromProto(where, p.gradients()));
  return push;
}

absl::StatusOr<LogSsgdRound> SsgdRoundFromProto(absl::string_view where,
                                                const v1::LogEntry::SsgdRound& p) {
  if (p.version() == 0) return Bad(where, "version is 0 (a round creates version 1 or later)");
  RETURN_IF_ERROR(CheckCount(where, "pushes", p.pushes_size(), 1, kMaxLogWorkers));
  LogSsgdRound round;
  round.version = p.version();
  for (const v1::LogEntry::SsgdRound::RoundPush& rp : p.pushes()) {
    RETURN_IF_ERROR(CheckId(where, "pushes.worker_id", rp.worker_id()));
    LogSsgdRound::RoundPush& push = round.pushes.emplace_back();
    push.worker_id = rp.worker_id();
    push.step = rp.step();
    push.pull_back = rp.pull_back();
    ASSIGN_OR_RETURN(push.gradients, GradientsFromProto(where, rp.gradients()));
  }
  return round;
}

absl::StatusOr<LogSnapshotChunk> SnapshotChunkFromProto(absl::string_view where,
                                                        const v1::LogEntry::SnapshotChunk& p) {
  RETURN_IF_ERROR(ValidateName(absl::StrCat(where, ": tensor"), p.tensor()));
  LogSnapshotChunk c;
  c.tensor = p.tensor();
  c.part = p.part();
  c.last_part = p.last_part();
  c.state.index = p.chunk_index();
  ASSIGN_OR_RETURN(c.state.weights, FloatsFromBytes(where, "weights", p.weights()));
  if (p.part() == 0 && c.state.weights.empty()) {
    return Bad(where, "part 0 carries no weights");
  }
  ASSIGN_OR_RETURN(c.state.mean_square, FloatsFromBytes(where, "mean_square", p.mean_square()));
  ASSIGN_OR_RETURN(c.state.momentum, FloatsFromBytes(where, "momentum", p.momentum()));
  ASSIGN_OR_RETURN(c.state.gap_scale, FloatsFromBytes(where, "gap_scale", p.gap_scale()));
  const size_t n = c.state.weights.size();
  for (const auto& [name, v] :
       {std::pair<const char*, const std::vector<float>*>{"mean_square", &c.state.mean_square},
        {"momentum", &c.state.momentum},
        {"gap_scale", &c.state.gap_scale}}) {
    if (!v->empty() && v->size() != n) {
      return Bad(where, absl::StrCat(name, " has ", v->size(), " values; the weights have ", n));
    }
  }
  RETURN_IF_ERROR(CheckCount(where, "backups", p.backups_size(), 0, kMaxLogChunks));
  for (const v1::BackupCopy& b : p.backups()) {
    absl::StatusOr<BackupCopy> copy = BackupCopyFromProto(b);
    if (!copy.ok()) return Bad(where, copy.status().message());
    c.backups.push_back(*std::move(copy));
  }
  return c;
}

// The op of an entry from the wire; `where` names the entry.
absl::StatusOr<LogEntry::Op> OpFromProto(absl::string_view where, const v1::LogEntry& p) {
  switch (p.op_case()) {
    case v1::LogEntry::kDeclare:
      return DeclareFromProto(where, p.declare());
    case v1::LogEntry::kJoin:
      return JoinFromProto(where, p.join());
    case v1::LogEntry::kLeaseEnd:
      return LeaseEndFromProto(where, p.lease_end());
    case v1::LogEntry::kRecordPull:
      RETURN_IF_ERROR(CheckId(where, "worker_id", p.record_pull().worker_id()));
      return LogRecordPull{p.record_pull().worker_id(), p.record_pull().version()};
    case v1::LogEntry::kPullChunk: {
      const v1::LogEntry::PullChunk& pc = p.pull_chunk();
      RETURN_IF_ERROR(CheckId(where, "worker_id", pc.worker_id()));
      RETURN_IF_ERROR(ValidateName(absl::StrCat(where, ": tensor"), pc.tensor()));
      return LogPullChunk{pc.worker_id(), pc.tensor(), pc.chunk_index(), pc.live()};
    }
    case v1::LogEntry::kPush:
      return PushFromProto(where, p.push());
    case v1::LogEntry::kSsgdRound:
      return SsgdRoundFromProto(where, p.ssgd_round());
    case v1::LogEntry::kCoordinatorState:
      if (p.coordinator_state().state().size() > kMaxCoordinatorStateBytes) {
        return Bad(where, absl::StrCat("state has ", p.coordinator_state().state().size(),
                                       " bytes; the limit is ", kMaxCoordinatorStateBytes));
      }
      return LogCoordinatorState{p.coordinator_state().state()};
    case v1::LogEntry::kCheckpoint:
      return LogCheckpoint{};
    case v1::LogEntry::kDigest:
      return LogDigest{};
    case v1::LogEntry::kSnapshotChunk:
      return SnapshotChunkFromProto(where, p.snapshot_chunk());
    case v1::LogEntry::kSnapshotEnd:
      return LogSnapshotEnd{p.snapshot_end().header_seq()};
    case v1::LogEntry::kReplay:
      return ReplayFromProto(where, p.replay());
    case v1::LogEntry::OP_NOT_SET:
      break;
  }
  return Bad(where,
             "no kind this version knows (the op is unset, or of a newer protocol: "
             "the members' kernel revisions differ)");
}

// Fills the proto's op from core's (one overload per kind).
struct OpToProto {
  v1::LogEntry* p;
  void operator()(const LogDeclare& d) const {
    for (const TensorSpec& t : d.tensors) TensorSpecToProto(t, p->mutable_declare()->add_tensors());
  }
  void operator()(const LogJoin& j) const {
    v1::LogEntry::Join* o = p->mutable_join();
    o->set_worker_name(j.worker_name);
    o->set_worker_id(j.worker_id);
    o->set_session(j.session);
    o->set_pull_version(j.pull_version);
    o->set_pipeline_depth(j.pipeline_depth);
    for (WorkerId id : j.ended_worker_ids) o->add_ended_worker_ids(id);
  }
  void operator()(const LogLeaseEnd& e) const {
    v1::LogEntry::LeaseEnd* o = p->mutable_lease_end();
    for (WorkerId id : e.worker_ids) o->add_worker_ids(id);
    o->set_reason(e.reason == LogLeaseEnd::Reason::kLeave ? v1::LogEntry::LeaseEnd::REASON_LEAVE
                                                          : v1::LogEntry::LeaseEnd::REASON_EXPIRED);
  }
  void operator()(const LogRecordPull& r) const {
    p->mutable_record_pull()->set_worker_id(r.worker_id);
    p->mutable_record_pull()->set_version(r.version);
  }
  void operator()(const LogPullChunk& c) const {
    v1::LogEntry::PullChunk* o = p->mutable_pull_chunk();
    o->set_worker_id(c.worker_id);
    o->set_tensor(c.tensor);
    o->set_chunk_index(c.chunk_index);
    o->set_live(c.live);
  }
  void operator()(const LogPush& push) const {
    v1::LogEntry::Push* o = p->mutable_push();
    o->set_worker_id(push.worker_id);
    o->set_step(push.step);
    o->set_base_step(push.base_step);
    o->set_version(push.version);
    o->set_staleness(push.staleness);
    o->set_pull_back(push.pull_back);
    GradientsToProto(push.gradients, o->mutable_gradients());
  }
  void operator()(const LogSsgdRound& r) const {
    v1::LogEntry::SsgdRound* o = p->mutable_ssgd_round();
    o->set_version(r.version);
    for (const LogSsgdRound::RoundPush& push : r.pushes) {
      v1::LogEntry::SsgdRound::RoundPush* rp = o->add_pushes();
      rp->set_worker_id(push.worker_id);
      rp->set_step(push.step);
      rp->set_pull_back(push.pull_back);
      GradientsToProto(push.gradients, rp->mutable_gradients());
    }
  }
  void operator()(const LogCoordinatorState& c) const {
    p->mutable_coordinator_state()->set_state(c.state);
  }
  void operator()(const LogCheckpoint&) const { p->mutable_checkpoint(); }
  void operator()(const LogDigest&) const { p->mutable_digest(); }
  void operator()(const LogSnapshotChunk& c) const {
    v1::LogEntry::SnapshotChunk* o = p->mutable_snapshot_chunk();
    o->set_tensor(c.tensor);
    o->set_chunk_index(c.state.index);
    o->set_part(c.part);
    o->set_last_part(c.last_part);
    o->set_weights(BytesOf(c.state.weights));
    o->set_mean_square(BytesOf(c.state.mean_square));
    o->set_momentum(BytesOf(c.state.momentum));
    o->set_gap_scale(BytesOf(c.state.gap_scale));
    for (const BackupCopy& b : c.backups) BackupCopyToProto(b, o->add_backups());
  }
  void operator()(const LogSnapshotEnd& e) const {
    p->mutable_snapshot_end()->set_header_seq(e.header_seq);
  }
  void operator()(const LogReplay& r) const {
    v1::LogEntry::Replay* o = p->mutable_replay();
    o->set_worker_id(r.worker_id);
    o->set_step(r.step);
    for (const LogReplay::ChunkId& c : r.chunks) {
      v1::LogEntry::Replay::ChunkId* id = o->add_chunks();
      id->set_tensor(c.tensor);
      id->set_chunk_index(c.chunk_index);
    }
  }
};

}  // namespace

absl::StatusOr<LogEntry> LogEntryFromProto(const v1::LogEntry& proto) {
  if (proto.seq() == 0) return Bad("log entry", "seq is 0 (seqs count from 1)");
  const std::string where = absl::StrCat("log entry ", proto.seq());
  LogEntry entry;
  entry.seq = proto.seq();
  ASSIGN_OR_RETURN(entry.op, OpFromProto(where, proto));
  return entry;
}

void LogEntryToProto(const LogEntry& entry, v1::LogEntry* proto) {
  proto->Clear();
  proto->set_seq(entry.seq);
  std::visit(OpToProto{proto}, entry.op);
}

absl::StatusOr<LogSnapshotChunk> SnapshotChunkFromProto(const v1::LogEntry::SnapshotChunk& proto) {
  return SnapshotChunkFromProto("snapshot chunk", proto);
}

absl::StatusOr<WorkerRecord> WorkerRecordFromProto(const v1::WorkerRecord& p) {
  const std::string where = absl::StrCat("worker record ", p.worker_id());
  RETURN_IF_ERROR(CheckId("worker record", "worker_id", p.worker_id()));
  RETURN_IF_ERROR(ValidateName(absl::StrCat(where, ": worker_name"), p.worker_name()));
  if (p.session().size() != kSecretBytes) {
    return Bad(where,
               absl::StrCat("session has ", p.session().size(), " bytes; expected ", kSecretBytes));
  }
  if (p.pipeline_depth() > kMaxPipelineDepth) {
    return Bad(where, absl::StrCat("pipeline_depth ", p.pipeline_depth(), " is above ",
                                   kMaxPipelineDepth));
  }
  RETURN_IF_ERROR(CheckCount(where, "bases", p.bases_size(), 0, p.pipeline_depth() + size_t{1}));
  WorkerRecord r;
  r.worker_id = p.worker_id();
  r.worker_name = p.worker_name();
  r.session = p.session();
  r.pipeline_depth = p.pipeline_depth();
  for (const v1::WorkerRecord::Base& b : p.bases()) r.bases.push_back({b.step(), b.version()});
  // A record from a writer that knows only pull_version: its one base.
  if (r.bases.empty()) r.bases.push_back({0, p.pull_version()});
  if (r.bases.back().version != p.pull_version()) {
    return Bad(where,
               absl::StrCat("pull_version ", p.pull_version(),
                            " is not the version of its newest base, ", r.bases.back().version));
  }
  r.ssp_clock = p.ssp_clock();
  r.last_step = p.last_step();
  r.last_step_version = p.last_step_version();
  r.last_step_staleness = p.last_step_staleness();
  return r;
}

void WorkerRecordToProto(const WorkerRecord& r, v1::WorkerRecord* p) {
  p->Clear();
  p->set_worker_id(r.worker_id);
  p->set_worker_name(r.worker_name);
  p->set_session(r.session);
  p->set_pull_version(r.bases.empty() ? 0 : r.bases.back().version);
  p->set_ssp_clock(r.ssp_clock);
  p->set_last_step(r.last_step);
  p->set_last_step_version(r.last_step_version);
  p->set_last_step_staleness(r.last_step_staleness);
  p->set_pipeline_depth(r.pipeline_depth);
  for (const WorkerRecord::Base& b : r.bases) {
    v1::WorkerRecord::Base* o = p->add_bases();
    o->set_step(b.step);
    o->set_version(b.version);
  }
}

absl::StatusOr<BackupCopy> BackupCopyFromProto(const v1::BackupCopy& p) {
  RETURN_IF_ERROR(CheckId("backup copy", "worker_id", p.worker_id()));
  // 16-bit or float32 words; the store checks the length against its dtype
  // and the chunk.
  if (p.values().empty() || p.values().size() % 2 != 0) {
    return Bad(
        absl::StrCat("backup copy of worker ", p.worker_id()),
        absl::StrCat("values have ", p.values().size(), " bytes, not a positive multiple of 2"));
  }
  return BackupCopy{p.worker_id(), p.step(), p.values()};
}

void BackupCopyToProto(const BackupCopy& copy, v1::BackupCopy* proto) {
  proto->Clear();
  proto->set_worker_id(copy.worker_id);
  proto->set_step(copy.step);
  proto->set_values(copy.values);
}

absl::StatusOr<SnapshotHeader> SnapshotHeaderFromProto(const v1::SnapshotHeader& p) {
  const std::string where = absl::StrCat("snapshot header at seq ", p.seq());
  RETURN_IF_ERROR(CheckCount(where, "tensors", p.tensors_size(), 0, kMaxLogTensors));
  RETURN_IF_ERROR(CheckCount(where, "workers", p.workers_size(), 0, kMaxLogWorkers));
  if (p.coordinator_state().size() > kMaxCoordinatorStateBytes) {
    return Bad(where, absl::StrCat("coordinator_state has ", p.coordinator_state().size(),
                                   " bytes; the limit is ", kMaxCoordinatorStateBytes));
  }
  SnapshotHeader h;
  h.seq = p.seq();
  h.version = p.version();
  h.coordinator_state = p.coordinator_state();
  h.chunk_count = p.chunk_count();
  ASSIGN_OR_RETURN(LogDeclare declared, p.tensors_size() == 0
                                            ? absl::StatusOr<LogDeclare>(LogDeclare{})
                                            : DeclareFromProto(where, [&p] {
                                                v1::LogEntry::Declare d;
                                                *d.mutable_tensors() = p.tensors();
                                                return d;
                                              }()));
  h.tensors = std::move(declared.tensors);
  for (const v1::WorkerRecord& w : p.workers()) {
    absl::StatusOr<WorkerRecord> record = WorkerRecordFromProto(w);
    if (!record.ok()) return Bad(where, record.status().message());
    h.workers.push_back(*std::move(record));
  }
  return h;
}

void SnapshotHeaderToProto(const SnapshotHeader& h, v1::SnapshotHeader* p) {
  p->Clear();
  p->set_seq(h.seq);
  p->set_version(h.version);
  for (const TensorSpec& t : h.tensors) TensorSpecToProto(t, p->add_tensors());
  for (const WorkerRecord& w : h.workers) WorkerRecordToProto(w, p->add_workers());
  p->set_coordinator_state(h.coordinator_state);
  p->set_chunk_count(h.chunk_count);
}

}  // namespace dcasgd
