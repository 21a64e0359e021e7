#pragma once

#include <cstdint>

#include "agent/core/fixed_buffer.h"
#include "agent/nvme/io_command.h"
#include "agent/nvme/wire.h"

namespace umpath {

class Channel;
struct PathShared;

// Why a request finished with an error, beyond the device's own NVMe status.
enum class IoError : uint8_t {
  kNone,         // success
  kNvme,         // the device said so; IoResult::status holds its status
  kNoPath,       // no usable path and nothing to wait for (SEMANTICS "queue or fail")
  kHeadRemoved,  // the head went away (delayed removal expired, or removed with 0)
  kShutdown,     // the agent is stopping
  kFastFail,     // no usable path for the head's io_fail_timeout_secs (SEMANTICS "Fast fail")
};
const char* IoErrorName(IoError e);

// What the caller gets: a small value type, no allocation.
struct IoResult {
  IoError error = IoError::kNone;
  nvme::Status status;
  bool ok() const { return error == IoError::kNone; }
};

// IoRequest::flags.
inline constexpr uint8_t kIoFua = 1;  // Force Unit Access (reads and writes)

// One block I/O. The caller owns the memory and keeps it alive until on_complete runs;
// the multipath layer links it into its own lists while it is in flight, so nothing is
// allocated per I/O.
// For Dataset Management (deallocate), `data` holds the range list: 16 bytes per range
// (context attributes, length in blocks, starting LBA; little-endian), `blocks` is how
// many ranges it has.
struct IoRequest {
  // Set by the caller.
  nvme::IoOpcode opcode = nvme::IoOpcode::kRead;
  uint64_t slba = 0;
  uint32_t blocks = 0;  // number of logical blocks (1-based)
  void* data = nullptr;
  uint32_t data_len = 0;
  uint8_t flags = 0;  // kIoFua
  void (*on_complete)(IoRequest* req, IoResult result) = nullptr;
  void* user = nullptr;
  // The data is (also) a fixed buffer of the frontend's ring (fixed_buffer.h); null for
  // plain host memory.
  FixedBuffer* fixed = nullptr;

  // Owned by the multipath layer between submit and on_complete.
  IoRequest* next = nullptr;         // requeue / retry / deferred list link
  Channel* channel = nullptr;
  void* epoch = nullptr;             // the channel's path table it was issued through
  uint16_t slot = 0;                 // index into that table
  uint8_t retries = 0;               // SEMANTICS "retry budget"
  uint8_t failovers = 0;
  bool counted_in_flight = false;    // counted in its path's queue-depth counter
  int64_t not_before = 0;            // monotonic ns; retry after the controller's CRD
  int64_t submitted_at = 0;          // monotonic ns; when the queue pair took it
  int64_t arrived_at = 0;            // monotonic ns; when the channel took it (Submit)
  bool requeued = false;             // counted as requeued since it last reached a path
  nvme::Status last_status;
  const void* retry_path = nullptr;  // the path a delayed retry goes back to
  uint32_t nsid = 0;                 // the namespace on the chosen path's controller
  uint64_t backend_tag = 0;          // free for the queue pair (command id, etc.)
};

// The NVMe command a request is (agent/nvme/io_command.h): what every queue pair encodes.
inline nvme::IoCommand IoCommandOf(const IoRequest& r) {
  return nvme::IoCommand{.opcode = r.opcode, .nsid = r.nsid, .slba = r.slba, .blocks = r.blocks,
                         .data_len = r.data_len, .has_data = r.data != nullptr,
                         .fua = (r.flags & kIoFua) != 0};
}

// Intrusive FIFO of requests: O(1) push and pop, no allocation.
class IoList {
 public:
  bool empty() const { return head_ == nullptr; }
  uint32_t size() const { return size_; }
  void PushBack(IoRequest* r) {
    r->next = nullptr;
    if (tail_) {
      tail_->next = r;
    } else {
      head_ = r;
    }
    tail_ = r;
    ++size_;
  }
  IoRequest* PopFront() {
    IoRequest* r = head_;
    if (!r) return nullptr;
    head_ = r->next;
    if (!head_) tail_ = nullptr;
    r->next = nullptr;
    --size_;
    return r;
  }
  // Moves every element of this list to `out`, leaving this one empty.
  void TakeAll(IoList& out) {
    out = *this;
    head_ = tail_ = nullptr;
    size_ = 0;
  }
  IoRequest* front() const { return head_; }

 private:
  IoRequest* head_ = nullptr;
  IoRequest* tail_ = nullptr;
  uint32_t size_ = 0;
};

}  // namespace umpath
