#include "services/witness/witness_metrics.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "base/metrics_exposer.h"
#include "base/status_macros.h"
#include "prometheus/collectable.h"
#include "prometheus/text_serializer.h"

namespace dcasgd {

class WitnessMetrics::RegisterCollector final : public prometheus::Collectable {
 public:
  explicit RegisterCollector(const WitnessMetrics* metrics) : metrics_(metrics) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    metrics_->RefreshGauges();
    return metrics_->registry_->Collect();
  }

 private:
  const WitnessMetrics* const metrics_;
};

WitnessMetrics::WitnessMetrics(const WitnessRegisters* registers)
    : registers_(registers),
      registry_(std::make_shared<prometheus::Registry>()),
      collector_(std::make_shared<RegisterCollector>(this)) {
  prometheus::Registry& r = *registry_;
  auto& claims = prometheus::BuildCounter()
                     .Name("dcasgd_witness_claims_total")
                     .Help("Claims of a new epoch answered, by shard and result.")
                     .Register(r);
  auto& forces = prometheus::BuildCounter()
                     .Name("dcasgd_witness_forces_total")
                     .Help("Epochs granted by an operator's Force, by shard.")
                     .Register(r);
  auto& epoch = prometheus::BuildGauge()
                    .Name("dcasgd_witness_epoch")
                    .Help("The epoch in each shard's register (0: no holder yet).")
                    .Register(r);
  auto& paired = prometheus::BuildGauge()
                     .Name("dcasgd_witness_paired")
                     .Help(
                         "1 when the shard's holder has a caught-up replica (either member "
                         "may claim).")
                     .Register(r);
  auto& holder = prometheus::BuildGauge()
                     .Name("dcasgd_witness_holder")
                     .Help("1 for the member holding the shard's epoch.")
                     .Register(r);
  for (uint32_t shard = 0; shard < registers_->shard_count(); ++shard) {
    const std::string s = absl::StrCat(shard);
    granted_.push_back(&claims.Add({{"shard", s}, {"result", "granted"}}));
    refused_.push_back(&claims.Add({{"shard", s}, {"result", "refused"}}));
    forces_.push_back(&forces.Add({{"shard", s}}));
    epoch_.push_back(&epoch.Add({{"shard", s}}));
    paired_.push_back(&paired.Add({{"shard", s}}));
    holder_a_.push_back(&holder.Add({{"shard", s}, {"member", "a"}}));
    holder_b_.push_back(&holder.Add({{"shard", s}, {"member", "b"}}));
  }
  save_failures_ = &prometheus::BuildCounter()
                        .Name("dcasgd_witness_save_failures_total")
                        .Help(
                            "Register changes refused because the state file could not be "
                            "written (e.g. a full disk); nothing changed.")
                        .Register(r)
                        .Add({});
}

WitnessMetrics::~WitnessMetrics() {
  // Stop serving scrapes before the collector and registry go away.
  exposer_.reset();
}

absl::Status WitnessMetrics::StartExposer(const std::string& address) {
  if (exposer_ != nullptr) return absl::FailedPreconditionError("metrics exposer already started");
  ASSIGN_OR_RETURN(exposer_, StartMetricsExposer(address, collector_));
  return absl::OkStatus();
}

int WitnessMetrics::port() const { return ExposerPort(exposer_.get()); }

std::string WitnessMetrics::ExpositionText() const {
  return prometheus::TextSerializer().Serialize(collector_->Collect());
}

void WitnessMetrics::CountClaim(uint32_t shard, bool granted) {
  if (shard >= granted_.size()) return;
  (granted ? granted_ : refused_)[shard]->Increment();
}

void WitnessMetrics::CountForce(uint32_t shard) {
  if (shard < forces_.size()) forces_[shard]->Increment();
}

void WitnessMetrics::CountFailure(const absl::Status& status) {
  // WitnessRegisters answers UNAVAILABLE only for a failed save.
  if (absl::IsUnavailable(status)) save_failures_->Increment();
}

void WitnessMetrics::RefreshGauges() const {
  const std::vector<WitnessRegister> registers = registers_->Snapshot();
  for (size_t shard = 0; shard < registers.size() && shard < epoch_.size(); ++shard) {
    const WitnessRegister& reg = registers[shard];
    epoch_[shard]->Set(static_cast<double>(reg.epoch));
    paired_[shard]->Set(reg.paired ? 1 : 0);
    holder_a_[shard]->Set(reg.holder == Member::kA ? 1 : 0);
    holder_b_[shard]->Set(reg.holder == Member::kB ? 1 : 0);
  }
}

}  // namespace dcasgd
