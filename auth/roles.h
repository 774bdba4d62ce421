#ifndef DCASGD_AUTH_ROLES_H_
#define DCASGD_AUTH_ROLES_H_

#include "base/enum_names.h"

namespace dcasgd {
namespace auth {

// What an authenticated caller may do (docs/security.md, "Roles"). Reader,
// worker and admin form a chain: each includes the one before it. Replication
// stands outside the chain: it may call only what the members of a replicated
// shard say to each other and to the witness, and admin includes it.
enum class Role {
  // Reads the model without a backup (Pull with worker id 0) and the status
  // of the shards and of the job: the evaluator, exporters, dashboards.
  kReader,
  // Trains: declares, joins, pulls with a backup, pushes, renews its leases,
  // leases data from the coordinator.
  kWorker,
  // Everything, including Checkpoint on demand and the witness's Force.
  kAdmin,
  // A member of a replicated shard: the replication stream and the witness's
  // Claim, SetPaired and GetRegister, nothing else. As sensitive as admin
  // (the stream carries every worker's session and the whole model).
  kReplication,
};
inline constexpr EnumName<Role> kRoleNames[] = {
    {Role::kReader, "reader"},
    {Role::kWorker, "worker"},
    {Role::kAdmin, "admin"},
    {Role::kReplication, "replication"},
};

// What one RPC asks to do. Pull is two actions: with worker id 0 it reads
// (no backup is written), with a worker id it acts as that worker.
enum class Action {
  kDeclareTensors,
  kJoin,
  kHeartbeat,
  kLeave,
  kPullReadOnly,
  kPullAsWorker,
  kPush,
  kPushPull,
  kGetStatus,
  kCheckpoint,
  kAcquireDataShard,
  kRenewDataLease,
  kCompleteDataShard,
  kGetJobStatus,
  // dcasgd.v1.ShardReplication and dcasgd.v1.Witness (replication.proto).
  kReplicate,
  kWitnessClaim,
  kWitnessSetPaired,
  kWitnessGetRegister,
  kWitnessForce,
};

// The role `action` needs: the least of the chain, or replication (which
// admin includes too).
Role RequiredRole(Action action);

// True when `role` may do `action`: admin may do everything, replication
// only the actions that need replication, reader and worker what the chain
// gives them (never a replication action).
bool RoleAllows(Role role, Action action);

// The action as the user knows it ("Pull with worker_id 0", "Checkpoint").
const char* ActionName(Action action);

}  // namespace auth
}  // namespace dcasgd

#endif  // DCASGD_AUTH_ROLES_H_
