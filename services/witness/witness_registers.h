#ifndef DCASGD_SERVICES_WITNESS_WITNESS_REGISTERS_H_
#define DCASGD_SERVICES_WITNESS_WITNESS_REGISTERS_H_

// The witness's registers: one per shard of a replicated job, `(epoch,
// holder, paired)`, and the rules by which a member of a shard pair moves to
// a new epoch (docs/design.md, "Members, roles and the witness" and "Failure
// detection, promotion and fencing"). No gRPC here: the service
// (witness_service.h) parses requests and calls this.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "base/enum_names.h"

namespace dcasgd {

// A member of a shard pair, named for life (roles move, names do not).
enum class Member { kNone, kA, kB };
inline constexpr EnumName<Member> kMemberNames[] = {
    {Member::kNone, "-"},
    {Member::kA, "a"},
    {Member::kB, "b"},
};

// The most shards one witness serves: bounds its file (a line per shard) and
// its metrics (a few series per shard).
inline constexpr uint32_t kMaxWitnessShards = 4096;

// The register of one shard.
struct WitnessRegister {
  // 0 with no holder: a new job, which member a may claim.
  uint64_t epoch = 0;
  // The member the witness granted `epoch` to; kNone at epoch 0.
  Member holder = Member::kNone;
  // The holder's replica caught up and holds everything committed: either
  // member may claim the next epoch.
  bool paired = false;

  bool operator==(const WitnessRegister& other) const {
    return epoch == other.epoch && holder == other.holder && paired == other.paired;
  }
  bool operator!=(const WitnessRegister& other) const { return !(*this == other); }
  // "epoch 7 held by a, paired"; for messages and logs.
  std::string DebugString() const;
};

// What a Claim answered.
struct ClaimResult {
  bool granted = false;
  // The register after the call (the new epoch when granted, else the
  // register that refused).
  WitnessRegister state;
};

// Writes the registers' text (below) durably, replacing the previous one;
// any error means it was not written.
using RegisterSaver = std::function<absl::Status(const std::string& text)>;

// The registers of every shard of one job. Every change is saved (the
// saver writes the file atomically and fsyncs it) BEFORE it takes effect
// and before the caller can answer: a change whose save failed is
// UNAVAILABLE and changes nothing, so an epoch once granted is never granted
// again, even across a crash of the witness. Calls are serialised by one
// mutex held across the save (they are rare: only at role changes).
//
// Errors: INVALID_ARGUMENT for a shard index at or above the shard count, a
// member other than a or b, a reason above kMaxReasonBytes, a Claim without
// a shard count, all naming the field; FAILED_PRECONDITION as each method
// says; UNAVAILABLE when the save failed. None of them changes anything.
//
// Thread-safe. Blocks on the saver (file system) for changes.
class WitnessRegisters {
 public:
  // A `reason` (logged with a Claim or Force) may be at most this long.
  static constexpr size_t kMaxReasonBytes = 1024;

  // `shard_count` registers at epoch 0, or `restored` (shard_count entries).
  // `saver` may be null (nothing is durable: tests only).
  WitnessRegisters(uint32_t shard_count, std::vector<WitnessRegister> restored,
                   RegisterSaver saver);
  WitnessRegisters(const WitnessRegisters&) = delete;
  WitnessRegisters& operator=(const WitnessRegisters&) = delete;

  uint32_t shard_count() const { return shard_count_; }

  // Grants epoch expected_epoch + 1 to `member` when the register holds
  // `expected_epoch` and either it is paired (either member may claim: its
  // replica has everything acknowledged), `member` holds it (a solo primary
  // restarting), or it is the empty register of a new job (epoch 0) and
  // `member` is a. The register becomes (expected_epoch + 1, member, not
  // paired). Otherwise `granted` is false and nothing changes.
  // FAILED_PRECONDITION when `shard_count` is not the witness's (a member of
  // another job, or of a resized one).
  absl::StatusOr<ClaimResult> Claim(uint32_t shard, uint32_t shard_count, Member member,
                                    uint64_t expected_epoch, absl::string_view reason);

