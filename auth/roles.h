#ifndef DCASGD_AUTH_ROLES_H_
#define DCASGD_AUTH_ROLES_H_

#include "base/enum_names.h"

namespace dcasgd {
namespace auth {

// What an authenticated caller may do (docs/security.md, "Roles"). Each role
// includes the one before it.
enum class Role {
  // Reads the model without a backup (Pull with worker id 0) and the status
  // of the shards and of the job: the evaluator, exporters, dashboards.
  kReader,
  // Trains: declares, joins, pulls with a backup, pushes, renews its leases,
  // leases data from the coordinator.
  kWorker,
  // Everything, including Checkpoint on demand.
  kAdmin,
};
inline constexpr EnumName<Role> kRoleNames[] = {
    {Role::kReader, "reader"},
    {Role::kWorker, "worker"},
    {Role::kAdmin, "admin"},
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
};

// The least role allowed to do `action`.
Role RequiredRole(Action action);

// True when `role` may do `action`.
inline bool RoleAllows(Role role, Action action) {
  return static_cast<int>(role) >= static_cast<int>(RequiredRole(action));
}

// The action as the user knows it ("Pull with worker_id 0", "Checkpoint").
const char* ActionName(Action action);

}  // namespace auth
}  // namespace dcasgd

#endif  // DCASGD_AUTH_ROLES_H_
