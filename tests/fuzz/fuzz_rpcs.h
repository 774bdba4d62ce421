#ifndef DCASGD_TESTS_FUZZ_FUZZ_RPCS_H_
#define DCASGD_TESTS_FUZZ_FUZZ_RPCS_H_

// The request scripts of the two request fuzzers (ps_requests_fuzz.cc,
// coordinator_requests_fuzz.cc) and of the seeds make_corpus.cc writes for
// them: the selector byte of each record, and the gRPC byte buffers the
// records are parsed from. The selectors' values are the corpus format
// (fuzz_input.h): append new ones at the end (and move the kNum* count to
// them), never reorder.

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "grpc/grpc.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"
#include "tests/fuzz/fuzz_input.h"

namespace dcasgd::fuzz {

// A record of a ParameterShard script (the selector byte modulo kNumPsRpcs).
enum class PsRpc : uint8_t {
  kDeclare,
  kJoin,
  kHeartbeat,
  kLeave,
  kPull,
  kPush,
  kPushPull,
  kGetStatus,
  kCheckpoint,
  kAdvanceClock,  // not an RPC: lets leases expire (the service's reaper)
  kExchange,      // the rounds of one Exchange stream
};
inline constexpr uint8_t kNumPsRpcs = static_cast<uint8_t>(PsRpc::kExchange) + 1;

// A record of a DataCoordinator script (the selector byte modulo
// kNumCoordinatorRpcs).
enum class CoordinatorRpc : uint8_t {
  kAcquire,
  kRenew,
  kComplete,
  kGetJobStatus,
  kAdvanceClock,  // not an RPC: lets leases expire
  kFailSaves,     // not an RPC: the next saves fail while the record's first byte is odd
};
inline constexpr uint8_t kNumCoordinatorRpcs = static_cast<uint8_t>(CoordinatorRpc::kFailSaves) + 1;

// The selector of the next record of a script.
inline PsRpc NextPsRpc(FuzzInput& in) { return static_cast<PsRpc>(in.Byte() % kNumPsRpcs); }
inline CoordinatorRpc NextCoordinatorRpc(FuzzInput& in) {
  return static_cast<CoordinatorRpc>(in.Byte() % kNumCoordinatorRpcs);
}

// Appends one record of a script (make_corpus.cc).
inline void AppendRecord(std::string* script, PsRpc rpc, absl::string_view bytes) {
  AppendRecord(script, static_cast<uint8_t>(rpc), bytes);
}
inline void AppendRecord(std::string* script, CoordinatorRpc rpc, absl::string_view bytes) {
  AppendRecord(script, static_cast<uint8_t>(rpc), bytes);
}

// Byte buffers and slices are gRPC core objects: gRPC is initialised once
// per process, on the first call (thread-safe: a function-local static), and
// never shut down (the process ends first).
inline void InitGrpcOnce() {
  static const bool ready = [] {
    grpc_init();
    return true;
  }();
  (void)ready;
}

// The raw request bytes as gRPC hands them to a raw callback method. Calls
// InitGrpcOnce.
inline grpc::ByteBuffer RawRequest(absl::string_view bytes) {
  InitGrpcOnce();
  grpc::Slice slice(bytes.data(), bytes.size());
  return grpc::ByteBuffer(&slice, 1);
}

}  // namespace dcasgd::fuzz

#endif  // DCASGD_TESTS_FUZZ_FUZZ_RPCS_H_
