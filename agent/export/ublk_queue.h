#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include <liburing.h>

#include "absl/status/status.h"
#include "agent/core/fixed_buffer.h"
#include "agent/core/io_request.h"
#include "agent/core/io_source.h"
#include "agent/export/buffer_pool.h"
#include "agent/export/ublk_io.h"

namespace umpath::ublk {

// One hardware queue of a ublk device, served by one worker: its own io_uring on
// /dev/ublkcN, the driver's I/O descriptors mapped read-only, and one request per tag,
// made up front. A request arrives as the completion of the tag's FETCH (or
// COMMIT_AND_FETCH) command, goes straight into the head's channel on this worker, and
// its result goes back with the tag's next COMMIT_AND_FETCH: nothing is allocated and no
// lock is taken per I/O.
//
// Buffers: a device made with kFlagNeedGetData takes them from the worker's BufferPool
// only while a request is served (a write's data is copied in when the queue names a
// buffer, a read's out at its commit); one without (an earlier agent's) has a buffer per
// tag, `buffers`, for good.
//
// Threading: constructed anywhere; Open, Close and everything IoSource runs on the
// owning worker's thread (the driver binds a queue to the thread that fetched for it).
// The counters may be read from any thread.
class Queue final : public IoSource, public FixedBufferRing {
 public:
  struct Options {
    int cdev_fd = -1;
    uint16_t q_id = 0;
    uint16_t depth = 0;
    uint64_t head_uid = 0;
    IoShape shape;
    // The worker's pool (the device has kFlagNeedGetData), or else the tags' own
    // buffers: depth x shape.buffer_bytes, DMA-able.
    BufferPool* pool = nullptr;
    uint8_t* buffers = nullptr;
    // With the pool: the device was made with USER_COPY, so the queue copies a write's
    // data in (pread) before serving it and a read's out (pwrite) before its commit;
    // otherwise the driver does (NEED_GET_DATA).
    bool user_copy = false;
    // With user_copy: the device was made with AUTO_BUF_REG too. Each read and write
    // arrives as fixed buffer `tag` of this queue's ring (SQE128 and CQE32, for the
    // passthrough commands that borrow it), and goes to the core as IoRequest::fixed;
    // the pool buffer is used only if the request is staged for a path that cannot
    // name it (or the driver could not register it: UBLK_IO_F_NEED_REG_BUF).
    bool zero_copy = false;
  };
  explicit Queue(Options options);
  ~Queue();
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;

  // Worker thread: sets up the ring and the descriptor mapping and fetches every tag.
  absl::Status Open(Worker& worker);
  // Worker thread: lets go of the ring (the driver cancels what is still fetched) and
  // the mapping. Idempotent.
  void Close();

  // IoSource.
  uint32_t Poll(Worker& worker) override;
  void Flush() override;
  int wake_fd() const override { return ring_.ring_fd; }
  // FixedBufferRing: a passthrough on a zero-copy request's buffer.
  void* BorrowSqe(IoRequest* req, FixedCompletionHandler* done) override;

  // Worker thread: every tag has ended (the device was stopped) and none is in the core.
  bool drained() const { return ended_ == options_.depth; }
  // Worker thread: requests handed to the core and not yet back.
  uint32_t in_core() const { return in_core_; }
  // Worker thread: runs the ring's pending work so ended tags show up, then polls.
  void Drain(Worker& worker);
  // Worker thread: the agent hands the device over to its successor. From now on a new
  // request, and one that fails (as the agent lets go of its controllers, the head may
  // go and the core stops), is held: never answered, so the kernel gives it to the next
  // agent when that one takes the device over (user recovery reissues what its old
  // server had taken). Requests that succeed are answered as usual.
  void Hold() { holding_ = true; }
  uint32_t held() const { return held_; }
  // Worker thread: requests taken and not yet answered (in the core, waiting for a
  // buffer, or for a write's data): what a quiesced device's hand-over waits for.
  uint32_t unanswered() const;

  uint64_t requests() const { return requests_.load(std::memory_order_relaxed); }
  uint64_t errors() const { return errors_.load(std::memory_order_relaxed); }

 private:
  enum class TagState : uint8_t {
    kFetching,     // FETCH or COMMIT_AND_FETCH with the driver
    kWaitBuffer,   // arrived, waiting in the pool's line
    kGettingData,  // NEED_GET_DATA with the driver (a write's data being copied in)
    kInCore,
    kCommitting,   // a COMMIT_AND_FETCH queued, not yet submitted
    kHeld,
    kEnded,
  };
  struct Tag {
    IoRequest req;
    BufferPool::Waiter waiter;
    Queue* queue = nullptr;
    uint8_t* buffer = nullptr;  // from the pool, while served
    uint16_t tag = 0;
    TagState state = TagState::kEnded;
    bool get_data = false;      // a write whose data is still with the driver
    FixedBuffer fixed;          // zero copy: the request's pages, buffer `tag` of ring_
    FixedCompletionHandler* borrower = nullptr;  // whose passthrough is on ring_ for it
  };
  // user_data of a borrowed SQE: the tag, with this bit (a ublk command's is the tag).
  static constexpr uint64_t kBorrowed = uint64_t{1} << 63;
  static bool Stage(IoRequest* req);
  static void OnComplete(IoRequest* req, IoResult result);
  static void OnBuffer(BufferPool::Waiter* w, uint8_t* buffer);
  void Handle(Worker& worker, Tag& t, int res);
  // Takes the request into the core (or answers it at once).
  void Serve(Worker& worker, Tag& t);
  // USER_COPY: a write's data copied in first.
  void ServeCopied(Worker& worker, Tag& t);
  // USER_COPY or zero copy, once the tag has its pool buffer.
  void ServeUserData(Worker& worker, Tag& t);
  io_uring_sqe* GetSqe();
  void HoldTag(Tag& t);
  void Command(Tag& t, uint32_t op, int result);
  // The commit of `res`; a pool buffer goes back once the driver has the commit.
  void Commit(Tag& t, int res);
  // io_uring_submit, then the buffers of what it carried go back to the pool.
  void Submit();
  void GiveBack(Tag& t);
  // A pool buffer for the tag; false when there is none and the tag waits in the pool's
  // line (OnBuffer carries on).
  bool TakeBuffer(Tag& t);
  // USER_COPY: moves the request's data between the driver and the tag's buffer
  // (`to_driver`: a read's result); false when fewer than `bytes` moved.
  bool CopyData(const Tag& t, uint32_t bytes, bool to_driver);
  uint8_t* BufferOf(const Tag& t) const {
    return options_.pool != nullptr ? t.buffer
                                    : options_.buffers + size_t{t.tag} * options_.shape.buffer_bytes;
  }

  const Options options_;
  io_uring ring_{};
  bool ring_open_ = false;
  const ublksrv_io_desc* iods_ = nullptr;
  size_t iods_bytes_ = 0;
  std::vector<Tag> tags_;
  uint32_t unsubmitted_ = 0;
  uint32_t ended_ = 0;
  uint32_t in_core_ = 0;
  bool holding_ = false;
  Worker* worker_ = nullptr;  // set by Open (a pool buffer may arrive from another queue's poll)
  BufferPool::Account account_;
  std::vector<uint8_t*> release_;  // given back after the next submit (capacity: depth)
  uint32_t held_ = 0;
  std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> errors_{0};
};

}  // namespace umpath::ublk
