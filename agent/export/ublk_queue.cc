#include "agent/export/ublk_queue.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "agent/core/channel.h"
#include "agent/core/worker.h"

namespace umpath::ublk {

namespace {
constexpr uint32_t kPollBatch = 64;
}  // namespace

Queue::Queue(Options options) : options_(options), tags_(options.depth) {
  for (uint16_t i = 0; i < options_.depth; ++i) {
    tags_[i].queue = this;
    tags_[i].tag = i;
    tags_[i].req.user = &tags_[i];
    tags_[i].req.on_complete = &Queue::OnComplete;
    tags_[i].waiter.account = &account_;
    tags_[i].waiter.user = &tags_[i];
    tags_[i].waiter.ready = &Queue::OnBuffer;
  }
  ended_ = options_.depth;
  release_.reserve(options_.depth);
}

Queue::~Queue() { Close(); }

absl::Status Queue::Open(Worker& worker) {
  worker_ = &worker;
  const size_t bytes = (size_t{options_.depth} * sizeof(ublksrv_io_desc) + 4095) & ~size_t{4095};
  void* m = mmap(nullptr, bytes, PROT_READ, MAP_SHARED | MAP_POPULATE, options_.cdev_fd,
                 static_cast<off_t>(size_t{options_.q_id} * kMaxCmdBufBytes));
  if (m == MAP_FAILED) {
    return absl::InternalError(
        absl::StrCat("map the I/O descriptors of queue ", options_.q_id, ": ", std::strerror(errno)));
  }
  iods_ = static_cast<const ublksrv_io_desc*>(m);
  iods_bytes_ = bytes;
  // Twice the depth of completions: a tag's FETCH result and a late COMMIT error can
  // both be waiting.
  io_uring_params p{};
  // The driver hands requests over as task work on this thread. Cooperative: no
  // interrupt of a busy worker; the ring's flag tells Poll to run it, and a sleeping
  // worker is still woken.
  p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
            IORING_SETUP_SINGLE_ISSUER;
  p.cq_entries = 2u * options_.depth;
  if (options_.zero_copy) {
    // The passthrough commands that borrow the ring need 128-byte entries and post
    // 32-byte completions; a tag's passthrough completion comes before its commit.
    p.flags |= IORING_SETUP_SQE128 | IORING_SETUP_CQE32;
    p.cq_entries = 3u * options_.depth;
  }
  const int r = io_uring_queue_init_params(options_.depth, &ring_, &p);
  if (r < 0) {
    Close();
    return absl::InternalError(absl::StrCat("io_uring for queue ", options_.q_id, ": ", std::strerror(-r)));
  }
  ring_open_ = true;
  if (options_.zero_copy) {
    // AUTO_BUF_REG registers each request at its tag's index of this table.
    if (const int b = io_uring_register_buffers_sparse(&ring_, options_.depth); b < 0) {
      Close();
      return absl::InternalError(
          absl::StrCat("buffer table for queue ", options_.q_id, ": ", std::strerror(-b)));
    }
  }
  if (options_.pool != nullptr) options_.pool->Register(&account_);
  for (Tag& t : tags_) Command(t, kIoFetchReq, 0);
  ended_ = 0;
  const int s = io_uring_submit(&ring_);
  unsubmitted_ = 0;
  if (s < 0) {
    Close();
    return absl::InternalError(absl::StrCat("fetch on queue ", options_.q_id, ": ", std::strerror(-s)));
  }
  return absl::OkStatus();
}

void Queue::Close() {
  if (ring_open_) {
    io_uring_queue_exit(&ring_);
    ring_open_ = false;
    if (options_.pool != nullptr) {
      // The ring is gone, and with it whatever the driver still had to read.
      for (uint8_t* b : release_) options_.pool->Give(&account_, b);
      release_.clear();
      for (Tag& t : tags_) GiveBack(t);
      options_.pool->Unregister(&account_);
    }
  }
  if (iods_ != nullptr) {
    munmap(const_cast<ublksrv_io_desc*>(iods_), iods_bytes_);
    iods_ = nullptr;
  }
  ended_ = options_.depth;
}

io_uring_sqe* Queue::GetSqe() {
  // One command per tag at a time (a ublk command, or a passthrough borrowing the ring
  // while the tag is in the core), and the ring has a slot per tag: never full.
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    Submit();
    sqe = io_uring_get_sqe(&ring_);
  }
  if (sqe != nullptr) std::memset(sqe, 0, options_.zero_copy ? 2 * sizeof(*sqe) : sizeof(*sqe));
  return sqe;
}

void* Queue::BorrowSqe(IoRequest* req, FixedCompletionHandler* done) {
  Tag& t = *static_cast<Tag*>(req->user);
  io_uring_sqe* sqe = GetSqe();
  if (sqe == nullptr) return nullptr;
  sqe->user_data = kBorrowed | t.tag;
  t.borrower = done;
  ++unsubmitted_;
  return sqe;
}

