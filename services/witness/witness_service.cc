#include "services/witness/witness_service.h"

#include "wire/raw_message.h"
#include "wire/status.h"

namespace dcasgd {
namespace {

grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

void ToProto(uint32_t shard, const WitnessRegister& reg, v1::WitnessRegister* out) {
  out->set_shard_index(shard);
  out->set_epoch(reg.epoch);
  out->set_holder(MemberToProto(reg.holder));
  out->set_paired(reg.paired);
}

}  // namespace

Member MemberFromProto(int member) {
  switch (member) {
    case v1::MEMBER_A:
      return Member::kA;
    case v1::MEMBER_B:
      return Member::kB;
    default:
      return Member::kNone;
  }
}

v1::Member MemberToProto(Member member) {
  switch (member) {
    case Member::kA:
      return v1::MEMBER_A;
    case Member::kB:
      return v1::MEMBER_B;
    case Member::kNone:
      break;
  }
  return v1::MEMBER_UNSPECIFIED;
}

absl::Status WitnessService::Authorize(grpc::CallbackServerContext* context,
                                       auth::Action action) const {
  return authorizer_ == nullptr ? absl::OkStatus() : authorizer_->Authorize(*context, action);
}

grpc::ServerUnaryReactor* WitnessService::Claim(grpc::CallbackServerContext* context,
                                                const grpc::ByteBuffer* request,
                                                grpc::ByteBuffer* response) {
  if (absl::Status s = Authorize(context, auth::Action::kWitnessClaim); !s.ok()) {
    return Finish(context, s);
  }
  return Finish(context,
                HandleRawUnary<v1::ClaimRequest, v1::ClaimResponse>(
                    *request, response, [this](const v1::ClaimRequest& r, v1::ClaimResponse* out) {
                      absl::StatusOr<ClaimResult> result = registers_->Claim(
                          r.shard_index(), r.shard_count(), MemberFromProto(r.member()),
                          r.expected_epoch(), r.reason());
                      if (!result.ok()) {
                        metrics_->CountFailure(result.status());
                        return result.status();
                      }
                      metrics_->CountClaim(r.shard_index(), result->granted);
                      out->set_granted(result->granted);
                      ToProto(r.shard_index(), result->state, out->mutable_state());
                      return absl::OkStatus();
                    }));
}

grpc::ServerUnaryReactor* WitnessService::SetPaired(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* request,
                                                    grpc::ByteBuffer* response) {
  if (absl::Status s = Authorize(context, auth::Action::kWitnessSetPaired); !s.ok()) {
    return Finish(context, s);
  }
  return Finish(
      context,
      HandleRawUnary<v1::SetPairedRequest, v1::WitnessRegister>(
          *request, response, [this](const v1::SetPairedRequest& r, v1::WitnessRegister* out) {
            absl::StatusOr<WitnessRegister> reg = registers_->SetPaired(
                r.shard_index(), MemberFromProto(r.member()), r.epoch(), r.paired());
            if (!reg.ok()) {
              metrics_->CountFailure(reg.status());
              return reg.status();
            }
            ToProto(r.shard_index(), *reg, out);
            return absl::OkStatus();
          }));
}

grpc::ServerUnaryReactor* WitnessService::GetRegister(grpc::CallbackServerContext* context,
                                                      const grpc::ByteBuffer* request,
                                                      grpc::ByteBuffer* response) {
  if (absl::Status s = Authorize(context, auth::Action::kWitnessGetRegister); !s.ok()) {
    return Finish(context, s);
  }
  return Finish(
      context,
      HandleRawUnary<v1::GetRegisterRequest, v1::WitnessRegister>(
          *request, response, [this](const v1::GetRegisterRequest& r, v1::WitnessRegister* out) {
            absl::StatusOr<WitnessRegister> reg = registers_->Get(r.shard_index());
            if (!reg.ok()) return reg.status();
            ToProto(r.shard_index(), *reg, out);
            return absl::OkStatus();
          }));
}

grpc::ServerUnaryReactor* WitnessService::Force(grpc::CallbackServerContext* context,
                                                const grpc::ByteBuffer* request,
                                                grpc::ByteBuffer* response) {
  if (absl::Status s = Authorize(context, auth::Action::kWitnessForce); !s.ok()) {
    return Finish(context, s);
  }
  return Finish(
      context, HandleRawUnary<v1::ForceRequest, v1::WitnessRegister>(
                   *request, response, [this](const v1::ForceRequest& r, v1::WitnessRegister* out) {
                     absl::StatusOr<WitnessRegister> reg = registers_->Force(
                         r.shard_index(), MemberFromProto(r.member()), r.reason());
                     if (!reg.ok()) {
                       metrics_->CountFailure(reg.status());
                       return reg.status();
                     }
                     metrics_->CountForce(r.shard_index());
                     ToProto(r.shard_index(), *reg, out);
                     return absl::OkStatus();
                   }));
}

}  // namespace dcasgd
