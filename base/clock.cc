#include "base/clock.h"

namespace dcasgd {
namespace {

class RealClock final : public Clock {
 public:
  absl::Time Now() override { return absl::Now(); }
};

}  // namespace

Clock* Clock::Real() {
  static RealClock* clock = new RealClock();  // never deleted: used until exit
  return clock;
}

}  // namespace dcasgd
