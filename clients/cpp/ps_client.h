#ifndef DCASGD_CLIENTS_CPP_PS_CLIENT_H_
#define DCASGD_CLIENTS_CPP_PS_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "clients/cpp/chunk_plan.h"
#include "core/dtype.h"
#include "core/push.h"
#include "core/tensor.h"

namespace dcasgd {
namespace client {
class ShardSession;  // shard_session.h
}  // namespace client
namespace auth {
class ClientCredentials;  // auth/tls.h
}  // namespace auth

// Values of named tensors as flat float32 vectors (row-major, prod(shape)
// elements), keyed by tensor name.
using TensorMap = absl::flat_hash_map<std::string, std::vector<float>>;

struct ClientOptions {
  // One address per shard, in shard-index order ("host:port"). Required.
  std::vector<std::string> shard_addresses;
  // Replicated shards (docs/design.md, "Replicated shards"): empty, or one
  // entry per shard, the address of its second member ("" for a shard that
  // has one). The client keeps a channel to both members and moves to the
  // other one when a call to the current one fails transiently (a member
  // that is not the primary answers UNAVAILABLE), without re-joining.
  std::vector<std::string> replica_addresses;
  // Stable identity of the worker (e.g. the pod name). Empty: an evaluator,
  // which never joins, pulls with worker id 0 and cannot push.
  std::string worker_name;
  // Deadline of each RPC attempt (a whole stream counts as one attempt).
  absl::Duration rpc_timeout = absl::Seconds(60);
  // Attempts per RPC when a shard answers UNAVAILABLE, or the call ends
  // CANCELLED or DEADLINE_EXCEEDED (a shard restarting or hung) (>= 1).
  int max_attempts = 8;
  // Exponential backoff with jitter between those attempts. The cap is low so
  // that a restarted shard is used within about a second of coming back
  // (the channels reconnect at least that often, clients/cpp/channel_args.h).
  absl::Duration initial_backoff = absl::Milliseconds(50);
  absl::Duration max_backoff = absl::Seconds(1);
  // A member of a replicated shard that refuses a call naming its role (it
  // is not the primary: a failover is in progress) sends the call to the
  // other member at once, and for this long from the first such refusal
  // the attempts do not count against max_attempts (about ten failover
  // timeouts of the shards' default, docs/operations.md).
  absl::Duration failover_wait = absl::Seconds(30);
  // Renew the leases in a background thread every lease/3. Off only in tests
  // that let a lease expire.
  bool heartbeats = true;
  // Largest message sent or received (>= 2 MiB); chunks are 256 KiB by
  // default, and the Exchange stream sends up to 1 MiB of them per message.
  int max_message_bytes = 64 << 20;
  // Pushes over one long-lived Exchange stream per shard (round_stream.h).
  // false: one Push/PushPull call per push and shard, as before the stream
  // existed (for servers behind proxies that cut long-lived streams, and the
  // baseline of bench/pushpull_bench.cc); asynchronous pushes then send at
  // Wait.
  bool push_stream = true;
  // What gradients travel as and weights come back in (ps.proto Dtype):
  // float32, or bfloat16 / float16 for half the bytes. Weights arrive rounded
  // to nearest even and are handed out as float32 (exact widening); the
  // shard decodes gradients to float32 before applying them. float16 holds
  // |x| <= 65504 only: a gradient element beyond that becomes Inf and the
  // push is rejected (INVALID_ARGUMENT, non-finite).
  Dtype wire_dtype = Dtype::kFloat32;
  // How many pushes ahead of its weights this worker computes (ps.proto
  // JoinRequest.pipeline_depth, 0 to kMaxPipelineDepth): the shards keep
  // that many more backups of it, so that a push may name as its base
  // (`base_step` of Push/PushPull) any of its last depth + 1 replies or its
  // last pull. 0: one backup, as before.
  uint32_t pipeline_depth = 0;
  // TLS and the bearer token (auth/tls.h ClientCredentials::Load); null:
  // plaintext without a token.
  std::shared_ptr<const auth::ClientCredentials> credentials;
};

// What a Push or PushPull did on the shards it touched.
struct PushStats {
  // The push's step (ps.proto PushRequest.step).
  uint64_t step = 0;
  // Per shard index: the shard version after this push was applied, or 0 for
  // shards that own none of the pushed chunks.
  std::vector<uint64_t> versions;
  // Staleness (versions applied between this worker's pull and this push)
  // over the shards touched, as each shard reported it.
  uint64_t max_staleness = 0;
  double mean_staleness = 0;
  uint32_t shards_touched = 0;
  // Where the time went, the longest over the shards touched: streaming the
  // gradient up to the half-close; then waiting for the shard (validation and
  // update; for Push, until its answer); then (PushPull) streaming the new
  // values down.
  absl::Duration send_time;
  absl::Duration wait_time;
  absl::Duration receive_time;
};

// What one shard reports about itself (ps.proto ShardStatus).
struct ShardStatus {
  uint32_t shard_index = 0;
  uint32_t shard_count = 0;
  uint64_t version = 0;
  uint32_t active_workers = 0;
  uint64_t weight_bytes = 0;
  uint64_t backup_bytes = 0;
  uint64_t optimizer_state_bytes = 0;  // mean-square and momentum vectors
  std::string update_rule;             // the rule and its hyper-parameters, readable
  std::string rule;                    // the --update_rule name: "asgd", "dcasgd-c", "dcasgd-a"
  std::string sync;                    // the --sync name: "async", "ssgd", "ssp"
  // Version of the last checkpoint written or restored (0: none).
  uint64_t checkpoint_version = 0;
  // The declared tensors (as chunked by the shards) and how many chunks of
  // each this shard owns.
  struct Tensor {
    TensorLayout layout;
    uint64_t owned_chunks = 0;
  };
  std::vector<Tensor> tensors;
};

// A push started by PushAsync or PushPullAsync, finished by Wait. Tickets
// are numbered from 1 in the order the pushes started.
using PushTicket = uint64_t;

// A checkpoint one shard wrote on request (ps.proto CheckpointResponse).
struct CheckpointResult {
  std::string path;
  uint64_t version = 0;
  uint64_t bytes = 0;
};

// A client of the N parameter shards of one job: a facade over one session
// per shard (shard_session.h: channel, worker id, join and re-join,
// heartbeat, call policy) and chunk streaming (chunk_stream.h), which fans
// each call out to the shards that own its chunks.
//
// Placement: chunk i of tensor T goes to ShardOfChunk(T, i, N) (core/
// placement.h); calls touch only the shards that own chunks of the tensors
// involved, all of them in parallel. Pushes travel over one long-lived
// Exchange stream per shard (round_stream.h), reused from push to push and
// opened again after it broke, with no thread of their own; pulls and the
// unary calls run one thread per extra shard and one stream per call.
//
// Asynchronous pushes (ps-lite's ticket and Wait): PushAsync/PushPullAsync
// send the push to every shard and return a ticket at once; Wait(ticket)
// blocks until it was answered, retrying as the synchronous calls do. A
// worker can compute its next gradient meanwhile. Pushes finish in the order
// they started (Wait finishes every earlier ticket first), so steps reach
// each shard in order even when a retry is needed.
//
// Errors (absl codes, message prefixed with the shard and its address):
//   - UNAVAILABLE, CANCELLED and DEADLINE_EXCEEDED (a shard restarting,
//     shutting down or hung) are retried with exponential backoff and jitter,
//     at most max_attempts times per shard and call; then returned. Pushes
//     are retried with the same step, so a shard that applied a push whose
//     answer was lost answers again without applying it twice.
//   - FAILED_PRECONDITION from a shard (lease lost, unknown worker, no backup)
//     makes the client re-join that shard and return FAILED_PRECONDITION
//     ending in "re-joined; pull again": the caller pulls and recomputes.
//   - UNAUTHENTICATED (the shard refused this worker's session) is returned
//     as it is, not retried: the client sends the session each shard's Join
//     gave it with every call that acts as the worker, so only a bug or
//     another client's request meets it.
//   - Other codes are returned as the shard sent them (see ps.proto).
//   A push is applied shard by shard: when one shard fails, others may
//   already have applied their part (each shard is an independent update).
//   To push the same batch again after an error, pass the failed push's step
//   (PushStats::step, or one reserved with NextStep()): shards that applied
//   it answer with their recorded result, the others apply the new push.
//
// Thread-safe: calls may come from several threads; each synchronous call
// blocks until every shard it touched has answered. Pushes of one client
// are started and finished in step order.
class PsClient {
 public:
  // Opens one channel per shard. A worker (non-empty worker_name) joins every
  // shard, checks that each reports the index and count it has in the
  // options, and starts the heartbeat thread. INVALID_ARGUMENT for bad
  // options; FAILED_PRECONDITION when a shard reports another index or count;
  // UNAVAILABLE when a shard stays unreachable through all attempts.
  static absl::StatusOr<std::unique_ptr<PsClient>> Connect(ClientOptions options);

