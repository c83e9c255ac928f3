// The pace of interval persists. Writing a checkpoint to storage slows training even from an
// idle-priority thread (the device's work is done on the same machine: here a direct-I/O
// writer at SCHED_IDLE made steps 24% slower while it ran), so storage writes may take at most
// a share of the wall time: after a persist that was busy for d seconds, the next one is due no
// sooner than d * (1 / duty - 1) seconds after it ended. A persist asked for before then is
// deferred (FlashSlots keeps the state in memory meanwhile). Pure: the caller says the time.
#pragma once

#include <algorithm>

namespace cairn::train {

class PersistPacer {
 public:
  // `duty` in (0, 1]: the largest share of time storage writes may take; 1 = back to back.
  explicit PersistPacer(double duty) : duty_(std::clamp(duty, 1e-3, 1.0)) {}
  // A persist was asked for at `now`.
  void requested(double now) {
    in_flight_ = true;
    requested_at_ = now;
  }
  // What the slots say at `now`: whether a persist is still asked for or being written. The end
  // of one is seen at the first observation after it (a save boundary), so its busy time is
  // counted up to there.
  // A persist this pacer did not ask for (left pending by an earlier process of the rank) counts
  // from when it is first seen.
  void observe(bool in_flight, double now) {
    if (!in_flight_ && in_flight) requested_at_ = now;
    if (in_flight_ && !in_flight) {
      busy_s_ = now - requested_at_;
      ended_at_ = now;
    }
    in_flight_ = in_flight;
  }
  // How long the persist in flight has been (0 when none is).
  double in_flight_for(double now) const { return in_flight_ ? now - requested_at_ : 0; }
  // Whether a persist may start at `now`.
  bool may_start(double now) const {
    if (in_flight_) return false;
    if (ended_at_ < 0) return true;
    return now - ended_at_ >= busy_s_ * (1.0 / duty_ - 1.0);
  }
  // Seconds until may_start, 0 when it may already (unknown while one is in flight: 0).
  double wait_s(double now) const {
    if (in_flight_ || ended_at_ < 0) return 0;
    return std::max(0.0, busy_s_ * (1.0 / duty_ - 1.0) - (now - ended_at_));
  }
  double last_busy_s() const { return busy_s_; }

 private:
  double duty_;
  bool in_flight_ = false;
  double requested_at_ = 0, ended_at_ = -1, busy_s_ = 0;
};

}  // namespace cairn::train
