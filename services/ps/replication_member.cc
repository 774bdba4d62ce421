#include "services/ps/replication_member.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "base/file.h"
#include "base/status_macros.h"
#include "grpcpp/client_context.h"
#include "services/ps/replication_follower.h"

namespace dcasgd {

namespace {

constexpr char kReplicationHealthService[] = "dcasgd.replication";
constexpr char kShardHealthService[] = "dcasgd.v1.ParameterShard";
// How often the control thread looks at the timers.
constexpr absl::Duration kTick = absl::Milliseconds(20);

bool IsPrimary(v1::ReplicationRole role) {
  return role == v1::REPLICATION_ROLE_PRIMARY_PAIRED || role == v1::REPLICATION_ROLE_PRIMARY_SOLO;
}

}  // namespace

int64_t ReplicationMember::NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

ReplicationMember::ReplicationMember(ReplicationOptions options, ShardStore* store,
                                     std::string epoch_file, int64_t max_message_bytes,
                                     int64_t max_push_bytes, Hooks hooks,
                                     prometheus::Registry* metrics)
    : options_(std::move(options)),
      store_(store),
      epoch_file_(std::move(epoch_file)),
      max_message_bytes_(max_message_bytes),
      max_push_bytes_(max_push_bytes),
      hooks_(std::move(hooks)),
      fingerprint_(ConfigFingerprint(store->config())),
      outbox_(options_.buffer_bytes) {
  if (metrics != nullptr) {
    const prometheus::Labels shard = {{"shard", absl::StrCat(store->config().shard_index)}};
    paired_gauge_ = &prometheus::BuildGauge()
                         .Name("dcasgd_ps_replication_paired")
                         .Help("1 for a primary whose replica caught up (commits wait for it)")
                         .Register(*metrics)
                         .Add(shard);
    epoch_gauge_ = &prometheus::BuildGauge()
                        .Name("dcasgd_ps_replication_epoch")
                        .Help("the member's epoch (grows at every change of primary or pairing)")
                        .Register(*metrics)
                        .Add(shard);
    lag_gauge_ = &prometheus::BuildGauge()
                      .Name("dcasgd_ps_replication_lag_entries")
                      .Help("primary: log entries sequenced, not yet acknowledged by the replica")
                      .Register(*metrics)
                      .Add(shard);
    auto& roles = prometheus::BuildGauge()
                      .Name("dcasgd_ps_replication_role")
                      .Help("1 for the member's current role, 0 for the others")
                      .Register(*metrics);
    for (int r = v1::REPLICATION_ROLE_STARTING; r <= v1::REPLICATION_ROLE_DEPOSED; ++r) {
      role_gauges_[r] = &roles.Add(
          {{"shard", shard.at("shard")}, {"role", RoleName(static_cast<v1::ReplicationRole>(r))}});
    }
    failovers_ = &prometheus::BuildCounter()
                      .Name("dcasgd_ps_replication_failovers_total")
                      .Help("epochs this member was granted after losing its peer")
                      .Register(*metrics)
                      .Add(shard);
  }
}

ReplicationMember::~ReplicationMember() { Stop(); }

absl::Status ReplicationMember::Start() {
  ASSIGN_OR_RETURN(std::shared_ptr<const auth::ClientCredentials> credentials,
                   auth::ClientCredentials::Load(options_.peer_security));
  witness_ = v1::Witness::NewStub(
      credentials->NewChannel(options_.witness_address, grpc::ChannelArguments()));
  follower_ = std::make_unique<ReplicaFollower>(this, store_, credentials, max_push_bytes_);
  if (hooks_.set_health) {
    hooks_.set_health(kReplicationHealthService, false);
    hooks_.set_health(kShardHealthService, false);  // starting: no client calls yet
  }
  UpdateGauges();
  follower_->Start();
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

void ReplicationMember::Stop() {
  std::vector<absl::AnyInvocable<void(absl::Status)>> waiters;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    waiters = TakeWaiters(/*all=*/true);
    if (attached_context_ != nullptr) attached_context_->TryCancel();
  }
  for (auto& done : waiters) done(absl::UnavailableError("the shard is shutting down; retry"));
  if (follower_ != nullptr) follower_->Stop();
  if (thread_.joinable()) thread_.join();
  // The store may outlive the member (PsServer destroys the member first).
  if (absl::MutexLock lock(&mu_); sink_set_) store_->SetLogSink(nullptr);
  outbox_.Close();
}

absl::Status ReplicationMember::Admit(grpc::ServerContextBase* context) const {
  absl::MutexLock lock(&mu_);
  const char* hint = nullptr;
  std::string why;
  if (!IsPrimary(role_)) {
    hint = RoleName(role_);
    why = "this member serves no client";
  } else if (commit_with_replica_ &&
             NowNs() - last_echo_ns_ > absl::ToInt64Nanoseconds(options_.lease)) {
    hint = "unconfirmed";
    why = "its replica acknowledged nothing within --replication_lease_ms";
  }
  if (hint == nullptr) return absl::OkStatus();
  if (context != nullptr) context->AddTrailingMetadata(kRoleMetadataKey, hint);
  return absl::UnavailableError(absl::StrCat(
      "shard ", store_->config().shard_index, " member ", MemberName(options_.member), " is ", hint,
      " at epoch ", epoch_, " (", why, "): call the other member of the pair"));
}

void ReplicationMember::WhenCommitted(uint64_t seq, absl::AnyInvocable<void(absl::Status)> done) {
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ || !IsPrimary(role_)) {
      status = absl::UnavailableError(absl::StrCat("member ", MemberName(options_.member),
                                                   " stopped being primary (", RoleName(role_),
                                                   ") before the change was committed: retry"));
    } else if (commit_with_replica_ && acked_ < seq) {
      waiters_.emplace(seq, std::move(done));
      return;
    }
  }
  done(status);
}