  // Leaves the shards if still joined (one attempt each, errors ignored).
  ~PsClient();

  PsClient(const PsClient&) = delete;
  PsClient& operator=(const PsClient&) = delete;

  // Declares `specs` on every shard (idempotent) and remembers their layout.
  // Errors as DeclareTensors: INVALID_ARGUMENT, ALREADY_EXISTS.
  absl::Status Declare(const std::vector<TensorSpec>& specs);

  // Learns the layout of every declared tensor from GetStatus of every shard
  // (for clients that did not declare, e.g. evaluators).
  absl::Status FetchSpecs();

  // Pulls the current values of `names` (empty: every known tensor) into
  // `out`, resizing out[name] to the tensor's element count; other entries of
  // `out` are left alone. Unknown names trigger one FetchSpecs; still unknown
  // is NOT_FOUND. A worker's pull records its backup on the shards. On
  // FAILED_PRECONDITION the shard is re-joined and the pull retried once.
  absl::Status Pull(const std::vector<std::string>& names, TensorMap* out);

  // Reserves the next push step. Pass it to Push/PushPull (and again when
  // the push fails, to push the batch again without applying it twice); use
  // reserved steps in the order they were reserved, before any later push.
  uint64_t NextStep();

  // Pushes full gradients of the tensors in `gradients`. Before anything is
  // sent: NOT_FOUND for an unknown tensor, INVALID_ARGUMENT naming the tensor
  // and the expected length when a size is wrong, FAILED_PRECONDITION for an
  // evaluator. `stats` may be null. `step` 0 takes the next step; the step
  // used is stats->step, also after an error. `base_step` names the weights
  // the gradients were computed on (ps.proto PushRequest.base_step): the
  // step of the PushPull whose reply carried them, or 0 the last Pull (with
  // pipeline_depth 0: the last weights received, as before); a base a shard
  // does not keep is FAILED_PRECONDITION (re-joined: pull again). Both push
  // paths (push_stream true or false) send it.
  absl::Status Push(const TensorMap& gradients, PushStats* stats = nullptr, uint64_t step = 0,
                    uint64_t base_step = 0);

