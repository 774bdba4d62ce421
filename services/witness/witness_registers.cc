#include "services/witness/witness_registers.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <system_error>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/file.h"

namespace dcasgd {
namespace {

constexpr char kMagic[] = "dcasgd-witness";
constexpr int kFormatVersion = 1;

const char* NameOfMember(Member member) { return NameOf(kMemberNames, member); }

// A log line of the witness: every change of a register is one.
void Log(const std::string& line) { std::fprintf(stderr, "dcasgd-witness: %s\n", line.c_str()); }

absl::Status LineError(int line, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("line ", line, ": ", what));
}

// One "register <shard> <epoch> <holder> <paired>" line (fields split).
absl::Status ParseRegisterLine(const std::vector<absl::string_view>& fields, int line,
                               uint32_t shard_count, std::vector<WitnessRegister>* registers,
                               std::vector<bool>* seen) {
  if (fields.size() != 5) return LineError(line, "expected 'register <shard> <epoch> <a|b> <0|1>'");
  uint32_t shard = 0;
  WitnessRegister reg;
  if (!absl::SimpleAtoi(fields[1], &shard) || shard >= shard_count) {
    return LineError(line, absl::StrCat("shard '", fields[1], "' is not below ", shard_count));
  }
  if ((*seen)[shard]) return LineError(line, absl::StrCat("shard ", shard, " appears twice"));
  if (!absl::SimpleAtoi(fields[2], &reg.epoch) || reg.epoch == 0) {
    return LineError(line, absl::StrCat("epoch '", fields[2], "' is not a positive integer"));
  }
  if (fields[3] == "a") {
    reg.holder = Member::kA;
  } else if (fields[3] == "b") {
    reg.holder = Member::kB;
  } else {
    return LineError(line, absl::StrCat("holder '", fields[3], "' is not a or b"));
  }
  if (fields[4] != "0" && fields[4] != "1") {
    return LineError(line, absl::StrCat("paired '", fields[4], "' is not 0 or 1"));
  }
  reg.paired = fields[4] == "1";
  (*seen)[shard] = true;
  (*registers)[shard] = reg;
  return absl::OkStatus();
}

}  // namespace

std::string WitnessRegister::DebugString() const {
  if (epoch == 0) return "epoch 0 (no holder yet)";
  return absl::StrCat("epoch ", epoch, " held by ", NameOfMember(holder),
                      paired ? ", paired" : ", not paired");
}

absl::Status CheckMember(absl::string_view field, Member member) {
  if (member == Member::kA || member == Member::kB) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, " must be member a or b"));
}

WitnessRegisters::WitnessRegisters(uint32_t shard_count, std::vector<WitnessRegister> restored,
                                   RegisterSaver saver)
    : shard_count_(shard_count), saver_(std::move(saver)), registers_(std::move(restored)) {
  registers_.resize(shard_count_);
}

absl::Status WitnessRegisters::CheckShard(uint32_t shard) const {
  if (shard < shard_count_) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "shard_index ", shard, " is not below the witness's --shard_count=", shard_count_));
}

absl::Status WitnessRegisters::Commit(uint32_t shard, const WitnessRegister& changed) {
  if (saver_ != nullptr) {
    std::vector<WitnessRegister> next = registers_;
    next[shard] = changed;
    if (absl::Status saved = saver_(Serialize(shard_count_, next)); !saved.ok()) {
      Log(absl::StrCat("shard ", shard, ": cannot save ", changed.DebugString(), ": ",
                       saved.ToString(), "; nothing changed"));
      return absl::UnavailableError(absl::StrCat("the witness could not save its register (",
                                                 saved.message(), "): nothing changed, retry"));
    }
  }
  registers_[shard] = changed;
  return absl::OkStatus();
}

