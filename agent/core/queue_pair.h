#pragma once

#include <cstdint>

#include "agent/core/io_request.h"
#include "agent/nvme/wire.h"

namespace umpath {

// Where a queue pair delivers the completions it reaps.
class CompletionSink {
 public:
  virtual void OnCompletion(IoRequest* req, nvme::Status status) = 0;

 protected:
  ~CompletionSink() = default;
};

enum class SubmitResult : uint8_t {
  kOk,
  kBusy,  // the submission queue is full; try again after completions are reaped
  kGone,  // the queue pair takes no more commands (controller lost, reset, removed)
};

// The seam between the multipath core and a backend (vfio I/O queue pair, io_uring on a
// kernel /dev/ngXnY, a fake in tests). One per (controller, worker).
//
// Threading: every method is called only on the owning worker's thread, except
// wake_fd(), which is read once when the worker registers the queue pair.
class QueuePair {
 public:
  virtual ~QueuePair() = default;
  // Places one command; the doorbell is rung by Ring(), once per batch.
  virtual SubmitResult Submit(IoRequest* req) = 0;
  virtual void Ring() = 0;
  // Reaps up to `max` completions into `sink`; returns how many.
  virtual uint32_t Poll(CompletionSink& sink, uint32_t max) = 0;
  // Called only once the controller is fenced (SEMANTICS "Fencing"; Worker's
  // HandBackQueuePair): completes every command the queue pair may give up into `sink`
  // with host-aborted (0x371, a path error), so its I/O fails over. A command a layer
  // below still owns (the kernel's, for io_uring passthrough) is not completed here: it
  // stays outstanding and comes back through Poll.
  virtual void AbortAll(CompletionSink& sink) = 0;
  virtual uint32_t outstanding() const = 0;
  // Completions dropped because their identifier was not in flight, or belonged to an
  // earlier use of it (a duplicated or late completion). Any thread.
  virtual uint64_t stray_completions() const { return 0; }
  // An fd that becomes readable when completions arrive (MSI-X eventfd, io_uring), so an
  // idle worker can sleep; -1 when the queue pair can only be polled. The worker only
  // waits on it: Poll() resets it (reads the eventfd), or the worker would spin. Poll may
  // leave that system call to the polls that come up empty after the first
  // kMaxEmptyPollsBeforeWakeReset ones in a row; a worker polls more often than that
  // with nothing to do before it sleeps.
  virtual int wake_fd() const { return -1; }
  // Whether Submit can take a request whose data is a fixed buffer (IoRequest::fixed)
  // as it is; the channel has any other stage it into its DMA buffer first.
  virtual bool TakesFixedBuffers() const { return false; }
  static constexpr int kMaxEmptyPollsBeforeWakeReset = 8;
};

}  // namespace umpath