  // Push and pull of the same tensors in one stream per shard: on success
  // (*weights)[name] holds the updated values of each pushed tensor (which
  // the shards keep as this worker's backup). Errors and `step` as Push; on
  // error `weights` may hold partial values.
  absl::Status PushPull(const TensorMap& gradients, TensorMap* weights, PushStats* stats = nullptr,
                        uint64_t step = 0, uint64_t base_step = 0);

  // Starts Push / PushPull and returns at once; the result is Wait's.
  // `gradients`, `weights` and `stats` (may be null) must stay alive and
  // `gradients` unchanged until Wait(ticket) returned; `weights` is written
  // until then. Errors found before sending (unknown tensor, wrong size, an
  // evaluator) are also Wait's. Every ticket must be waited for exactly once
  // (the destructor finishes the ones left).
  PushTicket PushAsync(const TensorMap& gradients, PushStats* stats = nullptr, uint64_t step = 0,
                       uint64_t base_step = 0);
  PushTicket PushPullAsync(const TensorMap& gradients, TensorMap* weights,
                           PushStats* stats = nullptr, uint64_t step = 0, uint64_t base_step = 0);

  // Blocks until the push of `ticket`, and every push started before it, was
  // answered (with the retries and re-joins of the synchronous calls); its
  // status, as Push/PushPull would return it. NOT_FOUND for a ticket never
  // issued or already waited for.
  absl::Status Wait(PushTicket ticket);

  // Gives up on the push of `ticket`: it is not retried any more, and a
  // round of it still in flight is cancelled (with the stream it travels on;
  // other pushes on that stream are sent again, as after any broken stream).
  // Its Wait then returns CANCELLED, unless it had already finished. The
  // shards may or may not have applied it: to make sure a cancelled batch is
  // applied exactly once, push it again with its step (PushStats::step).
  // Returns at once; NOT_FOUND for a ticket that is not outstanding.
  absl::Status Cancel(PushTicket ticket);