std::vector<absl::AnyInvocable<void(absl::Status)>> ReplicationMember::TakeWaiters(bool all) {
  std::vector<absl::AnyInvocable<void(absl::Status)>> taken;
  auto end = all ? waiters_.end() : waiters_.upper_bound(acked_);
  for (auto it = waiters_.begin(); it != end; ++it) taken.push_back(std::move(it->second));
  waiters_.erase(waiters_.begin(), end);
  return taken;
}

void ReplicationMember::FillStatus(v1::ShardStatus* status) const {
  absl::MutexLock lock(&mu_);
  status->set_member(MemberName(options_.member));
  status->set_replication_role(RoleName(role_));
  status->set_epoch(epoch_);
  status->set_last_seq(store_->last_seq());
}

bool ReplicationMember::primary() const {
  absl::MutexLock lock(&mu_);
  return IsPrimary(role_);
}

bool ReplicationMember::holds_valid_state() const {
  absl::MutexLock lock(&mu_);
  return valid_;
}

uint64_t ReplicationMember::epoch() const {
  absl::MutexLock lock(&mu_);
  return epoch_;
}

void ReplicationMember::SetRole(v1::ReplicationRole role) {
  role_ = role;
  if (hooks_.set_health) {
    hooks_.set_health(kReplicationHealthService, role == v1::REPLICATION_ROLE_PRIMARY_PAIRED);
    // Alive ("" stays SERVING) but serving no client call.
    hooks_.set_health(kShardHealthService, IsPrimary(role));
    // Except deposed: its store cannot catch up in place, and a restarted
    // process catches up from the new primary. "" NOT_SERVING makes the
    // liveness probe (deploy/helm) restart it.
    if (role == v1::REPLICATION_ROLE_DEPOSED) hooks_.set_health("", false);
  }
}

void ReplicationMember::LogEvery(const std::string& key, const std::string& line) {
  {
    absl::MutexLock lock(&mu_);
    absl::Time& last = logged_[key];
    if (absl::Now() - last < absl::Seconds(10)) return;
    last = absl::Now();
  }
  std::fprintf(stderr, "dcasgd-ps: shard %u member %s: %s\n", store_->config().shard_index,
               MemberName(options_.member), line.c_str());
}

uint64_t ReplicationMember::ReadEpochFile() const {
  if (epoch_file_.empty()) return 0;
  absl::StatusOr<std::string> text = ReadWholeFile(epoch_file_);
  uint64_t epoch = 0;
  if (!text.ok() || !absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &epoch)) return 0;
  return epoch;
}

void ReplicationMember::WriteEpochFile(uint64_t epoch) {
  if (epoch_file_.empty() || epoch <= ReadEpochFile()) return;
  if (absl::Status s = WriteFileAtomically(epoch_file_, absl::StrCat(epoch, "\n")); !s.ok()) {
    LogEvery("epoch-file", absl::StrCat("cannot record epoch ", epoch, ": ", s.ToString()));
  }
}

