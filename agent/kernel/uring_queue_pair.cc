#include "agent/kernel/uring_queue_pair.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "agent/nvme/io_command.h"

namespace umpath::kernel {

namespace {

using nvme::IoOpcode;
namespace sc = nvme::status_code;

}  // namespace

void ControllerSignals::Notify() const {
  if (notify_fd < 0) return;
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(notify_fd, &one, sizeof one);
}

nvme::Status StatusFromResult(int32_t res) {
  if (res >= 0) return nvme::Status::FromCompletionField(static_cast<uint16_t>(res));
  switch (-res) {
    case EINVAL:
    case EFAULT:
    case EOPNOTSUPP:
    case E2BIG:
    case ENOMEM:
    case EBADF:
    case EACCES:
    case EPERM:
      return nvme::Status::Make(sc::kInvalidField, /*dnr=*/true);
    default:
      return nvme::Status::Make(sc::kHostPathError);
  }
}

bool IsHostPathStatus(nvme::Status s) {
  return s.code() == sc::kHostPathError || s.code() == sc::kHostAbortedCommand ||
         s.code() == sc::kInternalPathError;
}

bool BuildUringCommand(const IoRequest& req, uint32_t max_transfer, nvme_uring_cmd* cmd) {
  std::memset(cmd, 0, sizeof *cmd);
  nvme::IoCommandWords w;
  if (!nvme::EncodeIo(IoCommandOf(req), max_transfer, &w).ok()) return false;
  cmd->opcode = w.opcode;
  cmd->nsid = w.nsid;
  cmd->cdw10 = w.cdw10;
  cmd->cdw11 = w.cdw11;
  cmd->cdw12 = w.cdw12;
  if (req.opcode != IoOpcode::kFlush && req.opcode != IoOpcode::kWriteZeroes) {
    cmd->addr = reinterpret_cast<uintptr_t>(req.data);
    cmd->data_len = req.data_len;
  }
  return true;
}

void PrepPassthrough(io_uring_sqe* sqe, int fd, nvme_uring_cmd cmd, int fixed_index) {
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = fd;
  sqe->cmd_op = NVME_URING_CMD_IO;
  if (fixed_index >= 0) {
    sqe->uring_cmd_flags = IORING_URING_CMD_FIXED;
    sqe->buf_index = static_cast<uint16_t>(fixed_index);
    if (cmd.data_len != 0) cmd.addr = 0;
  }
  static_assert(sizeof(nvme_uring_cmd) <= 80, "fits the SQE128 command area");
  std::memcpy(sqe->cmd, &cmd, sizeof cmd);
}

absl::StatusOr<std::unique_ptr<UringQueuePair>> UringQueuePair::Create(UringQueueOptions options) {
  if (options.depth < 1 || options.depth > 4096) {
    return absl::InvalidArgumentError("io_uring queue depth must be 1..4096");
  }
  if (!options.signals) return absl::InvalidArgumentError("no controller signals");
  const int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd < 0) return absl::ErrnoToStatus(errno, "eventfd");
  std::unique_ptr<UringQueuePair> qp(new UringQueuePair(std::move(options), efd));
  io_uring_params p{};
  // 128-byte SQEs carry the NVMe command; 32-byte CQEs its result (NVMe passthrough).
  p.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQE32 | IORING_SETUP_CQSIZE;
  p.cq_entries = qp->options_.depth * 2;
  if (int r = io_uring_queue_init_params(qp->options_.depth, &qp->ring_, &p); r < 0) {
    return absl::ErrnoToStatus(-r, "io_uring_queue_init (SQE128 | CQE32)");
  }
  qp->ring_ready_ = true;
  if (int r = io_uring_register_eventfd(&qp->ring_, efd); r < 0) {
    return absl::ErrnoToStatus(-r, "io_uring_register_eventfd");
  }
  return qp;
}

UringQueuePair::UringQueuePair(UringQueueOptions options, int event_fd)
    : options_(std::move(options)),
      event_fd_(event_fd),
      slots_(options_.depth, nullptr),
      gens_(options_.depth, 0),
      done_queued_(options_.depth, 0) {
  free_tags_.reserve(options_.depth);
  for (uint32_t i = options_.depth; i > 0; --i) free_tags_.push_back(i - 1);
}

UringQueuePair::~UringQueuePair() {
  if (ring_ready_) io_uring_queue_exit(&ring_);
  close(event_fd_);
}

void UringQueuePair::AddNamespace(uint32_t nsid, int fd) {
  for (auto& [n, f] : options_.namespaces) {
    if (n == nsid) {
      f = fd;
      return;
    }
  }
  options_.namespaces.emplace_back(nsid, fd);
}

int UringQueuePair::FdFor(uint32_t nsid) const {
  for (const auto& [n, fd] : options_.namespaces) {
    if (n == nsid) return fd;
  }
  return -1;
}