absl::StatusOr<ClaimResult> WitnessRegisters::Claim(uint32_t shard, uint32_t shard_count,
                                                    Member member, uint64_t expected_epoch,
                                                    absl::string_view reason) {
  if (shard_count == 0) return absl::InvalidArgumentError("shard_count must be given");
  if (shard_count != shard_count_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "shard_count ", shard_count, " is not this witness's --shard_count=", shard_count_,
        ": a member of another job, or a job resized without a new "
        "witness state"));
  }
  if (absl::Status s = CheckShard(shard); !s.ok()) return s;
  if (absl::Status s = CheckMember("member", member); !s.ok()) return s;
  if (reason.size() > kMaxReasonBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("reason has ", reason.size(), " bytes; at most ", kMaxReasonBytes));
  }
  absl::MutexLock lock(&mu_);
  const WitnessRegister current = registers_[shard];
  const bool may_claim =
      current.paired || current.holder == member ||
      (current.epoch == 0 && member == Member::kA);  // a new job: a starts, b catches up
  ClaimResult result;
  if (current.epoch != expected_epoch || !may_claim ||
      expected_epoch == std::numeric_limits<uint64_t>::max()) {
    Log(absl::StrCat("shard ", shard, ": refused member ", NameOfMember(member),
                     " the epoch after ", expected_epoch, " (", absl::CHexEscape(reason),
                     "): the register holds ", current.DebugString()));
    result.state = current;
    return result;
  }
  const WitnessRegister granted{expected_epoch + 1, member, /*paired=*/false};
  if (absl::Status s = Commit(shard, granted); !s.ok()) return s;
  Log(absl::StrCat("shard ", shard, ": granted epoch ", granted.epoch, " to member ",
                   NameOfMember(member), " (", absl::CHexEscape(reason), "); it was ",
                   current.DebugString()));
  result.granted = true;
  result.state = granted;
  return result;
}

absl::StatusOr<WitnessRegister> WitnessRegisters::SetPaired(uint32_t shard, Member member,
                                                            uint64_t epoch, bool paired) {
  if (absl::Status s = CheckShard(shard); !s.ok()) return s;
  if (absl::Status s = CheckMember("member", member); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  const WitnessRegister current = registers_[shard];
  if (current.epoch != epoch || current.holder != member) {
    return absl::FailedPreconditionError(
        absl::StrCat("shard ", shard, ": member ", NameOfMember(member), " does not hold epoch ",
                     epoch, "; the register holds ", current.DebugString()));
  }
  if (current.paired == paired) return current;
  WitnessRegister changed = current;
  changed.paired = paired;
  if (absl::Status s = Commit(shard, changed); !s.ok()) return s;
  Log(absl::StrCat("shard ", shard, ": ", changed.DebugString()));
  return changed;
}

absl::StatusOr<WitnessRegister> WitnessRegisters::Get(uint32_t shard) const {
  if (absl::Status s = CheckShard(shard); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  return registers_[shard];
}

absl::StatusOr<WitnessRegister> WitnessRegisters::Force(uint32_t shard, Member member,
                                                        absl::string_view reason) {
  if (absl::Status s = CheckShard(shard); !s.ok()) return s;
  if (absl::Status s = CheckMember("member", member); !s.ok()) return s;
  if (reason.size() > kMaxReasonBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("reason has ", reason.size(), " bytes; at most ", kMaxReasonBytes));
  }
  absl::MutexLock lock(&mu_);
  const WitnessRegister current = registers_[shard];
  if (current.epoch == std::numeric_limits<uint64_t>::max()) {
    return absl::FailedPreconditionError(absl::StrCat("shard ", shard,
                                                      ": the epoch is at its "
                                                      "maximum"));
  }
  const WitnessRegister forced{current.epoch + 1, member, /*paired=*/false};
  if (absl::Status s = Commit(shard, forced); !s.ok()) return s;
  Log(absl::StrCat("shard ", shard, ": FORCED epoch ", forced.epoch, " to member ",
                   NameOfMember(member), " (", absl::CHexEscape(reason), "); it was ",
                   current.DebugString(), ": what only the previous holder acknowledged is lost"));
  return forced;
}

absl::StatusOr<bool> WitnessRegisters::Init(uint32_t shard, uint64_t epoch, Member member) {
  if (absl::Status s = CheckShard(shard); !s.ok()) return s;
  if (absl::Status s = CheckMember("member", member); !s.ok()) return s;
  if (epoch == 0) return absl::InvalidArgumentError("epoch must be at least 1");
  absl::MutexLock lock(&mu_);
  const WitnessRegister current = registers_[shard];
  if (current.epoch >= epoch) {
    Log(absl::StrCat("shard ", shard, ": --init epoch ", epoch, " ignored: the register holds ",
                     current.DebugString(), " (an epoch is never lowered)"));
    return false;
  }
  const WitnessRegister initial{epoch, member, /*paired=*/false};
  if (absl::Status s = Commit(shard, initial); !s.ok()) return s;
  Log(absl::StrCat("shard ", shard, ": --init set ", initial.DebugString(), "; it was ",
                   current.DebugString()));
  return true;
}

std::vector<WitnessRegister> WitnessRegisters::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return registers_;
}