void ReplicationMember::Loop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping), kTick)) return;
    }
    Tick();
    UpdateGauges();
  }
}

void ReplicationMember::Tick() {
  v1::ReplicationRole role;
  {
    absl::MutexLock lock(&mu_);
    role = role_;
  }
  if (role == v1::REPLICATION_ROLE_STARTING) {
    Decide();
  } else if (IsPrimary(role)) {
    CheckReplica();
  } else if (role == v1::REPLICATION_ROLE_REPLICA) {
    CheckPrimary();
  } else if (role == v1::REPLICATION_ROLE_CATCHING_UP) {
    CheckBothRestarted();
  }
}

absl::StatusOr<v1::ClaimResponse> ReplicationMember::Claim(uint64_t expected,
                                                           const std::string& reason) {
  v1::ClaimRequest request;
  request.set_shard_index(store_->config().shard_index);
  request.set_shard_count(store_->config().shard_count);
  request.set_member(options_.member);
  request.set_expected_epoch(expected);
  request.set_reason(reason);
  v1::ClaimResponse response;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kWitnessCallDeadline));
  grpc::Status status = witness_->Claim(&context, request, &response);
  if (!status.ok()) {
    return absl::UnavailableError(
        absl::StrCat("the witness at ", options_.witness_address,
                     " did not answer a claim: ", status.error_message()));
  }
  return response;
}

grpc::Status ReplicationMember::ReadRegister(v1::WitnessRegister* reg) {
  v1::GetRegisterRequest request;
  request.set_shard_index(store_->config().shard_index);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kWitnessCallDeadline));
  return witness_->GetRegister(&context, request, reg);
}

void ReplicationMember::Decide() {
  v1::WitnessRegister reg;
  if (grpc::Status s = ReadRegister(&reg); !s.ok()) {
    LogEvery("witness", absl::StrCat("waiting for the witness at ", options_.witness_address, " (",
                                     s.error_message(), ")"));
    return;
  }
  const bool self = reg.holder() == options_.member;
  if (reg.epoch() == 0 && options_.member == v1::MEMBER_A) {
    if (const uint64_t seen = ReadEpochFile(); seen > 0) {
      // The known gap: a new-job register cannot be told from a lost one.
      LogEvery(
          "lost-register",
          absl::StrCat("the witness holds no register, but this member already saw epoch ", seen,
                       ": the witness lost its register; this member will not take "
                       "epoch 1 on its own (recreate the register with "
                       "dcasgd-witness --init, docs/operations.md)"));
      return;
    }
    BecomePrimary(0, /*promoted=*/false, "a new job: the witness holds no register");
    return;
  }
  if (reg.epoch() > 0 && self && !reg.paired()) {
    BecomePrimary(reg.epoch(), /*promoted=*/false,
                  "the witness names this member as the primary alone (a restart)");
    return;
  }
  if (reg.epoch() > 0 && self && reg.paired()) {
    // The peer may hold acknowledged updates this member lost with its
    // memory: it claims when its timeout runs out; never claim on ours.
    // Unless the peer restarted too (CheckBothRestarted).
    LogEvery("paired-self",
             absl::StrCat("the register is paired at epoch ", reg.epoch(),
                          " and names this member, which restarted: waiting for the peer to "
                          "take over, or to say it restarted too"));
  }
  {
    absl::MutexLock lock(&mu_);
    if (role_ != v1::REPLICATION_ROLE_STARTING) return;
    SetRole(v1::REPLICATION_ROLE_CATCHING_UP);
    if (reg.epoch() > 0 && self && reg.paired()) restarted_holder_epoch_ = reg.epoch();
  }
  LogEvery("follow",
           absl::StrCat("catching up from member ", options_.member == v1::MEMBER_A ? "b" : "a",
                        " at ", options_.peer_address, " (register epoch ", reg.epoch(), ")"));
}

