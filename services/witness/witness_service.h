#ifndef DCASGD_SERVICES_WITNESS_WITNESS_SERVICE_H_
#define DCASGD_SERVICES_WITNESS_WITNESS_SERVICE_H_

#include "auth/authorizer.h"
#include "dcasgd/v1/replication.grpc.pb.h"
#include "services/witness/witness_metrics.h"
#include "services/witness/witness_registers.h"

namespace dcasgd {

// The generated service with every method taking raw bytes.
using WitnessBase = v1::Witness::WithRawCallbackMethod_Claim<
    v1::Witness::WithRawCallbackMethod_SetPaired<v1::Witness::WithRawCallbackMethod_GetRegister<
        v1::Witness::WithRawCallbackMethod_Force<v1::Witness::Service>>>>;

// dcasgd.v1.Witness over WitnessRegisters. Unary callback handlers that
// finish on the default reactor; a change blocks its handler for the
// register file's write and fsync (calls come only at role changes, so they
// are few). Requests are parsed here: a malformed one, an unknown member or
// an out-of-range shard is INVALID_ARGUMENT with a message and changes
// nothing. Every call is first checked by `authorizer` (auth/roles.h: role
// replication or admin; Force admin only); null: no checks.
//
// Thread-safe; `registers`, `metrics` and `authorizer` must outlive it.
class WitnessService final : public WitnessBase {
 public:
  WitnessService(WitnessRegisters* registers, WitnessMetrics* metrics,
                 const auth::Authorizer* authorizer)
      : registers_(registers), metrics_(metrics), authorizer_(authorizer) {}

  grpc::ServerUnaryReactor* Claim(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* SetPaired(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetRegister(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Force(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;

 private:
  // OK when the caller of `context` may do `action` (or checks are off).
  absl::Status Authorize(grpc::CallbackServerContext* context, auth::Action action) const;

  WitnessRegisters* const registers_;
  WitnessMetrics* const metrics_;
  const auth::Authorizer* const authorizer_;
};

// The API's member enum (replication.proto) to the witness's, and back.
// MEMBER_UNSPECIFIED and values the API does not define become kNone.
Member MemberFromProto(int member);
v1::Member MemberToProto(Member member);

}  // namespace dcasgd

#endif  // DCASGD_SERVICES_WITNESS_WITNESS_SERVICE_H_