std::string WitnessRegisters::Serialize(uint32_t shard_count,
                                        const std::vector<WitnessRegister>& registers) {
  std::string text = absl::StrCat(kMagic, " ", kFormatVersion, "\nshards ", shard_count, "\n");
  size_t lines = 0;
  for (uint32_t shard = 0; shard < registers.size(); ++shard) {
    const WitnessRegister& reg = registers[shard];
    if (reg.epoch == 0) continue;
    absl::StrAppend(&text, "register ", shard, " ", reg.epoch, " ", NameOfMember(reg.holder), " ",
                    reg.paired ? 1 : 0, "\n");
    ++lines;
  }
  absl::StrAppend(&text, "end ", lines, "\n");
  return text;
}

absl::StatusOr<std::vector<WitnessRegister>> WitnessRegisters::Parse(absl::string_view text,
                                                                     uint32_t* shard_count) {
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  // The text ends with a line break, so the last piece is empty.
  if (lines.size() < 4 || !lines.back().empty()) {
    return absl::InvalidArgumentError("truncated: no 'end' line");
  }
  lines.pop_back();
  if (lines[0] != absl::StrCat(kMagic, " ", kFormatVersion)) {
    return LineError(1, absl::StrCat("expected '", kMagic, " ", kFormatVersion, "'"));
  }
  const std::vector<absl::string_view> header = absl::StrSplit(lines[1], ' ');
  if (header.size() != 2 || header[0] != "shards" || !absl::SimpleAtoi(header[1], shard_count) ||
      *shard_count == 0 || *shard_count > kMaxWitnessShards) {
    return LineError(2, absl::StrCat("expected 'shards <1..", kMaxWitnessShards, ">'"));
  }
  std::vector<WitnessRegister> registers(*shard_count);
  std::vector<bool> seen(*shard_count, false);
  const size_t register_lines = lines.size() - 3;
  for (size_t i = 2; i + 1 < lines.size(); ++i) {
    const int line = static_cast<int>(i) + 1;
    const std::vector<absl::string_view> fields = absl::StrSplit(lines[i], ' ');
    if (fields[0] != "register") return LineError(line, "expected a 'register' line");
    if (absl::Status s = ParseRegisterLine(fields, line, *shard_count, &registers, &seen);
        !s.ok()) {
      return s;
    }
  }
  const std::vector<absl::string_view> end = absl::StrSplit(lines.back(), ' ');
  size_t count = 0;
  if (end.size() != 2 || end[0] != "end" || !absl::SimpleAtoi(end[1], &count) ||
      count != register_lines) {
    return LineError(static_cast<int>(lines.size()),
                     absl::StrCat("expected 'end ", register_lines, "'"));
  }
  return registers;
}

absl::StatusOr<std::unique_ptr<WitnessRegisters>> OpenWitnessRegisters(const std::string& state_dir,
                                                                       uint32_t shard_count,
                                                                       std::string* restored) {
  std::error_code error;
  std::filesystem::create_directories(state_dir, error);
  if (error) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create --state_dir '", state_dir, "': ", error.message()));
  }
  const std::string path = absl::StrCat(state_dir, "/", kWitnessStateFileName);
  RegisterSaver saver = [path](const std::string& text) { return WriteFileAtomically(path, text); };
  absl::StatusOr<std::string> saved = ReadWholeFile(path);
  if (!saved.ok() && !absl::IsNotFound(saved.status())) return saved.status();
  if (!saved.ok()) {
    // A new job (or a lost volume: the registers are then recreated with
    // --init). Written now, so an unwritable directory fails the start.
    if (absl::Status s = saver(WitnessRegisters::Serialize(shard_count, {})); !s.ok()) return s;
    *restored =
        absl::StrCat("none (", path, " absent; created with ", shard_count, " empty registers)");
    return std::make_unique<WitnessRegisters>(shard_count, std::vector<WitnessRegister>{},
                                              std::move(saver));
  }
  uint32_t saved_count = 0;
  absl::StatusOr<std::vector<WitnessRegister>> registers =
      WitnessRegisters::Parse(*saved, &saved_count);
  if (!registers.ok()) {
    return absl::DataLossError(absl::StrCat(
        path, ": ", registers.status().message(),
        " (a corrupt register file; restore it from a backup or recreate the registers with "
        "--init from the members' status, docs/operations.md)"));
  }
  if (saved_count != shard_count) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " holds the registers of ", saved_count, " shards, not --shard_count=", shard_count,
        ": a job's shard count cannot change under one witness"));
  }
  size_t held = 0;
  uint64_t highest = 0;
  for (const WitnessRegister& reg : *registers) {
    if (reg.epoch > 0) ++held;
    highest = std::max(highest, reg.epoch);
  }
  *restored = absl::StrCat(path, ": ", held, " of ", shard_count, " registers held, highest epoch ",
                           highest);
  return std::make_unique<WitnessRegisters>(shard_count, *std::move(registers), std::move(saver));
}

}  // namespace dcasgd