void ReplicationMember::BecomePrimary(uint64_t expected, bool promoted, const std::string& why) {
  bool restore = false;
  bool was_replica = false;
  {
    absl::MutexLock lock(&mu_);
    was_replica = role_ == v1::REPLICATION_ROLE_REPLICA;
    restore = !promoted && !restored_;
    restored_ = true;
  }
  // Restored before claiming: a bad checkpoint stops the process as it
  // stops a start, before any epoch was taken.
  if (restore && hooks_.restore) {
    if (absl::Status s = hooks_.restore(); !s.ok()) {
      std::fprintf(stderr, "dcasgd-ps: cannot restore the checkpoint: %s\n", s.ToString().c_str());
      std::exit(1);
    }
  }
  absl::StatusOr<v1::ClaimResponse> claim = Claim(expected, why);
  if (!claim.ok()) {
    LogEvery("claim", claim.status().ToString());
    return;  // retried at the next tick
  }
  if (!claim->granted()) {
    std::vector<absl::AnyInvocable<void(absl::Status)>> waiters;
    {
      absl::MutexLock lock(&mu_);
      waiters = Depose(absl::StrCat("the witness refused epoch ", expected + 1,
                                    " (register at epoch ", claim->state().epoch(), ", held by ",
                                    MemberName(claim->state().holder()), ")"));
    }
    FailDeposed(std::move(waiters));
    return;
  }
  const uint64_t epoch = claim->state().epoch();
  if (promoted) {
    store_->RenewAllLeases();  // deadlines are not replicated
    // Only a replica lacks the data leases' renewals. (A primary going on
    // alone has them, and may be here while a coordinator call holds the
    // coordinator's lock waiting for its commit, which this releases below.)
    if (was_replica && hooks_.renew_data_leases) hooks_.renew_data_leases();
    if (failovers_ != nullptr) failovers_->Increment();
  }
  std::vector<absl::AnyInvocable<void(absl::Status)>> waiters;
  bool first_valid = false;
  {
    absl::MutexLock lock(&mu_);
    epoch_ = epoch;
    commit_with_replica_ = false;
    paired_at_witness_ = false;
    pairing_target_ = 0;
    waiters = TakeWaiters(/*all=*/true);
    first_valid = !valid_;
    valid_ = true;
    if (!sink_set_) {
      store_->SetLogSink(&outbox_);
      sink_set_ = true;
    }
    SetRole(v1::REPLICATION_ROLE_PRIMARY_SOLO);
  }
  WriteEpochFile(epoch);
  for (auto& done : waiters) done(absl::OkStatus());  // commits that waited: alone now
  if (first_valid && hooks_.state_valid) hooks_.state_valid();
  std::fprintf(stderr,
               "dcasgd-ps: shard %u member %s: primary alone at epoch %llu (%s); acknowledged "
               "updates are held by this member and its checkpoints only until a replica "
               "catches up\n",
               store_->config().shard_index, MemberName(options_.member),
               static_cast<unsigned long long>(epoch), why.c_str());
}

std::vector<absl::AnyInvocable<void(absl::Status)>> ReplicationMember::Depose(
    const std::string& why) {
  std::vector<absl::AnyInvocable<void(absl::Status)>> waiters = TakeWaiters(/*all=*/true);
  const bool was_primary = IsPrimary(role_);
  SetRole(v1::REPLICATION_ROLE_DEPOSED);
  commit_with_replica_ = false;
  if (attached_context_ != nullptr) attached_context_->TryCancel();
  std::fprintf(stderr,
               "dcasgd-ps: shard %u member %s: deposed at epoch %llu (%s): it acknowledges "
               "nothing more; %s\n",
               store_->config().shard_index, MemberName(options_.member),
               static_cast<unsigned long long>(epoch_), why.c_str(),
               was_primary ? "changes it applied but never committed are not in the pair's "
                             "history; restart it to catch up from the new primary"
                           : "restart it to catch up from the primary");
  return waiters;
}

void ReplicationMember::FailDeposed(std::vector<absl::AnyInvocable<void(absl::Status)>> waiters) {
  for (auto& done : waiters) {
    done(
        absl::UnavailableError("this member was deposed before the change was committed: retry "
                               "on the other member"));
  }
}

void ReplicationMember::CheckPrimary() {
  uint64_t expected = 0;
  std::string why;
  {
    absl::MutexLock lock(&mu_);
    const int64_t silence = NowNs() - last_heard_ns_;
    if (silence > absl::ToInt64Nanoseconds(options_.failover_timeout)) {
      why = absl::StrCat("primary silent for ", absl::FormatDuration(options_.failover_timeout));
    } else if (stream_ended_ && peer_refused_) {
      why = "the primary's stream broke and its port refuses connections";
    } else {
      return;
    }
    expected = epoch_;
    // Acknowledge nothing more of epoch e before claiming e + 1.
    stream_ended_ = false;
  }
  follower_->Cancel();
  BecomePrimary(expected, /*promoted=*/true, why);
}

