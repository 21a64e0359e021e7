#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "agent/base/mutex.h"
#include "agent/core/channel.h"
#include "agent/core/clock.h"
#include "agent/core/io_source.h"
#include "agent/core/queue_pair.h"

namespace umpath {

// A queue pair as one worker holds it.
struct WorkerQueuePair {
  uint32_t controller_id = 0;
  QueuePair* qp = nullptr;
  bool dirty = false;  // commands placed since the last doorbell
  bool gone = false;   // refused a command as gone, or is being removed
  // Out of service while its controller is fenced: neither submitted to nor polled;
  // the commands it holds stay with it until they are handed back.
  bool quiesced = false;
  // Handed back and being removed, but a layer below (the kernel) still holds commands:
  // polled, never submitted to, until it has returned them all; then `drained` runs.
  bool draining = false;
  absl::AnyInvocable<void()> drained;
};

// Told by a worker that a controller's ANA log should be read again (an I/O failed with
// an ANA status). Threading: called on worker threads; must not block.
class AnaReadRequester {
 public:
  virtual void RequestAnaRead(ControllerShared* controller) = 0;

 protected:
  ~AnaReadRequester() = default;
};

// An I/O thread: owns one queue pair per controller and one channel per head.
// Topology reaches it by message (Post), never through a shared lock (Envoy's
// runOnAllThreads, SPDK's channels).
//
// Threading: Post() and Stop() from any thread. Everything else runs on the worker's
// thread: the one Start() made, or, when the worker is driven by hand (tests,
// benchmarks, a frontend that owns its thread), the single thread that calls RunOnce().
class Worker final : public CompletionSink {
 public:
  struct Options {
    int index = 0;
    int numa_node = -1;
    // NUMA distance from this worker's node to node i (the kernel's node_distance);
    // empty: every path counts as local.
    std::vector<uint32_t> distances;
    const Clock* clock = SystemClock::Get();
    AnaReadRequester* ana_requester = nullptr;
  };
  static std::unique_ptr<Worker> Create(Options options);
  ~Worker();

  // From any thread: run `fn` on the worker thread, in posting order.
  void Post(absl::AnyInvocable<void()> fn);

  // Own thread: polls while there is work, sleeps on eventfds when idle.
  void Start();
  void Stop();  // runs what is posted, then joins

  // --- Worker thread only. ---
  uint32_t RunOnce();  // inbox, completions, deferred work, doorbells; returns work done
  void Flush();        // ring every doorbell written since the last flush
  Channel* FindChannel(uint64_t head_uid);
  uint32_t outstanding() const;

  // Control messages (the control side posts these).
  void AddQueuePair(uint32_t controller_id, QueuePair* qp);
  // The one way a queue pair leaves service (SEMANTICS "Fencing"):
  //   Quiesce  - no command is placed on it and it is not polled: from then on the
  //              backend may disable, reset or release its controller; what it holds
  //              stays held (nothing is failed over).
  //   HandBack - once the controller is fenced and its CQT has passed: every command
  //              the queue pair may give up (QueuePair::AbortAll) goes back to its
  //              channel for failover; `done` gets how many. With kRemove the worker
  //              then lets go of the queue pair, after the layer below has returned
  //              whatever it still holds (polled meanwhile), and `done` runs after that.
  //   Resume   - a quiesced queue pair (its controller reset) serves again.
  enum class HandBackThen : uint8_t { kKeepQuiesced, kRemove };
  void QuiesceQueuePair(uint32_t controller_id);
  void HandBackQueuePair(uint32_t controller_id, HandBackThen then,
                         absl::AnyInvocable<void(uint32_t handed_back)> done);
  void ResumeQueuePair(uint32_t controller_id);
  void AdoptSnapshot(std::shared_ptr<const HeadSnapshot> snapshot);
  void KickHead(uint64_t head_uid);
  void DropHead(uint64_t head_uid, IoError why);
  void FailWaitingFast(uint64_t head_uid);
  void FailAll(IoError why);
  // A frontend's queue on this worker; `released` runs once the worker no longer
  // polls it.
  void AddSource(IoSource* source);
  void RemoveSource(IoSource* source, absl::AnyInvocable<void()> released);

  // Used by channels.
  WorkerQueuePair* FindQueuePair(uint32_t controller_id);
  void MarkDirty(WorkerQueuePair* qp) {
    if (!qp->dirty) {
      qp->dirty = true;
      dirty_.push_back(qp);  // capacity reserved per queue pair: no allocation
    }
  }
  uint32_t Distance(int numa_node) const;
  const Options& options() const { return options_; }
  int64_t Now() const { return options_.clock->MonotonicNanos(); }
  // The time of this pass through RunOnce, read once, when first asked: per-I/O
  // timestamps (completion latency) cost one clock read per pass, not two per I/O, and
  // are exact to within a pass.
  int64_t LoopNow() {
    if (loop_now_ == 0) loop_now_ = Now();
    return loop_now_;
  }
  void RequestAnaRead(ControllerShared* c) {
    if (options_.ana_requester) options_.ana_requester->RequestAnaRead(c);
  }

  // Passes through the started thread's loop and how many of them slept: an idle
  // worker stops adding to either (any thread may read them).
  uint64_t loop_passes() const { return loop_passes_.load(std::memory_order_relaxed); }
  uint64_t sleeps() const { return sleeps_.load(std::memory_order_relaxed); }

  // CompletionSink: routes to the request's channel.
  void OnCompletion(IoRequest* req, nvme::Status status) override;

 private:
  explicit Worker(Options options, int event_fd, int epoll_fd);
  uint32_t DrainInbox();
  void ReapDeadChannels();
  uint32_t PollDraining();  // returns completions reaped and queue pairs let go
  // Watches (or stops watching) the queue pair's wake fd; keeps all_qps_wakeable_.
  void SetWakeFd(WorkerQueuePair* q, bool watch);
  // Outstanding on the queue pairs this worker polls (not quiesced ones).
  uint32_t polled_outstanding() const;
  void Sleep(int64_t until);
  void Loop();

  const Options options_;
  const int event_fd_;  // inbox wake-up
  const int epoll_fd_;

  Mutex inbox_mu_;
  std::vector<absl::AnyInvocable<void()>> inbox_ ABSL_GUARDED_BY(inbox_mu_);
  std::atomic<bool> inbox_nonempty_{false};
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> loop_passes_{0};  // written by the worker thread only
  std::atomic<uint64_t> sleeps_{0};
  std::thread thread_;

  std::vector<std::unique_ptr<WorkerQueuePair>> qps_;
  std::vector<std::unique_ptr<WorkerQueuePair>> draining_;
  std::vector<WorkerQueuePair*> dirty_;
  std::vector<IoSource*> sources_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Channel>> channels_;
  std::vector<std::unique_ptr<Channel>> dead_channels_;  // removed, I/O still in flight
  bool all_qps_wakeable_ = true;
  int64_t loop_now_ = 0;  // 0: not read in this pass
};

}  // namespace umpath
