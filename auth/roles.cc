#include "auth/roles.h"

namespace dcasgd {
namespace auth {

Role RequiredRole(Action action) {
  switch (action) {
    case Action::kPullReadOnly:
    case Action::kGetStatus:
    case Action::kGetJobStatus:
      return Role::kReader;
    case Action::kDeclareTensors:
    case Action::kJoin:
    case Action::kHeartbeat:
    case Action::kLeave:
    case Action::kPullAsWorker:
    case Action::kPush:
    case Action::kPushPull:
    case Action::kAcquireDataShard:
    case Action::kRenewDataLease:
    case Action::kCompleteDataShard:
      return Role::kWorker;
    case Action::kCheckpoint:
    case Action::kWitnessForce:
      return Role::kAdmin;
    case Action::kReplicate:
    case Action::kWitnessClaim:
    case Action::kWitnessSetPaired:
    case Action::kWitnessGetRegister:
      return Role::kReplication;
  }
  return Role::kAdmin;  // unreachable: every action is listed above
}

bool RoleAllows(Role role, Action action) {
  const Role needed = RequiredRole(action);
  if (role == Role::kAdmin) return true;
  // Outside the chain: replication does its own actions only, and the chain
  // below admin none of them.
  if (role == Role::kReplication || needed == Role::kReplication) return role == needed;
  return static_cast<int>(role) >= static_cast<int>(needed);
}

const char* ActionName(Action action) {
  switch (action) {
    case Action::kDeclareTensors:
      return "DeclareTensors";
    case Action::kJoin:
      return "Join";
    case Action::kHeartbeat:
      return "Heartbeat";
    case Action::kLeave:
      return "Leave";
    case Action::kPullReadOnly:
      return "Pull with worker_id 0";
    case Action::kPullAsWorker:
      return "Pull with a worker_id (writes a backup)";
    case Action::kPush:
      return "Push";
    case Action::kPushPull:
      return "PushPull";
    case Action::kGetStatus:
      return "GetStatus";
    case Action::kCheckpoint:
      return "Checkpoint";
    case Action::kAcquireDataShard:
      return "AcquireDataShard";
    case Action::kRenewDataLease:
      return "RenewDataLease";
    case Action::kCompleteDataShard:
      return "CompleteDataShard";
    case Action::kGetJobStatus:
      return "GetJobStatus";
    case Action::kReplicate:
      return "Replicate";
    case Action::kWitnessClaim:
      return "Claim (witness)";
    case Action::kWitnessSetPaired:
      return "SetPaired (witness)";
    case Action::kWitnessGetRegister:
      return "GetRegister (witness)";
    case Action::kWitnessForce:
      return "Force (witness)";
  }
  return "?";
}

}  // namespace auth
}  // namespace dcasgd