void ReplicationMember::NotePeerRole(const std::string& role) {
  absl::MutexLock lock(&mu_);
  peer_role_ = role;
}

void ReplicationMember::CheckBothRestarted() {
  uint64_t epoch = 0;
  std::string peer_role;
  {
    absl::MutexLock lock(&mu_);
    if (restarted_holder_epoch_ == 0 || valid_) return;
    epoch = restarted_holder_epoch_;
    peer_role = peer_role_;
  }
  // Starting or catching up, the peer holds no valid copy: it restarted too
  // and can only become a replica of a primary, which only this member can
  // become (the register names it). So no acknowledged update is held
  // anywhere but in the checkpoints, and claiming loses nothing a wait would
  // keep.
  if (peer_role != RoleName(v1::REPLICATION_ROLE_STARTING) &&
      peer_role != RoleName(v1::REPLICATION_ROLE_CATCHING_UP)) {
    return;
  }
  // The register must still be the one seen at start (the claim below checks
  // its epoch again at the witness).
  v1::WitnessRegister reg;
  if (!ReadRegister(&reg).ok()) return;
  if (reg.epoch() != epoch || reg.holder() != options_.member || !reg.paired()) {
    absl::MutexLock lock(&mu_);
    restarted_holder_epoch_ = 0;  // the register moved: follow as usual
    return;
  }
  follower_->Cancel();
  BecomePrimary(epoch, /*promoted=*/false,
                absl::StrCat("both members restarted: the peer is ", peer_role,
                             ", so this member, named by the paired register, serves from its "
                             "checkpoint; updates acknowledged after it are lost, as without "
                             "replicas"));
}

bool ReplicationMember::ShouldFollow() const {
  absl::MutexLock lock(&mu_);
  return !stopping_ && role_ == v1::REPLICATION_ROLE_CATCHING_UP;
}

void ReplicationMember::NoteHeard(uint64_t epoch) {
  absl::MutexLock lock(&mu_);
  last_heard_ns_ = NowNs();
  if (epoch > epoch_) epoch_ = epoch;
}

void ReplicationMember::CaughtUp(uint64_t epoch) {
  bool first_valid = false;
  {
    absl::MutexLock lock(&mu_);
    if (role_ != v1::REPLICATION_ROLE_CATCHING_UP) return;
    epoch_ = epoch;
    last_heard_ns_ = NowNs();
    stream_ended_ = false;
    first_valid = !valid_;
    valid_ = true;
    SetRole(v1::REPLICATION_ROLE_REPLICA);
  }
  WriteEpochFile(epoch);
  if (first_valid && hooks_.state_valid) hooks_.state_valid();
  std::fprintf(stderr,
               "dcasgd-ps: shard %u member %s: replica at epoch %llu from seq %llu: it holds "
               "every update the primary acknowledges from now on\n",
               store_->config().shard_index, MemberName(options_.member),
               static_cast<unsigned long long>(epoch),
               static_cast<unsigned long long>(store_->last_seq()));
}

void ReplicationMember::FollowEnded(const absl::Status& status, bool refused) {
  absl::MutexLock lock(&mu_);
  if (role_ != v1::REPLICATION_ROLE_REPLICA) return;
  stream_ended_ = true;
  peer_refused_ = refused;
  std::fprintf(stderr, "dcasgd-ps: shard %u member %s: the primary's stream ended (%s)%s\n",
               store_->config().shard_index, MemberName(options_.member), status.ToString().c_str(),
               refused ? "; its port refuses connections: claiming at once"
                       : "; claiming after the failover timeout unless it is heard again");
}

void ReplicationMember::UpdateGauges() {
  if (paired_gauge_ == nullptr) return;
  const uint64_t last = store_->last_seq();
  absl::MutexLock lock(&mu_);
  paired_gauge_->Set(role_ == v1::REPLICATION_ROLE_PRIMARY_PAIRED ? 1 : 0);
  epoch_gauge_->Set(static_cast<double>(epoch_));
  lag_gauge_->Set(
      IsPrimary(role_) && attached_ != 0 && last > acked_ ? static_cast<double>(last - acked_) : 0);
  for (const auto& [role, gauge] : role_gauges_) gauge->Set(role == role_ ? 1 : 0);
}

}  // namespace dcasgd