  // GetStatus of every shard, in shard order. INVALID_ARGUMENT when a shard
  // reports a layout that cannot be (a dimension < 1, no chunk size).
  absl::StatusOr<std::vector<ShardStatus>> GetStatus();

  // Makes every shard write a checkpoint now; their answers in shard order.
  // FAILED_PRECONDITION when checkpoints are off.
  absl::StatusOr<std::vector<CheckpointResult>> Checkpoint();

  // Stops the heartbeats and ends the leases on every shard (a shard that no
  // longer knows this worker, e.g. after a restart, counts as done). Later
  // pushes are FAILED_PRECONDITION; pulls are made as an evaluator.
  // Idempotent.
  absl::Status Leave();

  uint32_t shard_count() const { return static_cast<uint32_t>(shards_.size()); }
  bool is_worker() const { return !options_.worker_name.empty(); }

  // This client's worker id on shard `shard` (0 for an evaluator or after
  // Leave); changes when the shard is re-joined. For tests and logs.
  uint64_t worker_id(uint32_t shard) const;

 private:
  explicit PsClient(ClientOptions options);

  // Runs fn(s) for each listed shard, in parallel; the first error in shard
  // order (a re-joined shard's FAILED_PRECONDITION first), or OK.
  template <typename Fn>
  absl::Status ForEachShard(const std::vector<uint32_t>& shards, Fn fn);
  std::vector<uint32_t> AllShards() const;
  // Makes `call` (a unary ParameterShard method, see ps_client.cc) on every
  // shard in parallel with the read retry policy; the answers in shard order.
  template <typename Response, typename Call>
  absl::StatusOr<std::vector<Response>> UnaryOnEveryShard(Call call);

  void HeartbeatLoop();
  void StopHeartbeats();
  absl::Status LeaveShards(int max_attempts);

  // The layouts of `names`, in that order. NOT_FOUND for unknown names.
  absl::StatusOr<std::vector<TensorLayout>> Layouts(const std::vector<std::string>& names) const;
  void RememberLayouts(const std::vector<TensorLayout>& layouts);
  // Validates `gradients` against the layouts; their layouts and values in
  // the same order.
  absl::Status PrepareGradients(const TensorMap& gradients, std::vector<TensorLayout>* layouts,
                                std::vector<const float*>* sources) const;
  // ps_client_push.cc: one push from its start to its answer.
  struct PendingPush;
  PushTicket StartPush(const TensorMap& gradients, TensorMap* weights, PushStats* stats,
                       uint64_t step, uint64_t base_step);
  // Prepares `push` and sends its rounds; its error is kept for Wait.
  absl::Status SendPush(const TensorMap& gradients, PendingPush* push)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(push_mu_);
  // Waits for every round of `push` and retries what failed.
  absl::Status FinishPush(PendingPush* push);

  // Constant after construction.
  const ClientOptions options_;
  std::vector<std::unique_ptr<client::ShardSession>> shards_;

  // The last step handed out; atomic so NextStep never waits for a push.
  std::atomic<uint64_t> last_step_{0};
  // Held while a push is started, so rounds reach each shard in step order.
  absl::Mutex push_mu_;
  PushTicket last_ticket_ ABSL_GUARDED_BY(push_mu_) = 0;
  // Started and not yet finished, in ticket order.
  std::deque<std::shared_ptr<PendingPush>> unfinished_ ABSL_GUARDED_BY(push_mu_);
  // Held while pushes are finished (in ticket order); taken before push_mu_.
  absl::Mutex finish_mu_;
  // Finished, not yet waited for: ticket -> status.
  absl::flat_hash_map<PushTicket, absl::Status> finished_ ABSL_GUARDED_BY(finish_mu_);

  mutable absl::Mutex layouts_mu_;
  absl::flat_hash_map<std::string, TensorLayout> layouts_ ABSL_GUARDED_BY(layouts_mu_);

  // Wakes the heartbeat thread early when it must stop.
  absl::Mutex heartbeat_mu_;
  bool stop_heartbeats_ ABSL_GUARDED_BY(heartbeat_mu_) = false;

  // Serialises starting and stopping the heartbeat thread (Connect, Leave and
  // the destructor). Never held while heartbeat_mu_ is waited on.
  absl::Mutex lifecycle_mu_;
  std::thread heartbeat_thread_ ABSL_GUARDED_BY(lifecycle_mu_);
};

}  // namespace dcasgd

#endif  // DCASGD_CLIENTS_CPP_PS_CLIENT_H_