SubmitResult UringQueuePair::Submit(IoRequest* req) {
  const ControllerSignals& sig = *options_.signals;
  if (sig.draining.load(std::memory_order_relaxed)) return SubmitResult::kGone;
  if (sig.suspect.load(std::memory_order_relaxed) || free_tags_.empty()) return SubmitResult::kBusy;
  const int fd = FdFor(req->nsid);
  nvme_uring_cmd cmd;
  if (fd < 0 || !BuildUringCommand(*req, options_.max_transfer, &cmd)) {
    req->last_status = nvme::Status::Make(fd < 0 ? sc::kInvalidNamespace : sc::kInvalidField,
                                          /*dnr=*/true);
    refused_.PushBack(req);
    ++refused_count_;
    SetInFlight(in_flight_ + 1);
    return SubmitResult::kOk;
  }
  // Zero copy: the buffer is only in the frontend's ring's table, so is the command.
  const bool borrow = req->fixed != nullptr && !req->fixed->staged;
  io_uring_sqe* sqe = borrow ? static_cast<io_uring_sqe*>(req->fixed->ring->BorrowSqe(req, this))
                             : io_uring_get_sqe(&ring_);
  if (sqe == nullptr) return SubmitResult::kBusy;
  const uint32_t tag = free_tags_.back();
  free_tags_.pop_back();
  slots_[tag] = req;
  const uint64_t user_data = tag | uint64_t{++gens_[tag]} << 32;
  req->backend_tag = user_data;
  if (!borrow) {
    std::memset(sqe, 0, 2 * sizeof(io_uring_sqe));  // SQE128: two slots' worth
    sqe->user_data = user_data;
    unsubmitted_ = true;
  }
  PrepPassthrough(sqe, fd, cmd, borrow ? req->fixed->index : -1);
  SetInFlight(in_flight_ + 1);
  return SubmitResult::kOk;
}

void UringQueuePair::Ring() {
  if (!unsubmitted_) return;
  // One system call per batch; EINTR and EAGAIN/EBUSY leave the entries in the ring
  // for the next call.
  const int r = io_uring_submit(&ring_);
  if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) ++ring_errors_;
  unsubmitted_ = r < 0 || io_uring_sq_ready(&ring_) > 0;
}

void UringQueuePair::Complete(CompletionSink& sink, uint32_t tag, nvme::Status status) {
  IoRequest* req = slots_[tag];
  slots_[tag] = nullptr;
  free_tags_.push_back(tag);
  SetInFlight(in_flight_ - 1);
  if (IsHostPathStatus(status)) {
    ControllerSignals& sig = *options_.signals;
    if (!sig.suspect.exchange(true, std::memory_order_relaxed)) sig.Notify();
  }
  sink.OnCompletion(req, status);
}

void UringQueuePair::OnFixedCompletion(IoRequest* req, int32_t res) {
  const uint64_t tag = req->backend_tag & 0xffffffffu;
  const uint32_t gen = static_cast<uint32_t>(req->backend_tag >> 32);
  if (tag >= slots_.size() || slots_[tag] != req || gens_[tag] != gen || done_queued_[tag]) {
    stray_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  done_queued_[tag] = 1;
  req->last_status = StatusFromResult(res);
  borrowed_done_.PushBack(req);
}

uint32_t UringQueuePair::Reap(CompletionSink& sink, uint32_t max) {
  uint32_t n = 0;
  while (n < max && !borrowed_done_.empty()) {
    IoRequest* req = borrowed_done_.PopFront();
    const uint32_t tag = static_cast<uint32_t>(req->backend_tag & 0xffffffffu);
    done_queued_[tag] = 0;
    ++n;
    Complete(sink, tag, req->last_status);
  }
  while (n < max && !refused_.empty()) {
    IoRequest* req = refused_.PopFront();
    --refused_count_;
    SetInFlight(in_flight_ - 1);
    ++n;
    sink.OnCompletion(req, req->last_status);
  }
  while (n < max) {
    io_uring_cqe* cqe = nullptr;
    if (io_uring_peek_cqe(&ring_, &cqe) != 0 || cqe == nullptr) break;
    const uint64_t tag = cqe->user_data & 0xffffffffu;
    const uint32_t gen = static_cast<uint32_t>(cqe->user_data >> 32);
    const int32_t res = cqe->res;
    io_uring_cqe_seen(&ring_, cqe);
    if (tag >= slots_.size() || slots_[tag] == nullptr || gens_[tag] != gen) {
      stray_.fetch_add(1, std::memory_order_relaxed);  // a duplicate, or a late one
      continue;
    }
    ++n;
    Complete(sink, static_cast<uint32_t>(tag), StatusFromResult(res));
  }
  return n;
}

uint32_t UringQueuePair::Poll(CompletionSink& sink, uint32_t max) {
  uint32_t n = Reap(sink, max);
  if (n > 0) {
    empty_polls_ = 0;
    return n;
  }
  // As the vfio queue: reset the eventfd only after several empty polls in a row, then
  // look once more so a completion posted in between is not slept through.
  if (++empty_polls_ >= kMaxEmptyPollsBeforeWakeReset) {
    uint64_t v;
    [[maybe_unused]] ssize_t r = read(event_fd_, &v, sizeof v);
    n = Reap(sink, max);
    if (n > 0) empty_polls_ = 0;
  }
  return n;
}

bool UringQueuePair::PostNop(uint64_t user_data) {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) return false;
  std::memset(sqe, 0, 2 * sizeof(io_uring_sqe));
  io_uring_prep_nop(sqe);
  sqe->user_data = user_data;
  return io_uring_submit(&ring_) >= 0;
}

void UringQueuePair::AbortAll(CompletionSink& sink) {
  // Placed but not yet submitted: the kernel takes them now and fails or runs them; a
  // command is never taken back from the ring behind the kernel's back.
  Ring();
  Reap(sink, UINT32_MAX);
}

}  // namespace umpath::kernel
