#include "core/shard_memory.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dcasgd {

namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

// Saturating arithmetic: a hostile declaration may describe more bytes than
// 64 bits hold, and must still compare as "too much".
uint64_t Add(uint64_t a, uint64_t b) {
  uint64_t sum;
  return __builtin_add_overflow(a, b, &sum) ? kMax : sum;
}

uint64_t Mul(uint64_t a, uint64_t b) {
  uint64_t product;
  return __builtin_mul_overflow(a, b, &product) ? kMax : product;
}

}  // namespace

uint64_t ShardMemory::total() const {
  uint64_t sum = 0;
  for (uint64_t term : {base, weights, optimizer_state, backups, waiting, chunk_overhead, specs,
                        inflight, transport}) {
    sum = Add(sum, term);
  }
  return sum;
}

std::string ShardMemory::DebugString() const {
  return absl::StrCat(HumanBytes(total()), " = base ", HumanBytes(base), " + weights ",
                      HumanBytes(weights), " + optimizer state ", HumanBytes(optimizer_state),
                      " + backups ", HumanBytes(backups), " + waiting pushes ", HumanBytes(waiting),
                      " + chunk bookkeeping ", HumanBytes(chunk_overhead), " + initial values ",
                      HumanBytes(specs), " + in flight ", HumanBytes(inflight), " + transport ",
                      HumanBytes(transport));
}

ShardMemory ShardMemoryFor(const ShardFootprint& footprint, const ShardMemoryConfig& config) {
  const uint64_t weight_bytes = Mul(footprint.weight_elements, sizeof(float));
  const uint64_t workers = config.backups ? Add(config.max_workers, config.extra_backups) : 0;
  ShardMemory m;
  m.base = kShardBaseBytes;
  m.weights = weight_bytes;
  m.optimizer_state = Mul(weight_bytes, config.state_vectors);
  m.backups = Mul(Mul(footprint.weight_elements, config.backup_element_bytes), workers);
  m.waiting = config.waiting_pushes ? Mul(weight_bytes, config.max_workers) : 0;
  m.chunk_overhead =
      Mul(footprint.chunks, Add(kChunkOverheadBytes, Mul(workers, kBackupOverheadBytes)));
  m.specs = footprint.spec_bytes;
  m.inflight = config.inflight_bytes;
  // Every worker may have one stream waiting for the in-flight budget.
  m.transport = Mul(config.max_workers, kStreamWindowBytes);
  return m;
}

std::string HumanBytes(uint64_t bytes) {
  if (bytes == kMax) return "more than 16 EiB";
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024.0 && unit < 6) {
    value /= 1024.0;
    ++unit;
  }
  if (unit == 0) return absl::StrCat(bytes, " B");
  return absl::StrFormat("%.1f %s", value, units[unit]);
}

}  // namespace dcasgd
