#ifndef DCASGD_SERVICES_PS_REPLICATION_OPTIONS_H_
#define DCASGD_SERVICES_PS_REPLICATION_OPTIONS_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "auth/tls.h"
#include "core/shard_store.h"
#include "dcasgd/v1/replication.pb.h"

namespace dcasgd {

// How a shard takes part in a replicated pair (docs/design.md, "Replicated
// shards", "Configuration"). Parsed and checked by ParsePsOptions
// (ps_options.h): with `replicas` 2, `member`, `peer_address` and
// `witness_address` are set and failover_timeout >= lease + 500 ms.
struct ReplicationOptions {
  // 1: a shard alone, exactly as without replication; 2: a member of a pair.
  uint32_t replicas = 1;
  v1::Member member = v1::MEMBER_UNSPECIFIED;
  // The other member's and the witness's host:port.
  std::string peer_address;
  std::string witness_address;
  // The primary sends a heartbeat after this long without anything else.
  absl::Duration heartbeat = absl::Milliseconds(250);
  // The primary accepts changes only within this long of sending something
  // its replica acknowledged (measured on its own clock).
  absl::Duration lease = absl::Seconds(2);
  // Silence after which the replica claims the primary role and the primary
  // drops its replica.
  absl::Duration failover_timeout = absl::Seconds(3);
  // Log held for the replica on the primary (queued or sent, not yet
  // acknowledged); beyond it the replica is dropped (it catches up afresh).
  uint64_t buffer_bytes = uint64_t{256} << 20;
  // The member's outgoing calls (to its peer and the witness): CA, token.
  auth::ClientSecurity peer_security;

  bool enabled() const { return replicas == 2; }
};

// "a" or "b".
const char* MemberName(v1::Member member);
// The role name clients see in dcasgd-role and ShardStatus.replication_role.
const char* RoleName(v1::ReplicationRole role);
// SHA-256 of the configuration that decides the values (rule and
// hyper-parameters, bounds, sync mode, max_staleness, backup dtype, shard
// index and count): ReplicaHello.config_fingerprint.
std::string ConfigFingerprint(const ShardConfig& config);

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_PS_REPLICATION_OPTIONS_H_
