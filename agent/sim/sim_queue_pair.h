#pragma once

// One worker's queue pair on a simulated controller (agent/sim): a fixed ring of
// commands in flight, each completing once its due time has passed (submit time plus
// the controller's latency; at once with none), polled like a device's completion
// queue. Data moves when a command completes, never before: a fenced controller's
// commands come back through AbortAll having done nothing, as SEMANTICS "Fencing" asks
// of a real one. Namespaces are null (reads return zeros, writes are dropped) or kept
// in memory (SimMedia), shared by every controller of the subsystem.
//
// Faults reach the queue pair through SimFaults, atomics the control thread writes and
// the worker reads: the next N commands (or all, until cleared) complete with a given
// NVMe status; commands stick (never complete until the fault is cleared, so the
// deadline and the reset behind it run); the controller is gone (Submit answers kGone).
//
// Threading: as QueuePair (the owning worker), except the SimFaults and SimLink fields
// (any thread, relaxed atomics: a fault seen one poll late is harmless) and
// timed_out() (any thread). Hot path: no lock, no allocation; a system call only to arm
// and reset the wake timer when a completion becomes due.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/core/clock.h"
#include "agent/core/queue_pair.h"

namespace umpath::sim {

// One namespace's data: `data` is null for a null namespace.
struct SimNamespace {
  uint32_t nsid = 0;
  uint64_t size_blocks = 0;
  uint32_t block_size = 512;
  uint8_t* data = nullptr;
};

// The namespaces of one subsystem, by nsid - 1; memory-backed ones are anonymous
// mappings whose pages are only allocated as they are written.
class SimMedia {
 public:
  // `memory`: keep the data (reads return what was written); else a null device.
  static absl::StatusOr<std::shared_ptr<SimMedia>> Create(uint32_t namespaces, uint64_t size_blocks,
                                                          uint32_t block_size, bool memory);
  ~SimMedia();
  SimMedia(const SimMedia&) = delete;
  SimMedia& operator=(const SimMedia&) = delete;
  const SimNamespace* Find(uint32_t nsid) const {
    return nsid >= 1 && nsid <= namespaces_.size() ? &namespaces_[nsid - 1] : nullptr;
  }
  uint32_t count() const { return static_cast<uint32_t>(namespaces_.size()); }

 private:
  SimMedia() = default;
  std::vector<SimNamespace> namespaces_;
  uint64_t bytes_each_ = 0;
};

// A controller's injectable faults. Lives as long as the simulated controller (across
// its loss and return); written by the control thread, read by every worker.
struct SimFaults {
  // The completion status field (nvme::Status) that commands fail with; 0: none.
  std::atomic<uint16_t> error_status{0};
  // How many more commands fail so; -1: every one until cleared.
  std::atomic<int64_t> errors_left{0};
  // Only commands for this namespace fail; 0: any.
  std::atomic<uint32_t> error_nsid{0};
  // Commands submitted from now on never complete until this is cleared.
  std::atomic<bool> stuck{false};
  // Completion latency, ns (applies to commands submitted from now on).
  std::atomic<int64_t> latency_ns{0};
  // Commands that failed with the injected status (tests and the API's answer).
  std::atomic<uint64_t> errors_injected{0};
  void Clear() {
    errors_left.store(0, std::memory_order_relaxed);
    error_status.store(0, std::memory_order_relaxed);
    error_nsid.store(0, std::memory_order_relaxed);
    stuck.store(false, std::memory_order_relaxed);
  }
};

// One incarnation of a controller (a controller that returns is a new one).
struct SimLink {
  // The controller is gone: Submit answers kGone.
  std::atomic<bool> gone{false};
};

struct SimQueueOptions {
  uint32_t depth = 128;
  uint32_t max_transfer = 0;  // bytes; 0: no limit
  int64_t timeout_ns = 30'000'000'000;
  const Clock* clock = SystemClock::Get();
  std::shared_ptr<const SimMedia> media;
  std::shared_ptr<SimFaults> faults;
  std::shared_ptr<SimLink> link;
  // Worker thread, once per stuck command past its deadline; must only signal.
  std::function<void()> on_timeout;
  // A wake fd (timerfd) the worker can sleep on; false: poll only (tests).
  bool wake_timer = true;
};

class SimQueuePair final : public QueuePair {
 public:
  static absl::StatusOr<std::unique_ptr<SimQueuePair>> Create(SimQueueOptions options);
  ~SimQueuePair() override;

  SubmitResult Submit(IoRequest* req) override;
  void Ring() override;
  uint32_t Poll(CompletionSink& sink, uint32_t max) override;
  void AbortAll(CompletionSink& sink) override;
  uint32_t outstanding() const override { return count_; }
  int wake_fd() const override { return timer_fd_; }

  // Any thread: a command passed its deadline since the last AbortAll.
  bool timed_out() const { return timed_out_.load(std::memory_order_relaxed); }

 private:
  struct Slot {
    IoRequest* req = nullptr;
    int64_t due = 0;        // monotonic ns; 0: at once
    int64_t submitted = 0;  // monotonic ns, for the deadline of a stuck command
    uint16_t status = 0;    // the completion's status field, decided at submit
    bool stuck = false;
  };
  SimQueuePair(SimQueueOptions options, int timer_fd);
  // The command's effect on the namespace and its status, at completion.
  nvme::Status Execute(const IoRequest& req, nvme::Status decided) const;
  void ArmTimer(int64_t at);
  // `fired`: its expiry has passed (a one-shot timer disarms itself).
  void DisarmTimer(bool fired);
  Slot& Head() { return slots_[head_]; }

  const SimQueueOptions options_;
  const int timer_fd_;
  std::vector<Slot> slots_;  // a ring: count_ commands from head_, in submission order
  uint32_t head_ = 0, count_ = 0;
  int64_t armed_at_ = 0;  // the wake timer's expiry; 0: not armed
  std::atomic<bool> timed_out_{false};
};

}  // namespace umpath::sim
