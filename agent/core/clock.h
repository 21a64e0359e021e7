#pragma once

#include <atomic>
#include <cstdint>
#include <ctime>

namespace umpath {

// Time as the core sees it. Deadlines are 64-bit nanoseconds of a monotonic clock;
// wall time is only for what people read (event timestamps, deadlines shown by the API).
//
// Threading: implementations are called from any thread.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t MonotonicNanos() const = 0;
  virtual int64_t WallNanos() const = 0;
};

class SystemClock final : public Clock {
 public:
  int64_t MonotonicNanos() const override { return Read(CLOCK_MONOTONIC); }
  int64_t WallNanos() const override { return Read(CLOCK_REALTIME); }
  static SystemClock* Get() {
    static SystemClock clock;
    return &clock;
  }

 private:
  static int64_t Read(clockid_t id) {
    timespec ts;
    clock_gettime(id, &ts);
    return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
  }
};

// Tests move time by hand, so no test sleeps through a removal window.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t mono = 1'000'000'000'000, int64_t wall = 1'700'000'000'000'000'000)
      : mono_(mono), wall_offset_(wall - mono) {}
  int64_t MonotonicNanos() const override { return mono_.load(std::memory_order_acquire); }
  int64_t WallNanos() const override { return MonotonicNanos() + wall_offset_; }
  void Advance(int64_t nanos) { mono_.fetch_add(nanos, std::memory_order_acq_rel); }
  void AdvanceSeconds(int64_t s) { Advance(s * 1'000'000'000); }

 private:
  std::atomic<int64_t> mono_;
  const int64_t wall_offset_;
};

inline constexpr int64_t kNanosPerSecond = 1'000'000'000;

}  // namespace umpath
