#ifndef DCASGD_CLIENTS_CPP_SHARD_SESSION_H_
#define DCASGD_CLIENTS_CPP_SHARD_SESSION_H_

// Internal to clients/cpp (PsClient's parts): generated types appear here,
// never in ps_client.h.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "auth/tls.h"
#include "clients/cpp/member_cursor.h"
#include "dcasgd/v1/ps.grpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/channel_arguments.h"

namespace dcasgd {
namespace client {

// How a session handles the failures of one kind of call (the error contract
// in ps_client.h).
enum class CallKind {
  // Join, Declare, GetStatus, Checkpoint: transient errors are retried;
  // FAILED_PRECONDITION is returned as it is.
  kRead,
  // As kRead, and FAILED_PRECONDITION re-joins the shard and retries once
  // (a pull is what the caller would do next anyway).
  kPull,
  // Needs a worker id; FAILED_PRECONDITION re-joins and returns
  // FAILED_PRECONDITION ending in "re-joined; pull again".
  kPush,
};

// What a joined worker puts in its requests to one shard: its id and the
// session its Join returned (a secret: never logged). worker_id 0 (an
// evaluator, or not joined) has no session.
struct WorkerCredentials {
  uint64_t worker_id = 0;
  std::string session;
};

// Retries of one call on one shard.
struct CallPolicy {
  absl::Duration rpc_timeout = absl::Seconds(60);  // per attempt
  int max_attempts = 8;                            // >= 1
  absl::Duration initial_backoff = absl::Milliseconds(50);
  absl::Duration max_backoff = absl::Seconds(1);
  // Largest message sent (the push stream cuts rounds below it).
  size_t max_message_bytes = size_t{64} << 20;
  // How long a call keeps trying while the members of a replicated shard
  // refuse it naming their roles (a failover in progress): those attempts
  // do not count against max_attempts.
  absl::Duration failover_wait = absl::Seconds(30);
};

class RoundStream;  // round_stream.h

// This client's session with one parameter shard: the channel, the worker id
// and session secret the shard gave it, Join / re-Join / Leave, one
// heartbeat, and the retry and re-join policy of every call to it.
//
// A replicated shard has two members (docs/design.md, "Replicated shards"),
// of which one at a time serves clients; the other answers UNAVAILABLE. The
// session keeps a channel to each and sends to the *current* member; a
// transient failure moves it to the other member for the next attempt
// (members are tried alternately, and the session stays with the one that
// answers). Worker id, session and push steps are replicated state, so a
// call goes on at the other member without re-joining.
// UNAUTHENTICATED (a session the shard does not accept) is returned as it
// is: re-joining cannot fix a credential the shard refuses, and an honest
// client only meets it through a bug.
//
// Thread-safe: calls may run concurrently; Join, re-Join and Leave of one
// session are serialised (concurrent failures re-join once). Blocking.
class ShardSession {
 public:
  // Opens the channel (connects lazily) with `credentials` (TLS, bearer
  // token; null: plaintext). An empty `worker_name` is an evaluator: it never
  // joins, and calls run with worker id 0. Every Join asks for
  // `pipeline_depth` (ps.proto JoinRequest.pipeline_depth).
  // `addresses`: the shard's members, one or two (the first is tried
  // first).
  ShardSession(uint32_t index, uint32_t count, const std::vector<std::string>& addresses,
               const grpc::ChannelArguments& args, std::string worker_name, CallPolicy policy,
               const std::shared_ptr<const auth::ClientCredentials>& credentials = nullptr,
               uint32_t pipeline_depth = 0);

  // Closes the push stream (waiting at most a second for the shard).
  ~ShardSession();

  ShardSession(const ShardSession&) = delete;
  ShardSession& operator=(const ShardSession&) = delete;

  uint32_t index() const { return index_; }
  // "shard 1 (host:port)" ("shard 1 (a:port|b:port)" with two members),
  // the prefix of every error about this shard.
  const std::string& label() const { return label_; }
  // The current member's stub (valid as long as the session).
  v1::ParameterShard::Stub* stub() const;
  // The number of members (1 or 2) and the one calls go to now.
  size_t members() const { return members_.size(); }
  size_t current_member() const;
  // 0 when not joined (an evaluator, or after Leave).
  uint64_t worker_id() const;
  // The worker id and session to send now.
  WorkerCredentials credentials() const;
  // The lease the shard last reported; zero before the first Join.
  absl::Duration lease() const;

