#ifndef DCASGD_CORE_WORKER_REGISTRY_H_
#define DCASGD_CORE_WORKER_REGISTRY_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/clock.h"
#include "base/random.h"
#include "core/push.h"

namespace dcasgd {

// Whether a worker's lease lives. Shared (shared_ptr) between the registry's
// record of the worker and the pulls and pushes of that worker, which check it
// under a chunk's lock before writing a backup. The registry clears it when
// the lease ends, before the store frees the worker's backups (taking every
// chunk's lock afterwards), so a backup written after that is impossible and
// one written before is freed.
struct WorkerLiveness {
  WorkerLiveness() = default;
  explicit WorkerLiveness(uint32_t depth) : pipeline_depth(depth) {}
  // The worker's JoinRequest.pipeline_depth: it keeps depth + 1 backups per
  // chunk. Constant for the lease.
  const uint32_t pipeline_depth = 0;
  // Atomic: read under chunk locks by any thread, written once under the
  // registry's lock; the chunk locks order the write before the store's
  // freeing visit.
  std::atomic<bool> live{true};
};

struct JoinResult {
  WorkerId worker_id = 0;
  // The worker's session (base/secret.h, kSecretBytes): the secret that
  // proves a later request comes from the client that joined. Never logged.
  std::string session;
  absl::Duration lease;
};

// A push step already seen (see ClaimStep).
struct StepClaim {
  // kApply: apply the push (a new step, or an unknown worker, whose push
  // validation then refuses). kReplay: the step was applied before; answer
  // with `version` and `staleness` and apply nothing.
  enum class Outcome { kApply, kReplay };
  Outcome outcome = Outcome::kApply;
  uint64_t version = 0;
  uint64_t staleness = 0;
};

// One live worker as the registry holds it, without its lease deadline (not
// replicated: a member that loads records gives each a full lease). What a
// replica's worker table must equal, bit for bit (docs/design.md,
// "Replicated shards").
struct WorkerRecord {
  // The weights a worker was sent: by the reply to push `step`, or (0) by its
  // last pull or its join, at shard version `version`.
  struct Base {
    uint64_t step = 0;
    uint64_t version = 0;
    bool operator==(const Base& o) const { return step == o.step && version == o.version; }
  };
  WorkerId worker_id = 0;
  std::string worker_name;
  std::string session;  // a secret: never logged
  uint32_t pipeline_depth = 0;
  std::vector<Base> bases;  // oldest first; the last is the pull version
  uint64_t ssp_clock = 0;
  // The last push step applied and what it was answered (0: none).
  uint64_t last_step = 0;
  uint64_t last_step_version = 0;
  uint64_t last_step_staleness = 0;

  bool operator==(const WorkerRecord& o) const {
    return worker_id == o.worker_id && worker_name == o.worker_name && session == o.session &&
           pipeline_depth == o.pipeline_depth && bases == o.bases && ssp_clock == o.ssp_clock &&
           last_step == o.last_step && last_step_version == o.last_step_version &&
           last_step_staleness == o.last_step_staleness;
  }
};

// The workers of one shard: joins, leases, pull versions (for staleness), SSP
// clocks and the last push step of each (for deduplicating retries). Holds no
// tensors: freeing a departed worker's backups is the caller's job, with the
// ids that Join, Leave and ExpireLeases report.
//
// Sessions: every Join draws a fresh secret session from the kernel's CSPRNG
// (never from `random`, which tests script) and keeps it with the worker;
// Authenticate checks it. A replacing Join ends the old worker and so its
// session. Sessions live only in memory: a restarted shard knows no worker,
// and its workers join again (FAILED_PRECONDITION tells them to).
//
// Thread-safe. Every call takes only the registry's own mutex, a leaf lock:
// callers may hold the store's and the sync policy's locks while calling.
class WorkerRegistry {
 public:
  // `clock` and `random` must outlive the registry. Leases last `lease`; at
  // most `max_workers` live workers. `shard_index` names the shard in errors.
  WorkerRegistry(absl::Duration lease, uint32_t max_workers, uint32_t shard_index, Clock* clock,
                 RandomSource* random);
  ~WorkerRegistry();
  WorkerRegistry(const WorkerRegistry&) = delete;
  WorkerRegistry& operator=(const WorkerRegistry&) = delete;

  // Registers `name` with a fresh lease and `version` as its pull version
  // (the base of step 0), keeping the versions of its last
  // `pipeline_depth` + 1 bases (see BaseVersion).
  // Replaces a live worker of the same name. Ids are random, non-zero and
  // unique among live workers, so an id handed out before a restart of the
  // shard is (with overwhelming probability) never handed out again to
  // another worker after it. A newcomer's SSP clock is the slowest live one.
  // INVALID_ARGUMENT for an empty name or a depth above kMaxPipelineDepth;
  // RESOURCE_EXHAUSTED when max_workers other workers hold live leases
  // (expired ones are ended to make room). Appends to `ended` the workers
  // whose leases this ended.
  absl::StatusOr<JoinResult> Join(const std::string& name, uint64_t version,
                                  std::vector<WorkerId>* ended, uint32_t pipeline_depth = 0);
  // The backups beyond one per worker that live workers other than `except`
  // (a name; a replacing Join ends that one) keep: the sum of their
  // pipeline depths. A term of the sizing rule.
  uint64_t ExtraBackups(absl::string_view except = {}) const;
  // Whether a request that names `worker` comes from the client that joined
  // as it: OK when the worker holds a live lease and `session` is the session
  // its Join returned (compared in constant time). FAILED_PRECONDITION when
  // the worker is unknown or its lease expired (Join again, as before);
  // UNAUTHENTICATED when the session is missing or wrong. Messages name the
  // worker id, never a session. Changes nothing.
  absl::Status Authenticate(WorkerId worker, absl::string_view session) const;
  // Renews the lease. FAILED_PRECONDITION when the worker is unknown or its
  // lease expired.
  absl::Status Heartbeat(WorkerId worker);
  // Ends the lease. FAILED_PRECONDITION when the worker is unknown.
  absl::Status Leave(WorkerId worker);
  // Gives every worker in the table a full lease from now, expired or not: a
  // replica promoted to primary (lease deadlines are not replicated, and its
  // workers heartbeated the old primary only).
  void RenewAll();
  // Ends every lease past its deadline; returns those workers.
  std::vector<WorkerId> ExpireLeases();

