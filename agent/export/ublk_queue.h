#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include <liburing.h>

#include "absl/status/status.h"
#include "agent/core/io_request.h"
#include "agent/core/io_source.h"
#include "agent/export/ublk_io.h"

namespace umpath::ublk {

// One hardware queue of a ublk device, served by one worker: its own io_uring on
// /dev/ublkcN, the driver's I/O descriptors mapped read-only, and one request and one
// buffer per tag, made up front. A request arrives as the completion of the tag's FETCH
// (or COMMIT_AND_FETCH) command, goes straight into the head's channel on this worker,
// and its result goes back with the tag's next COMMIT_AND_FETCH: nothing is allocated
// and no lock is taken per I/O.
//
// Threading: constructed anywhere; Open, Close and everything IoSource runs on the
// owning worker's thread (the driver binds a queue to the thread that fetched for it).
// The counters may be read from any thread.
class Queue final : public IoSource {
 public:
  struct Options {
    int cdev_fd = -1;
    uint16_t q_id = 0;
    uint16_t depth = 0;
    uint64_t head_uid = 0;
    IoShape shape;
    uint8_t* buffers = nullptr;  // depth x shape.buffer_bytes, DMA-able
  };
  explicit Queue(Options options);
  ~Queue();
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;

  // Worker thread: sets up the ring and the descriptor mapping and fetches every tag.
  absl::Status Open();
  // Worker thread: lets go of the ring (the driver cancels what is still fetched) and
  // the mapping. Idempotent.
  void Close();

  // IoSource.
  uint32_t Poll(Worker& worker) override;
  void Flush() override;
  int wake_fd() const override { return ring_.ring_fd; }

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

  uint64_t requests() const { return requests_.load(std::memory_order_relaxed); }
  uint64_t errors() const { return errors_.load(std::memory_order_relaxed); }

 private:
  enum class TagState : uint8_t { kFetching, kInCore, kCommitting, kHeld, kEnded };
  struct Tag {
    IoRequest req;
    Queue* queue = nullptr;
    uint16_t tag = 0;
    TagState state = TagState::kEnded;
  };
  static void OnComplete(IoRequest* req, IoResult result);
  void Handle(Worker& worker, Tag& t, int res);
  void Command(Tag& t, uint32_t op, int result);
  uint8_t* BufferOf(uint16_t tag) const {
    return options_.buffers + size_t{tag} * options_.shape.buffer_bytes;
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
  uint32_t held_ = 0;
  std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> errors_{0};
};

}  // namespace umpath::ublk