  // The push stream to this shard (round_stream.h): the open one, or a new
  // one when it ended (the shard restarted, a timeout, a protocol error) or
  // was opened to a member that is no longer the current one (that one is
  // cancelled: its pending rounds fail and are retried).
  // With `reopen` false an ended stream is returned as it is (null before
  // the first), so that a round started behind unfinished ones fails and is
  // retried after them, in step order.
  std::shared_ptr<RoundStream> Exchange(bool reopen = true);
  const CallPolicy& policy() const { return policy_; }

  // A fresh deadline of the policy's rpc_timeout on `context`.
  void SetDeadline(grpc::ClientContext* context) const;

  // Runs attempt(credentials) with the policy of `kind`: UNAVAILABLE,
  // CANCELLED and DEADLINE_EXCEEDED are retried with backoff and jitter up
  // to max_attempts times per member (sooner when a disconnected channel
  // reconnects), each retry at the other member when there are two;
  // FAILED_PRECONDITION as CallKind says. A member that refuses naming its
  // role (RefusingRole: not the primary) is left for the other one at once,
  // with a backoff only once every member refused in a row; from the first
  // such refusal, attempts do not count for failover_wait (the replica is
  // taking over). `attempt` must return its error already prefixed with
  // label(), with the role kept (wire/status.h FromGrpcCall).
  absl::Status Call(CallKind kind,
                    absl::FunctionRef<absl::Status(const WorkerCredentials& worker)> attempt);

  // Joins as the worker: checks that the shard reports this session's index
  // and count (FAILED_PRECONDITION otherwise) and records the worker id and
  // lease and session.
  absl::Status Join();
  // Joins again unless another call already did since `failed_worker_id`
  // failed; FAILED_PRECONDITION after Leave.
  absl::Status Rejoin(uint64_t failed_worker_id);
  // Renews the lease once, waiting at most `timeout` (a hung shard must not
  // hold up the others' beats). A lost lease re-joins now, so membership
  // stays accurate; other errors are left to the next beat.
  void Beat(absl::Duration timeout);
  // Ends the lease (up to `max_attempts` tries while UNAVAILABLE). A shard
  // that no longer knows the worker counts as done. Never re-joins after.
  absl::Status Leave(int max_attempts);

 private:
  // One member of the shard: its address, channel and stub (const after
  // construction).
  struct Member {
    std::string address;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::ParameterShard::Stub> stub;
  };

  // Waits `delay` before a retry, or less when the current member's channel
  // reconnects.
  void WaitBeforeRetry(absl::Duration delay);
  // After a transient failure at member `failed`: the other member becomes
  // the current one (unless a concurrent call already moved it).
  void MoveOn(size_t failed);

  const uint32_t index_;
  const uint32_t count_;
  const std::string label_;
  const std::string worker_name_;
  const uint32_t pipeline_depth_;
  const CallPolicy policy_;
  const std::vector<Member> members_;
  client::MemberCursor cursor_;  // which of members_ calls go to

  // Serialises Join, re-Join and Leave. Held across the RPC so that
  // concurrent failures re-join once; never taken while holding `mu_`.
  absl::Mutex join_mu_;
  mutable absl::Mutex mu_;
  uint64_t worker_id_ ABSL_GUARDED_BY(mu_) = 0;  // 0: not joined
  std::string session_ ABSL_GUARDED_BY(mu_);     // JoinResponse.session; secret
  uint64_t lease_ms_ ABSL_GUARDED_BY(mu_) = 0;
  bool left_ ABSL_GUARDED_BY(mu_) = false;  // Leave() was called: never re-join

  // JoinResponse.max_message_bytes: the shard's receive limit (0: not told).
  // Written at Join, read only when an Exchange stream is opened.
  std::atomic<uint64_t> shard_message_bytes_{0};

  absl::Mutex exchange_mu_;
  std::shared_ptr<RoundStream> exchange_ ABSL_GUARDED_BY(exchange_mu_);
  size_t exchange_member_ ABSL_GUARDED_BY(exchange_mu_) = 0;  // where exchange_ goes
  // Every stream opened on the channel that may still be alive: gRPC may be
  // finishing one (its OnDone, which drops its last reference) after it was
  // closed or replaced. The destructor waits for all of them, so that the
  // channel is never destroyed while a call of it is still finishing.
  std::vector<std::weak_ptr<RoundStream>> streams_ ABSL_GUARDED_BY(exchange_mu_);
};

}  // namespace client
}  // namespace dcasgd

#endif  // DCASGD_CLIENTS_CPP_SHARD_SESSION_H_