  // OK when `worker` holds a live lease (then `*pull_version`, if given, is
  // its pull version); FAILED_PRECONDITION otherwise.
  absl::Status Check(WorkerId worker, uint64_t* pull_version = nullptr) const;
  // The liveness of the worker's lease; null when the worker is unknown.
  std::shared_ptr<WorkerLiveness> Liveness(WorkerId worker) const;
  // The worker's pull version (of its newest base); 0 when it is unknown.
  uint64_t PullVersion(WorkerId worker) const;
  // The version of the weights the worker's base `base_step` carried (the
  // reply to that push step, or 0: its last pull), for staleness. A worker
  // of pipeline depth 0 keeps one base, which 0 or its own step names.
  // FAILED_PRECONDITION when the worker is unknown or expired, or when the
  // base is not among its last depth + 1.
  absl::StatusOr<uint64_t> BaseVersion(WorkerId worker, uint64_t base_step) const;
  // Records `version` as the worker's pull version: its base of step 0.
  // False (nothing recorded) when the worker is unknown.
  bool RecordPull(WorkerId worker, uint64_t version);
  // A repeated push `step` was answered with the weights its first reply
  // sent (ShardStore::Replay): that base, if the worker still keeps it,
  // becomes its newest again, as the worker computes on it now (a pull since
  // had made base 0 the newest). A worker of depth 0 keeps one base: no
  // change. False (nothing recorded) when the worker is unknown.
  bool RenewBase(WorkerId worker, uint64_t step);
  // A push of the worker was applied as `version`: its SSP clock advances and,
  // when the reply carried the new weights (`pulled`), they are its pull and
  // its base of `step`.
  void RecordApplied(WorkerId worker, uint64_t version, bool pulled, uint64_t step = 0);

  uint32_t size() const;
  // SSP: the clock (pushes applied) of every live worker.
  absl::flat_hash_map<WorkerId, uint64_t> Clocks() const;
  // SSGD: whether `pushed` holds for every live worker (true when none).
  bool All(absl::FunctionRef<bool(WorkerId)> pushed) const;

  // Push deduplication. A step newer than the last applied one is claimed
  // (kApply) unless an earlier step is still being applied (UNAVAILABLE:
  // steps arrive in order, retry). The step being applied now is UNAVAILABLE
  // (retry for its result); an older step is ALREADY_EXISTS; the last applied
  // step again is kReplay with its recorded version and staleness. An
  // unknown or expired worker gets kApply (validation refuses the push with
  // the full message). Step 0 must not be claimed.
  absl::StatusOr<StepClaim> ClaimStep(WorkerId worker, uint64_t step);
  // Releases a claimed step; records it as applied with `version` and
  // `staleness` when `applied` (a rejected push may be retried).
  void FinishStep(WorkerId worker, uint64_t step, bool applied, uint64_t version,
                  uint64_t staleness);
  // Records push `step` (0: none) of the worker as applied with `version`
  // and `staleness`, as FinishStep does for an applied push, but leaves the
  // step in flight alone: the store records it when it orders the push, so
  // that the record is part of the replicated worker table.
  void RecordStep(WorkerId worker, uint64_t step, uint64_t version, uint64_t staleness);

  // Replication (ShardStore::ApplyEntry, replication snapshots): the worker
  // table without lease deadlines.
  //
  // Ends the leases of `workers` (their liveness cleared), all or nothing:
  // FAILED_PRECONDITION naming the first unknown one, nothing ended.
  absl::Status End(const std::vector<WorkerId>& workers);
  // A Join decided elsewhere: ends `ended` and then registers `record` with a
  // fresh lease and, as Join does, the slowest live SSP clock (its
  // ssp_clock is ignored). All or nothing: FAILED_PRECONDITION when a worker
  // of `ended` is unknown or the id is 0 or taken by a worker not ended.
  absl::Status Admit(const WorkerRecord& record, const std::vector<WorkerId>& ended);
  // Every live worker, by id.
  std::vector<WorkerRecord> Records() const;
  // Replaces an empty table with `records`, each with a fresh lease.
  // FAILED_PRECONDITION when the table is not empty or an id repeats or is 0.
  absl::Status Load(const std::vector<WorkerRecord>& records);

 private:
  struct Worker;

  using WorkerMap = absl::flat_hash_map<WorkerId, std::unique_ptr<Worker>>;
  // Ends the lease of the worker `it` points at (clears its liveness, erases
  // it) and appends it to `ended`. Callers advance with `it++`.
  static void EndLease(WorkerMap& workers, WorkerMap::iterator it, std::vector<WorkerId>* ended);

  const absl::Duration lease_;
  const uint32_t max_workers_;
  const uint32_t shard_index_;
  Clock* const clock_;
  RandomSource* const random_;

  mutable absl::Mutex mu_;
  WorkerMap workers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dcasgd

#endif  // DCASGD_CORE_WORKER_REGISTRY_H_
