#ifndef DCASGD_CORE_SYNC_POLICY_H_
#define DCASGD_CORE_SYNC_POLICY_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "base/enum_names.h"
#include "core/push.h"
#include "core/worker_registry.h"

namespace dcasgd {

// How pushes of different workers are ordered.
enum class SyncMode {
  kAsync,  // apply each push at once (ASGD / DC-ASGD)
  kSsgd,   // average one push of every active worker, apply once per round
  kSsp,    // async, but a worker may be at most `ssp_bound` pushes ahead of
           // the slowest active worker (Ho et al. 2013)
};
enum class SspPolicy { kWait, kReject };

// Names in flags and messages (base/enum_names.h); "bsp" is an alias of ssgd.
inline constexpr EnumName<SyncMode> kSyncModeNames[] = {
    {SyncMode::kAsync, "async"},
    {SyncMode::kSsgd, "ssgd"},
    {SyncMode::kSsp, "ssp"},
    {SyncMode::kSsgd, "bsp"},
};
inline constexpr EnumName<SspPolicy> kSspPolicyNames[] = {
    {SspPolicy::kWait, "wait"},
    {SspPolicy::kReject, "reject"},
};

struct SyncConfig {
  SyncMode mode = SyncMode::kAsync;
  uint32_t ssp_bound = 0;
  SspPolicy ssp_policy = SspPolicy::kWait;
  // Async mode: a push whose staleness exceeds this is ABORTED (< 0: off).
  int64_t max_staleness = -1;
};

// A validated push in the policy's hands. The store derives its own type
// (with the chunks to update); the policy sees only the worker and `done`.
struct HeldPush {
  HeldPush() = default;
  HeldPush(HeldPush&&) = default;
  HeldPush& operator=(HeldPush&&) = default;
  virtual ~HeldPush() = default;
  WorkerId worker = 0;
  // The weights the gradient was computed on (ps.proto PushRequest.base_step):
  // the max_staleness check counts from them.
  uint64_t base_step = 0;
  PushDone done;  // run exactly once, by the policy, never under its lock
};

// When validated pushes are applied: at once (async, after the max_staleness
// admission check), when the SSP bound admits them, or as one SSGD round once
// every live worker has pushed. At most one push per worker waits (what the
// sizing rule's waiting term counts, core/shard_memory.h). The applying is
// the Applier's (the store's); worker clocks and membership come from the
// registry.
//
// Thread-safe. Lock order: the policy's mutex, then the store's locks, then
// the registry's. `done` callbacks run without the policy's lock, on the
// submitting thread or on the thread whose push or membership change
// released the waiting push.
class SyncPolicy {
 public:
  class Applier {
   public:
    virtual ~Applier() = default;
    // Applies `push` alone as one version (async and SSP); no policy lock is
    // held.
    virtual PushResult Apply(HeldPush& push) = 0;
    // Applies an SSGD round (one push of every live worker) as one version;
    // one result per push, in order. Called with the policy's lock held (a
    // round is one cut: no other round forms meanwhile).
    virtual std::vector<PushResult> ApplyRound(std::vector<std::unique_ptr<HeldPush>>& round) = 0;
  };

  // `registry` and `applier` must outlive the policy.
  SyncPolicy(SyncConfig config, const WorkerRegistry* registry, Applier* applier);
  ~SyncPolicy();
  SyncPolicy(const SyncPolicy&) = delete;
  SyncPolicy& operator=(const SyncPolicy&) = delete;

  const SyncConfig& config() const { return config_; }

  // Whether pushes wait (SSP, SSGD) rather than apply at once (async).
  bool holds_pushes() const { return config_.mode != SyncMode::kAsync; }
  // Async: applies a validated push at once, unless it is more than
  // max_staleness versions behind `version` (the shard's now): ABORTED. The
  // push stays the caller's (no allocation per push); the outcome goes to
  // `push.done` before this returns.
  void ApplyNow(HeldPush& push, uint64_t version);
  // SSP / SSGD: holds a validated push until Release() lets it go;
  // FAILED_PRECONDITION when the worker already has a push waiting. Every
  // outcome goes to `push->done`.
  void Hold(std::unique_ptr<HeldPush> push);
  // Applies what may now go: the SSP waiters the bound admits (ABORTED for
  // those beyond it under SspPolicy::kReject; FAILED_PRECONDITION for those
  // whose worker left), or the SSGD round once every live worker pushed.
  // Called after every push and membership change.
  void Release();
  // Fails every waiting push with UNAVAILABLE (shutdown).
  void CancelWaiting();

 private:
  void ReleaseSsp();
  void MaybeCompleteRound();

  const SyncConfig config_;
  const WorkerRegistry* const registry_;
  Applier* const applier_;

  absl::Mutex mu_;
  std::vector<std::unique_ptr<HeldPush>> waiting_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dcasgd

#endif  // DCASGD_CORE_SYNC_POLICY_H_
