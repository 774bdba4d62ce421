// Fuzz target: the witness's register file (services/witness/
// witness_registers.h, docs/checkpoint-format.md "witness.state") from
// arbitrary bytes, read the way dcasgd-witness reads it at start:
// OpenWitnessRegisters over a directory holding the bytes as witness.state.
//
// Checks: no crash, leak or undefined behaviour, and no allocation beyond
// kMaxWitnessShards registers whatever the file claims; a file is either
// refused with DATA_LOSS naming it (Parse: INVALID_ARGUMENT), or restored to
// exactly what Parse read, serialises to a text that parses to the same
// registers, refuses another shard count, and follows the claim rules on
// its first shard: the holder (or member a of an empty register) is granted
// the next epoch, saved before the answer, and a stale claim changes nothing.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "services/witness/witness_registers.h"
#include "tests/fuzz/fuzz_input.h"

namespace dcasgd::fuzz {
namespace {

// The claim rules on shard 0 of registers restored from the file.
void CheckClaims(WitnessRegisters* registers, uint32_t shard_count) {
  const WitnessRegister before = *registers->Get(0);
  const Member claimant = before.holder == Member::kNone ? Member::kA : before.holder;
  if (before.epoch != std::numeric_limits<uint64_t>::max()) {
    // A stale claim is refused and changes nothing.
    if (before.epoch > 0) {
      absl::StatusOr<ClaimResult> stale =
          registers->Claim(0, shard_count, claimant, before.epoch - 1, "fuzz");
      CheckAnswer(stale.status());
      if (!stale.ok() || stale->granted || stale->state != before) {
        Fail("a claim of an old epoch was granted or changed the register", stale.status());
      }
    }
    absl::StatusOr<ClaimResult> claim =
        registers->Claim(0, shard_count, claimant, before.epoch, "fuzz");
    CheckAnswer(claim.status());
    if (!claim.ok() || !claim->granted ||
        claim->state != WitnessRegister{before.epoch + 1, claimant, false}) {
      Fail("the holder of a register was not granted the next epoch", claim.status());
    }
    // Saved before the answer: a fresh start reads the grant.
    std::string restored;
    absl::StatusOr<std::unique_ptr<WitnessRegisters>> reopened =
        OpenWitnessRegisters(ScratchDir(), shard_count, &restored);
    if (!reopened.ok() || *(*reopened)->Get(0) != claim->state) {
      Fail("a granted epoch was not in the file when answered", reopened.status());
    }
  }
  CheckAnswer(registers->Get(shard_count).status());  // out of range: INVALID_ARGUMENT
}

void Run(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  const std::string path = absl::StrCat(ScratchDir(), "/", kWitnessStateFileName);
  // Not durable: the file is read back at once (and fsync costs runs).
  if (!WriteFileAtomically(path, bytes, /*durable=*/false).ok()) {
    Fail("cannot write the fuzz input");
  }
  uint32_t shard_count = 0;
  absl::StatusOr<std::vector<WitnessRegister>> parsed =
      WitnessRegisters::Parse(bytes, &shard_count);
  std::string restored;
  absl::StatusOr<std::unique_ptr<WitnessRegisters>> opened =
      OpenWitnessRegisters(ScratchDir(), parsed.ok() ? shard_count : 1, &restored);
  if (!parsed.ok()) {
    if (!absl::IsInvalidArgument(parsed.status())) Fail("Parse refused with another code");
    if (!absl::IsDataLoss(opened.status()) ||
        opened.status().message().find(kWitnessStateFileName) == absl::string_view::npos) {
      Fail("a corrupt register file is not DATA_LOSS naming the file", opened.status());
    }
    return;
  }
  if (shard_count == 0 || shard_count > kMaxWitnessShards || parsed->size() != shard_count) {
    Fail("Parse accepted a shard count out of range");
  }
  if (!opened.ok()) Fail("a file that parses does not open", opened.status());
  if ((*opened)->Snapshot() != *parsed) Fail("the restored registers differ from the file's");
  const std::string text = WitnessRegisters::Serialize(shard_count, *parsed);
  uint32_t again_count = 0;
  absl::StatusOr<std::vector<WitnessRegister>> again = WitnessRegisters::Parse(text, &again_count);
  if (!again.ok() || again_count != shard_count || *again != *parsed) {
    Fail("restored registers save what does not restore to them", again.status());
  }
  if (!absl::IsFailedPrecondition(
          OpenWitnessRegisters(ScratchDir(), shard_count + 1, &restored).status())) {
    Fail("a register file of another shard count was accepted");
  }
  CheckClaims(opened->get(), shard_count);
}

}  // namespace
}  // namespace dcasgd::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dcasgd::fuzz::Run(data, size);
  return 0;
}
