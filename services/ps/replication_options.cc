#include "services/ps/replication_options.h"

#include <openssl/sha.h>

#include "absl/strings/str_format.h"

namespace dcasgd {

const char* MemberName(v1::Member member) {
  switch (member) {
    case v1::MEMBER_A:
      return "a";
    case v1::MEMBER_B:
      return "b";
    default:
      return "?";
  }
}

const char* RoleName(v1::ReplicationRole role) {
  switch (role) {
    case v1::REPLICATION_ROLE_STARTING:
      return "starting";
    case v1::REPLICATION_ROLE_PRIMARY_PAIRED:
      return "primary";
    case v1::REPLICATION_ROLE_PRIMARY_SOLO:
      return "primary-solo";
    case v1::REPLICATION_ROLE_REPLICA:
      return "replica";
    case v1::REPLICATION_ROLE_CATCHING_UP:
      return "catching-up";
    case v1::REPLICATION_ROLE_DEPOSED:
      return "deposed";
    default:
      return "unknown";
  }
}

std::string ConfigFingerprint(const ShardConfig& c) {
  const OptimizerConfig& o = c.optimizer;
  // Floats in hexadecimal: exact, so two configurations that round the same
  // way print the same.
  const std::string text = absl::StrFormat(
      "rule=%d lr=%a lambda0=%a ms_decay=%a epsilon=%a momentum=%a weight_decay=%a "
      "staleness_aware=%d gap_aware=%d gap_decay=%a schedule=%d decay_factor=%a decay_every=%d "
      "max_gradient_abs=%a max_weight_abs=%a backup_dtype=%d sync=%d ssp_bound=%d ssp_policy=%d "
      "max_staleness=%d shard=%d/%d",
      static_cast<int>(o.rule), o.learning_rate, o.lambda0, o.ms_decay, o.epsilon, o.momentum,
      o.weight_decay, o.staleness_aware, o.gap_aware, o.gap_decay, static_cast<int>(o.schedule),
      o.decay_factor, o.decay_every, o.max_gradient_abs, o.max_weight_abs,
      static_cast<int>(o.backup_dtype), static_cast<int>(c.sync), c.ssp_bound,
      static_cast<int>(c.ssp_policy), c.max_staleness, c.shard_index, c.shard_count);
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof(digest));
}

}  // namespace dcasgd