void Queue::Command(Tag& t, uint32_t op, int result) {
  io_uring_sqe* sqe = GetSqe();
  if (sqe == nullptr) {  // cannot happen (the submit freed every slot); never hang on it
    errors_.fetch_add(1, std::memory_order_relaxed);
    t.state = TagState::kEnded;
    ++ended_;
    return;
  }
  // With the pool: no buffer for a fetch (the driver waits for NEED_GET_DATA before it
  // copies a write), the request's own for its data and its commit. USER_COPY: none
  // (the driver refuses one). Zero copy: with the fallback flag a failed registration
  // still delivers the request, marked, and the pool buffer serves it.
  const bool no_addr = options_.user_copy || (op == kIoFetchReq && options_.pool != nullptr);
  PrepIoCommand(sqe, options_.cdev_fd, op, options_.q_id, t.tag, result,
                no_addr ? 0 : reinterpret_cast<uint64_t>(BufferOf(t)), options_.zero_copy);
  t.state = op == kIoNeedGetData ? TagState::kGettingData
            : op == kIoFetchReq  ? TagState::kFetching
                                 : TagState::kCommitting;
  ++unsubmitted_;
}

void Queue::Submit() {
  const uint32_t n = unsubmitted_;
  const int s = io_uring_submit(&ring_);
  unsubmitted_ = 0;
  // The driver handles a command as it is submitted: a commit's read data has been
  // copied out of its buffer once the submit took it.
  if (s < 0 || static_cast<uint32_t>(s) < n || release_.empty()) return;
  for (uint8_t* b : release_) options_.pool->Give(&account_, b);
  release_.clear();
}

void Queue::GiveBack(Tag& t) {
  if (t.buffer == nullptr) return;
  options_.pool->Give(&account_, t.buffer);
  t.buffer = nullptr;
}

bool Queue::CopyData(const Tag& t, uint32_t bytes, bool to_driver) {
  // Synchronous, on the worker: the copy is the one the driver would otherwise make in
  // this thread's task work, plus one system call.
  const off_t at = static_cast<off_t>(UserCopyOffset(options_.q_id, t.tag));
  const ssize_t n = to_driver ? pwrite(options_.cdev_fd, t.buffer, bytes, at)
                              : pread(options_.cdev_fd, t.buffer, bytes, at);
  return n == static_cast<ssize_t>(bytes);
}

void Queue::Commit(Tag& t, int res) {
  Command(t, kIoCommitAndFetchReq, res);
  if (options_.user_copy) return GiveBack(t);  // the driver reads nothing of ours
  if (t.buffer != nullptr) {
    release_.push_back(t.buffer);  // at most one per tag: capacity reserved
    t.buffer = nullptr;
  }
}

uint32_t Queue::Poll(Worker& worker) {
  if (!ring_open_) return 0;
  uint32_t served = options_.pool != nullptr ? options_.pool->Serve() : 0;
  if (IO_URING_READ_ONCE(*ring_.sq.kflags) & IORING_SQ_TASKRUN) io_uring_get_events(&ring_);
  uint32_t n = 0;
  unsigned head;
  io_uring_cqe* cqe;
  // Handle a batch, then mark it seen: handling may complete requests at once and queue
  // commands, which never need completion slots.
  io_uring_for_each_cqe(&ring_, head, cqe) {
    const uint64_t tag = cqe->user_data & ~kBorrowed;
    if (tag < tags_.size() && (cqe->user_data & kBorrowed) != 0) {
      // A passthrough on a zero-copy request's buffer: its queue pair completes it.
      if (FixedCompletionHandler* b = tags_[tag].borrower) {
        tags_[tag].borrower = nullptr;
        b->OnFixedCompletion(&tags_[tag].req, cqe->res);
      }
    } else if (tag < tags_.size()) {
      Handle(worker, tags_[tag], cqe->res);
    }
    if (++n == kPollBatch) break;
  }
  if (n > 0) io_uring_cq_advance(&ring_, n);
  return n + served;
}

void Queue::Handle(Worker& worker, Tag& t, int res) {
  if (t.state == TagState::kEnded) return;
  const bool fetched = t.state == TagState::kFetching || t.state == TagState::kCommitting;
  if (res != UBLK_IO_RES_OK && !(res == UBLK_IO_RES_NEED_GET_DATA && fetched)) {
    // UBLK_IO_RES_ABORT: the device is stopping; anything else: the driver refused the
    // command. Either way this tag takes no more requests.
    GiveBack(t);
    t.state = TagState::kEnded;
    ++ended_;
    return;
  }
  if (holding_) return HoldTag(t);
  if (t.state == TagState::kGettingData) return Serve(worker, t);  // the write's data is in
  if (options_.user_copy) {
    const uint8_t op = iods_[t.tag].op_flags & 0xff;
    t.get_data = false;
    if ((op == kOpRead || op == kOpWrite || op == kOpDiscard) && !TakeBuffer(t)) return;
    return ServeUserData(worker, t);
  }
  if (options_.pool != nullptr) {
    const uint8_t op = iods_[t.tag].op_flags & 0xff;
    t.get_data = res == UBLK_IO_RES_NEED_GET_DATA;
    if (op == kOpWrite && !t.get_data) {  // its data went nowhere: never write garbage
      errors_.fetch_add(1, std::memory_order_relaxed);
      return Commit(t, -EIO);
    }
    if (t.get_data || op == kOpRead || op == kOpDiscard) {
      if (!TakeBuffer(t)) return;
      if (t.get_data) return Command(t, kIoNeedGetData, 0);
    }
  }
  Serve(worker, t);
}

