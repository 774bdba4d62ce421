// Fuzz target: every request of the DataCoordinator service, decoded and
// validated the way coordinator/coordinator_service.cc does it
// (wire/raw_message.h HandleRawUnary, ValidateName) and applied to a real
// DataCoordinator in-process, without gRPC. An input is a script of requests
// (tests/fuzz/fuzz_input.h); two records are not RPCs: one moves the clock
// (leases expire), one makes the next saves fail (a full disk).
//
// It checks, beyond "no crash, no leak, no undefined behaviour": every
// answer is actionable and bounded (CheckAnswer); every saved state restores
// into a fresh coordinator and serialises back to the same text (what a
// restart of shard 0 relies on); a request whose save failed changed
// nothing; the progress never counts more than the job has.

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <variant>

#include "absl/status/status.h"
#include "base/clock.h"
#include "coordinator/data_coordinator.h"
#include "dcasgd/v1/coordinator.pb.h"
#include "grpcpp/support/byte_buffer.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/fuzz/fuzz_rpcs.h"
#include "wire/raw_message.h"
#include "wire/tensor_spec.h"

namespace dcasgd::fuzz {
namespace {

bool SameProgress(const JobProgress& a, const JobProgress& b) {
  return a.configured == b.configured && a.num_data_shards == b.num_data_shards &&
         a.epochs == b.epochs && a.completed == b.completed && a.leased == b.leased &&
         a.reissued == b.reissued && a.current_epoch == b.current_epoch && a.done == b.done;
}

void CheckProgress(const JobProgress& p) {
  const uint64_t items = uint64_t{p.num_data_shards} * p.epochs;
  if (p.completed > items || p.leased > DataCoordinator::kMaxLeases || p.current_epoch > p.epochs ||
      items > DataCoordinator::kMaxWorkItems || (p.done && p.completed != items)) {
    Fail("the coordinator's progress counts more than its job");
  }
}

// A save that round-trips what it is given, or fails on demand.
class Saver {
 public:
  absl::Status Save(const std::string& text) {
    if (fail_) return absl::UnavailableError("disk full (fuzz)");
    ManualClock clock;
    DataCoordinator restored(absl::Seconds(10), &clock);
    if (absl::Status s = restored.RestoreProgress(text); !s.ok()) {
      Fail("a saved data schedule does not restore", s);
    }
    if (restored.SerializeProgress() != text) Fail("a restored data schedule saves differently");
    return absl::OkStatus();
  }
  void set_fail(bool fail) { fail_ = fail; }

 private:
  bool fail_ = false;
};

void Run(const uint8_t* data, size_t size) {
  InitGrpcOnce();
  FuzzInput in(data, size);
  ManualClock clock;
  Saver saver;
  DataCoordinator coordinator(absl::Seconds(10), &clock,
                              [&saver](const std::string& text) { return saver.Save(text); });
  // The secrets of the leases granted, by lease id. A renew or complete with
  // an empty secret is sent with the real one (the fuzzed client plays the
  // holder, so those paths stay reachable); any other secret goes as it is.
  std::map<uint64_t, std::string> secrets;
  auto secret_for = [&secrets](uint64_t lease_id, const std::string& given) {
    auto it = secrets.find(lease_id);
    return given.empty() && it != secrets.end() ? it->second : given;
  };
  for (int i = 0; i < 64 && !in.empty(); ++i) {
    const CoordinatorRpc rpc = NextCoordinatorRpc(in);
    const absl::string_view record = in.Record();
    const grpc::ByteBuffer raw = RawRequest(record);
    grpc::ByteBuffer response;
    const JobProgress before = coordinator.Progress();
    absl::Status status;
    switch (rpc) {
      case CoordinatorRpc::kAcquire:
        status = HandleRawUnary<v1::AcquireDataShardRequest, v1::AcquireDataShardResponse>(
            raw, &response,
            [&](const v1::AcquireDataShardRequest& r, v1::AcquireDataShardResponse* out) {
              if (absl::Status s = ValidateName("worker_name", r.worker_name()); !s.ok()) return s;
              absl::StatusOr<AcquireResult> result =
                  coordinator.Acquire(r.worker_name(), r.num_data_shards(), r.epochs());
              if (!result.ok()) return result.status();
              if (const auto* lease = std::get_if<DataLease>(&*result)) {
                out->mutable_lease()->set_lease_id(lease->lease_id);
                secrets[lease->lease_id] = lease->secret;
                if (lease->data_shard >= r.num_data_shards() || lease->epoch >= r.epochs()) {
                  Fail("a lease outside the job");
                }
              } else if (std::holds_alternative<JobDone>(*result)) {
                out->set_job_done(true);
              }
              return absl::OkStatus();
            });
        break;
      case CoordinatorRpc::kRenew:
        status = HandleRawUnary<v1::RenewDataLeaseRequest, v1::RenewDataLeaseResponse>(
            raw, &response, [&](const v1::RenewDataLeaseRequest& r, v1::RenewDataLeaseResponse*) {
              return coordinator.Renew(r.lease_id(), secret_for(r.lease_id(), r.lease_secret()));
            });
        break;
      case CoordinatorRpc::kComplete:
        status = HandleRawUnary<v1::CompleteDataShardRequest, v1::CompleteDataShardResponse>(
            raw, &response,
            [&](const v1::CompleteDataShardRequest& r, v1::CompleteDataShardResponse*) {
              return coordinator.Complete(r.lease_id(), secret_for(r.lease_id(), r.lease_secret()));
            });
        break;
      case CoordinatorRpc::kGetJobStatus:
        status = HandleRawUnary<v1::GetJobStatusRequest, v1::JobStatus>(
            raw, &response, [&](const v1::GetJobStatusRequest&, v1::JobStatus* out) {
              const JobProgress p = coordinator.Progress();
              out->set_completed(p.completed);
              out->set_done(p.done);
              return absl::OkStatus();
            });
        break;
      case CoordinatorRpc::kAdvanceClock:
        clock.Advance(absl::Seconds(record.empty() ? 1 : static_cast<uint8_t>(record[0])));
        break;
      case CoordinatorRpc::kFailSaves:
        saver.set_fail(!record.empty() && (record[0] & 1));
        break;
    }
    CheckAnswer(status);
    const JobProgress after = coordinator.Progress();
    CheckProgress(after);
    // A request that could not save its change made none (leases that
    // expired meanwhile are re-issued, which is no saved change).
    if (absl::IsUnavailable(status) && before.reissued == after.reissued &&
        !SameProgress(before, after)) {
      Fail("a request whose save failed changed the coordinator", status);
    }
  }
}

}  // namespace
}  // namespace dcasgd::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dcasgd::fuzz::Run(data, size);
  return 0;
}
