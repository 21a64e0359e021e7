#pragma once

// Requests whose data is an io_uring fixed buffer (issue 21): a ublk zero-copy request's
// pages, registered by the driver in the buffer table of the ring that fetched it. Only
// a command submitted on that same ring can name the buffer (IORING_URING_CMD_FIXED and
// the index: the kernel looks the index up in the submitting ring's table), so the
// backend that can use it (NVMe passthrough, agent/kernel) borrows the frontend's ring
// for the command; any other backend (vfio: a userspace driver cannot DMA-map kernel
// pages) first has the frontend copy the data into the request's own DMA buffer.

#include <cstdint>

namespace umpath {

struct IoRequest;

// Who is told of a borrowed command's completion: the queue pair that placed it.
class FixedCompletionHandler {
 public:
  // Worker thread, from inside the ring owner's poll: `res` is the CQE's result. The
  // handler must not call back into the ring owner (it queues the completion and
  // delivers it from its own Poll).
  virtual void OnFixedCompletion(IoRequest* req, int32_t res) = 0;

 protected:
  ~FixedCompletionHandler() = default;
};

// The ring that holds the fixed buffers: the frontend's.
//
// Threading: the owning worker's thread only.
class FixedBufferRing {
 public:
  // A zeroed submission entry of the ring for a command on `req`'s buffer (an
  // `io_uring_sqe` of 128 bytes), or nullptr when none is free. The ring sets its
  // user_data and submits it with its own next batch; the CQE goes to
  // `done->OnFixedCompletion(req, res)`. At most one such command per request at a time.
  virtual void* BorrowSqe(IoRequest* req, FixedCompletionHandler* done) = 0;

 protected:
  ~FixedBufferRing() = default;
};

// IoRequest::fixed: set by a frontend whose request data lives in a fixed buffer. The
// request's `data` is a DMA buffer of the same size all the same, used only once staged.
struct FixedBuffer {
  FixedBufferRing* ring = nullptr;
  uint16_t index = 0;  // in the ring's buffer table
  // Copies a write's data from the fixed buffer into `data` (a read's result goes the
  // other way when the frontend answers): from then on `data` is the request's buffer.
  // False when the copy failed; the request then fails. Called at most once per request.
  bool (*stage)(IoRequest* req) = nullptr;
  bool staged = false;
};

}  // namespace umpath