bool Queue::TakeBuffer(Tag& t) {
  t.buffer = options_.pool->Take(&account_);
  if (t.buffer != nullptr) return true;
  t.state = TagState::kWaitBuffer;
  ++in_core_;  // ours until answered, like a request in the core
  options_.pool->Wait(&t.waiter);
  return false;
}

void Queue::OnBuffer(BufferPool::Waiter* w, uint8_t* buffer) {
  Tag& t = *static_cast<Tag*>(w->user);
  Queue& q = *t.queue;
  --q.in_core_;
  t.buffer = buffer;
  if (q.holding_) return q.HoldTag(t);
  if (t.get_data) return q.Command(t, kIoNeedGetData, 0);
  if (q.options_.user_copy) return q.ServeUserData(*q.worker_, t);
  q.Serve(*q.worker_, t);
}

void Queue::ServeUserData(Worker& worker, Tag& t) {
  const ublksrv_io_desc& iod = iods_[t.tag];
  const uint8_t op = iod.op_flags & 0xff;
  t.req.fixed = nullptr;
  if (options_.zero_copy && (op == kOpRead || op == kOpWrite) && (iod.op_flags & kIoFlagNeedRegBuf) == 0) {
    t.fixed = FixedBuffer{.ring = this, .index = t.tag, .stage = &Queue::Stage};
    t.req.fixed = &t.fixed;
    return Serve(worker, t);
  }
  ServeCopied(worker, t);
}

bool Queue::Stage(IoRequest* req) {
  Tag& t = *static_cast<Tag*>(req->user);
  const ublksrv_io_desc& iod = t.queue->iods_[t.tag];
  if ((iod.op_flags & 0xff) != kOpWrite) return true;  // a read's result is copied out at its end
  return t.queue->CopyData(t, req->data_len, false);
}

void Queue::ServeCopied(Worker& worker, Tag& t) {
  const ublksrv_io_desc& iod = iods_[t.tag];
  if ((iod.op_flags & 0xff) == kOpWrite) {
    const uint64_t bytes = uint64_t{iod.nr_sectors} * 512;
    if (bytes > options_.shape.buffer_bytes || !CopyData(t, static_cast<uint32_t>(bytes), false)) {
      errors_.fetch_add(1, std::memory_order_relaxed);
      return Commit(t, bytes > options_.shape.buffer_bytes ? -EINVAL : -EIO);
    }
  }
  Serve(worker, t);
}

void Queue::HoldTag(Tag& t) {
  GiveBack(t);
  t.state = TagState::kHeld;
  ++held_;
}

void Queue::Serve(Worker& worker, Tag& t) {
  requests_.fetch_add(1, std::memory_order_relaxed);
  const ublksrv_io_desc& iod = iods_[t.tag];
  const int bad = Translate(iod, options_.shape, BufferOf(t), &t.req);
  if (bad != 0) {
    errors_.fetch_add(1, std::memory_order_relaxed);
    return Commit(t, bad);
  }
  Channel* ch = worker.FindChannel(options_.head_uid);
  if (ch == nullptr) {  // the head is gone: the device is about to be
    errors_.fetch_add(1, std::memory_order_relaxed);
    return Commit(t, -EIO);
  }
  t.state = TagState::kInCore;
  ++in_core_;
  ch->Submit(&t.req);
}

void Queue::OnComplete(IoRequest* req, IoResult result) {
  Tag& t = *static_cast<Tag*>(req->user);
  Queue& q = *t.queue;
  --q.in_core_;
  if (q.holding_ && !result.ok()) {
    // Failed as the agent lets go of its controllers (fenced, their head gone, the
    // core shut down): the successor does it, and answers it.
    return q.HoldTag(t);
  }
  int res = ResultFor(q.iods_[t.tag], result);
  const bool in_our_buffer = t.req.fixed == nullptr || t.fixed.staged;
  if (q.options_.user_copy && in_our_buffer && res > 0 && (q.iods_[t.tag].op_flags & 0xff) == kOpRead &&
      !q.CopyData(t, static_cast<uint32_t>(res), true)) {
    res = -EIO;  // the data never reached the request: never report it read
  }
  if (res < 0) q.errors_.fetch_add(1, std::memory_order_relaxed);
  q.Commit(t, res);
}

uint32_t Queue::unanswered() const {
  uint32_t n = 0;
  for (const Tag& t : tags_) {
    n += t.state == TagState::kInCore || t.state == TagState::kWaitBuffer ||
         t.state == TagState::kGettingData;
  }
  return n;
}

void Queue::Flush() {
  if (unsubmitted_ > 0) Submit();
}

void Queue::Drain(Worker& worker) {
  if (!ring_open_) return;
  Flush();
  // Entering the ring runs the task work that posts the driver's cancellations.
  io_uring_get_events(&ring_);
  while (Poll(worker) > 0) {
  }
}

}  // namespace umpath::ublk
