#include "services/worker/step_schedule.h"

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/check.h"

namespace dcasgd {

absl::StatusOr<std::unique_ptr<StepSchedule>> StepSchedule::Create(const std::string& spec,
                                                                   int workers, uint64_t seed) {
  if (workers < 1) {
    return absl::InvalidArgumentError(absl::StrCat("a schedule needs >= 1 worker, got ", workers));
  }
  if (spec == "round-robin") {
    return std::make_unique<StepSchedule>(Kind::kRoundRobin, workers, 0, 1, seed);
  }
  if (spec == "random") return std::make_unique<StepSchedule>(Kind::kRandom, workers, 0, 1, seed);
  const std::vector<std::string> parts = absl::StrSplit(spec, ':');
  int every = 0;
  int factor = 0;
  if (parts[0] == "slow" && (parts.size() == 2 || parts.size() == 3) &&
      absl::SimpleAtoi(parts[1], &every) && every >= 2 && every <= 1 << 20) {
    factor = every;
    if (parts.size() == 2 ||
        (absl::SimpleAtoi(parts[2], &factor) && factor >= 1 && factor <= 1 << 20)) {
      return std::make_unique<StepSchedule>(Kind::kSlow, workers, every, factor, seed);
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown schedule '", spec,
                   "': use round-robin, random or slow:K[:F] (every K-th worker, K >= 2, takes F "
                   ">= 1 times as long per step; F defaults to K)"));
}

StepSchedule::StepSchedule(Kind kind, int workers, int slow_every, int slow_factor, uint64_t seed)
    : kind_(kind),
      workers_(workers),
      slow_every_(slow_every),
      slow_factor_(slow_factor),
      taking_part_(static_cast<size_t>(workers), true),
      rng_(seed),
      finish_(static_cast<size_t>(workers)) {
  DCASGD_CHECK(workers >= 1);
  for (int slot = 0; slot < workers; ++slot) finish_[static_cast<size_t>(slot)] = DurationOf(slot);
}

double StepSchedule::DurationOf(int slot) const {
  if (kind_ == Kind::kSlow && slot % slow_every_ == slow_every_ - 1) return slow_factor_;
  return 1.0;
}

void StepSchedule::PickLocked() {
  if (turn_ >= 0) return;
  std::vector<int> candidates;
  for (int slot = 0; slot < workers_; ++slot) {
    if (taking_part_[static_cast<size_t>(slot)]) candidates.push_back(slot);
  }
  if (candidates.empty()) return;
  switch (kind_) {
    case Kind::kRoundRobin:
      // The first participant after the one that pushed last, cyclically.
      turn_ = candidates.front();
      for (int slot : candidates) {
        if (slot > last_) {
          turn_ = slot;
          break;
        }
      }
      break;
    case Kind::kRandom:
      turn_ = candidates[std::uniform_int_distribution<size_t>(0, candidates.size() - 1)(rng_)];
      break;
    case Kind::kSlow:
      // The participant whose step finishes first (ties: the lowest slot).
      turn_ = candidates.front();
      for (int slot : candidates) {
        if (finish_[static_cast<size_t>(slot)] < finish_[static_cast<size_t>(turn_)]) turn_ = slot;
      }
      break;
  }
}

void StepSchedule::Enter(int slot) {
  DCASGD_CHECK(slot >= 0 && slot < workers_);
  absl::MutexLock lock(&mu_);
  if (taking_part_[static_cast<size_t>(slot)]) return;
  taking_part_[static_cast<size_t>(slot)] = true;
  // A returning worker starts a step now, not in the past.
  finish_[static_cast<size_t>(slot)] = now_ + DurationOf(slot);
  PickLocked();
}

void StepSchedule::Exit(int slot) {
  DCASGD_CHECK(slot >= 0 && slot < workers_);
  absl::MutexLock lock(&mu_);
  taking_part_[static_cast<size_t>(slot)] = false;
  if (turn_ == slot && !turn_taken_) {
    turn_ = -1;
    PickLocked();
  }
}

bool StepSchedule::AwaitTurn(int slot) {
  DCASGD_CHECK(slot >= 0 && slot < workers_);
  absl::MutexLock lock(&mu_);
  DCASGD_CHECK(taking_part_[static_cast<size_t>(slot)]);
  PickLocked();
  auto my_turn = [this, slot]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return stopped_ || (turn_ == slot && !turn_taken_);
  };
  mu_.Await(absl::Condition(&my_turn));
  if (stopped_) return false;
  turn_taken_ = true;
  return true;
}

void StepSchedule::EndTurn(int slot, bool pushed, uint64_t staleness) {
  uint64_t pushes = 0;
  {
    absl::MutexLock lock(&mu_);
    DCASGD_CHECK(turn_ == slot && turn_taken_);
    if (pushed) {
      ++staleness_[staleness];
      pushes = ++pushes_;
    }
  }
  // Still this slot's turn: nobody pushes while the hook looks at the model.
  if (pushed && on_push_) on_push_(pushes);
  absl::MutexLock lock(&mu_);
  if (pushed) {
    last_ = slot;
    now_ = finish_[static_cast<size_t>(slot)];
    finish_[static_cast<size_t>(slot)] = now_ + DurationOf(slot);
  }
  turn_ = -1;
  turn_taken_ = false;
  PickLocked();
}

void StepSchedule::Stop() {
  absl::MutexLock lock(&mu_);
  stopped_ = true;
}

uint64_t StepSchedule::pushes() const {
  absl::MutexLock lock(&mu_);
  return pushes_;
}

std::map<uint64_t, uint64_t> StepSchedule::staleness_histogram() const {
  absl::MutexLock lock(&mu_);
  return staleness_;
}

std::string StepSchedule::name() const {
  switch (kind_) {
    case Kind::kRoundRobin:
      return "round-robin";
    case Kind::kRandom:
      return "random";
    case Kind::kSlow:
      return absl::StrCat("slow:", slow_every_, ":", slow_factor_);
  }
  return "";
}

}  // namespace dcasgd