  // The holder of `epoch` marks its register paired (its replica caught up)
  // or not. FAILED_PRECONDITION naming the register when it is at another
  // epoch or held by another member. Setting the value it has saves nothing.
  absl::StatusOr<WitnessRegister> SetPaired(uint32_t shard, Member member, uint64_t epoch,
                                            bool paired);

  absl::StatusOr<WitnessRegister> Get(uint32_t shard) const;

  // The operator's override: the next epoch to `member` whatever the
  // register says (not paired). What only the previous holder acknowledged
  // is lost; logged with `reason`.
  absl::StatusOr<WitnessRegister> Force(uint32_t shard, Member member, absl::string_view reason);

  // Recreates a lost register (dcasgd-witness --init): sets (epoch, member,
  // not paired) when the register's epoch is below `epoch`, so an epoch is
  // never lowered (a lower one could be granted twice) and repeating the
  // same --init at a restart changes nothing. Returns whether it changed.
  // INVALID_ARGUMENT for epoch 0 or a bad shard or member.
  absl::StatusOr<bool> Init(uint32_t shard, uint64_t epoch, Member member);

  // Every register, by shard (for metrics and status).
  std::vector<WitnessRegister> Snapshot() const;

  // The text the saver writes (docs/checkpoint-format.md, "witness.state"):
  //   dcasgd-witness 1
  //   shards <shard count>
  //   register <shard> <epoch> <holder a|b> <paired 0|1>   (epoch > 0 only)
  //   end <number of register lines>
  static std::string Serialize(uint32_t shard_count, const std::vector<WitnessRegister>& registers);
  // Parses Serialize's text back into shard_count registers. INVALID_ARGUMENT
  // saying what is wrong (line number) for anything else: an unknown
  // version, a missing `end` line (a truncated file would otherwise forget
  // epochs and grant them again), a shard out of range or repeated, an
  // epoch 0 line or a holder other than a or b.
  static absl::StatusOr<std::vector<WitnessRegister>> Parse(absl::string_view text,
                                                            uint32_t* shard_count);

 private:
  // INVALID_ARGUMENT unless shard < shard_count_.
  absl::Status CheckShard(uint32_t shard) const;
  // Saves the registers with `changed` as shard `shard`, then sets it.
  // UNAVAILABLE (nothing changed) when the save fails.
  absl::Status Commit(uint32_t shard, const WitnessRegister& changed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const uint32_t shard_count_;
  const RegisterSaver saver_;

  mutable absl::Mutex mu_;
  std::vector<WitnessRegister> registers_ ABSL_GUARDED_BY(mu_);  // by shard
};

// Validates a member named by a request: INVALID_ARGUMENT naming `field`
// unless it is a or b.
absl::Status CheckMember(absl::string_view field, Member member);

// The file of the registers inside --state_dir.
inline constexpr char kWitnessStateFileName[] = "witness.state";

// The registers of a job of `shard_count` shards kept in
// <state_dir>/witness.state (the directory is created if missing):
// restored when the file exists, else created
// (empty registers) and written at once, so a state directory that cannot be
// written stops the start rather than the first claim. Every later change is
// written atomically and fsynced (base/file.h) before it takes effect.
// DATA_LOSS naming the file for a corrupt one (never start empty silently:
// epochs would be granted again); FAILED_PRECONDITION when it was written for
// another shard count; the read or write error otherwise. Blocks on the
// file system. `*restored` says what was read, for the start log.
absl::StatusOr<std::unique_ptr<WitnessRegisters>> OpenWitnessRegisters(const std::string& state_dir,
                                                                       uint32_t shard_count,
                                                                       std::string* restored);

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_WITNESS_WITNESS_REGISTERS_H_
