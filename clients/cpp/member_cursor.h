#ifndef DCASGD_CLIENTS_CPP_MEMBER_CURSOR_H_
#define DCASGD_CLIENTS_CPP_MEMBER_CURSOR_H_

#include <atomic>
#include <cstddef>

namespace dcasgd {
namespace client {

// Which member of a shard calls go to: one member, or two for a replicated
// shard ("a|b", docs/design.md "How clients find the primary"). Calls read
// the current member; after a transient failure at a member the next attempt
// goes to the other one, and later calls stay with the member that answered.
// Used by ShardSession and CoordinatorClient. Thread-safe and lock-free: it
// is read on every round.
class MemberCursor {
 public:
  // `count` >= 1 members; the first is current.
  explicit MemberCursor(size_t count) : count_(count) {}

  size_t count() const { return count_; }
  // The member calls go to now.
  size_t current() const { return current_.load(std::memory_order_relaxed); }
  // After a transient failure at member `failed`: the next member becomes
  // current, unless a concurrent call already moved on from `failed`.
  void MoveOn(size_t failed) {
    if (count_ < 2) return;
    size_t expected = failed;
    current_.compare_exchange_strong(expected, (failed + 1) % count_, std::memory_order_relaxed);
  }

 private:
  const size_t count_;
  // Atomic rather than under a mutex: an index read per call, and nothing
  // else depends on its ordering (a stale read costs one attempt at most).
  std::atomic<size_t> current_{0};
};

}  // namespace client
}  // namespace dcasgd

#endif  // DCASGD_CLIENTS_CPP_MEMBER_CURSOR_H_
