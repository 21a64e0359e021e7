#pragma once

// One worker's queue pair on a kernel NVMe controller: an io_uring whose commands are
// NVMe I/O passthrough (IORING_OP_URING_CMD, NVME_URING_CMD_IO) on the controller's
// per-namespace generic char devices (/dev/ngXnY). The kernel builds and reaps the
// NVMe queue entries; we see the NVMe status of each command in its CQE.

#include <liburing.h>
#include <linux/nvme_ioctl.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/core/queue_pair.h"

namespace umpath::kernel {

// What the queue pairs of one controller tell its owner (the backend), and what the
// owner tells them.
//
// Threading: the flags are written by either side with relaxed atomics and read on the
// other; Notify() writes an eventfd, lock-free, from any thread.
struct ControllerSignals {
  // A queue pair saw a host path error (the kernel's controller is resetting or
  // reconnecting, or gone): Submit answers kBusy until the owner has read the
  // controller's state, so waiting I/O does not bounce between the kernel and the
  // channel while the core still thinks the path is LIVE.
  std::atomic<bool> suspect{false};
  // The owner is letting the controller go: Submit answers kGone from now on.
  std::atomic<bool> draining{false};
  int notify_fd = -1;  // eventfd of the owner's thread; -1: nobody to tell
  void Notify() const;
};

// How a CQE's result reads as an NVMe status. A result >= 0 is the completion's status
// field (the kernel's nvme_request status, the CQE status word >> 1). A negative result
// is an errno from the kernel's side of the path: a command the kernel refused as
// malformed (EINVAL, EFAULT, EOPNOTSUPP, ENOMEM...) fails to the caller; anything else
// (ENODEV, EIO, EINTR of a cancelled command, ENOLINK...) is a host path error.
nvme::Status StatusFromResult(int32_t res);
// True for the statuses that say the kernel's controller itself may be down.
bool IsHostPathStatus(nvme::Status s);

// Fills `cmd` for `req` (read, write, flush, write zeroes, deallocate). False when the
// request cannot be expressed (no blocks, a buffer missing or larger than the limit).
bool BuildUringCommand(const IoRequest& req, uint32_t max_transfer, nvme_uring_cmd* cmd);

// Fills a zeroed 128-byte SQE with the passthrough `cmd` on the namespace's `fd`. With
// `fixed_index` >= 0 the data is that fixed buffer of the ring the SQE is submitted on
// (IORING_URING_CMD_FIXED, sqe->buf_index; the command's addr is the offset in it, 0: a
// buffer the kernel registered starts at 0), else cmd.addr as it is. user_data is left
// to the caller.
void PrepPassthrough(io_uring_sqe* sqe, int fd, nvme_uring_cmd cmd, int fixed_index);

struct UringQueueOptions {
  uint32_t depth = 128;          // commands in flight at most
  uint32_t max_transfer = 0;     // bytes; 0: no limit known
  std::shared_ptr<ControllerSignals> signals;
  // nsid -> the namespace's /dev/ngXnY fd (owned by the caller, open until the queue
  // pair is destroyed).
  std::vector<std::pair<uint32_t, int>> namespaces;
};

// Threading: as QueuePair (worker thread), except outstanding_shared() (any thread) and
// construction. AddNamespace is posted to the worker.
//
// A request whose data is a fixed buffer (IoRequest::fixed, a ublk zero-copy request)
// goes on the frontend's ring, the one whose buffer table holds it; its completion comes
// back through OnFixedCompletion (from the frontend's poll) and is delivered by the next
// Poll, like any other. Fencing is unchanged: the kernel owns the command until that
// completion, whichever ring carried it.
class UringQueuePair final : public QueuePair, public FixedCompletionHandler {
 public:
  static absl::StatusOr<std::unique_ptr<UringQueuePair>> Create(UringQueueOptions options);
  ~UringQueuePair() override;

  SubmitResult Submit(IoRequest* req) override;
  void Ring() override;
  uint32_t Poll(CompletionSink& sink, uint32_t max) override;
  // Submits what was placed and reaps what the kernel has finished; whatever the kernel
  // still holds stays outstanding (the kernel owns it until it returns it: SEMANTICS
  // "Fencing") and comes back through Poll.
  void AbortAll(CompletionSink& sink) override;
  uint64_t stray_completions() const override {
    return stray_.load(std::memory_order_relaxed);
  }
  uint32_t outstanding() const override { return in_flight_; }
  int wake_fd() const override { return event_fd_; }
  bool TakesFixedBuffers() const override { return true; }
  void OnFixedCompletion(IoRequest* req, int32_t res) override;

  // Worker thread: a namespace that appeared after the queue pair was made.
  void AddNamespace(uint32_t nsid, int fd);
  // Any thread: commands the kernel holds, for a drain before removal.
  uint32_t outstanding_shared() const { return in_flight_shared_.load(std::memory_order_relaxed); }
  uint64_t ring_errors() const { return ring_errors_; }
  // Worker thread. Has the kernel post a completion carrying `user_data` (a no-op):
  // how tests play a duplicated or late completion.
  bool PostNop(uint64_t user_data);

 private:
  UringQueuePair(UringQueueOptions options, int event_fd);
  int FdFor(uint32_t nsid) const;
  uint32_t Reap(CompletionSink& sink, uint32_t max);
  void Complete(CompletionSink& sink, uint32_t tag, nvme::Status status);
  void SetInFlight(uint32_t n) {
    in_flight_ = n;
    in_flight_shared_.store(n, std::memory_order_relaxed);
  }

  UringQueueOptions options_;
  io_uring ring_{};
  bool ring_ready_ = false;
  const int event_fd_;
  // The SQE's user_data is a slot (low 32 bits) and that slot's generation (high 32),
  // bumped on every use: a CQE for a slot not in flight or of an earlier use is dropped
  // and counted, never taken for the command that holds the slot now.
  std::vector<IoRequest*> slots_;
  std::vector<uint32_t> gens_;  // by slot: the generation in flight (or last used)
  std::vector<uint32_t> free_tags_;
  std::atomic<uint64_t> stray_{0};
  uint32_t in_flight_ = 0;
  std::atomic<uint32_t> in_flight_shared_{0};
  // Refused before reaching the kernel (no such namespace, malformed): completed on the
  // next poll, so Submit never calls back into the channel.
  IoList refused_;
  uint32_t refused_count_ = 0;
  // Completed on a frontend's ring, their status in last_status: delivered by Poll.
  IoList borrowed_done_;
  std::vector<uint8_t> done_queued_;  // by slot: in borrowed_done_ (a second CQE is stray)
  bool unsubmitted_ = false;
  int empty_polls_ = 0;
  uint64_t ring_errors_ = 0;
};

}  // namespace umpath::kernel
