#include "agent/vfio/io_queue.h"

#include <unistd.h>

#include <cstring>

#include "agent/nvme/io_command.h"

namespace umpath::vfio {

namespace {

using nvme::IoOpcode;
namespace sc = nvme::status_code;

// How often, at most, a poll that found nothing looks for commands past their deadline.
constexpr int64_t kDeadlineCheckNs = 50'000'000;

}  // namespace

uint32_t ListPagesPerCommand(uint32_t max_transfer, uint32_t page_size) {
  // The worst start is just past a page boundary: one more page spanned.
  return PrpListPagesNeeded(page_size - 4, max_transfer, page_size);
}

VfioQueuePair::VfioQueuePair(IoQueueOptions options, IoQueueMemory memory)
    : options_(std::move(options)),
      memory_(memory),
      sq_(memory.sq, options_.depth, memory.sq_doorbell),
      cq_(memory.cq, options_.depth, memory.cq_doorbell),
      commands_(options_.depth),
      free_slots_(options_.depth) {
  // The CQ must never overflow: at most depth - 1 commands outstanding, slots below that.
  for (uint16_t i = 0; i + 1 < options_.depth; ++i) FreeSlot(i);
  while ((1u << slot_bits_) < options_.depth) ++slot_bits_;
  slot_mask_ = static_cast<uint16_t>((1u << slot_bits_) - 1);
  gen_mask_ = static_cast<uint16_t>((1u << (16 - slot_bits_)) - 1);
}

VfioQueuePair::~VfioQueuePair() = default;

void VfioQueuePair::FailAtSubmit(IoRequest* req, nvme::Status status) {
  req->last_status = status;
  refused_.PushBack(req);
  ++in_flight_;
}

bool VfioQueuePair::BuildCommand(IoRequest* req, uint16_t slot, uint16_t cid,
                                 nvme::SubmissionEntry* sqe) {
  nvme::IoCommandWords w;
  const nvme::Status encoded =
      nvme::EncodeIo(IoCommandOf(*req), options_.max_transfer, &w);
  if (!encoded.ok()) {
    req->last_status = encoded;
    return false;
  }
  *sqe = nvme::SubmissionEntry{};
  sqe->opcode = w.opcode;
  sqe->cid = cid;
  sqe->nsid = w.nsid;
  sqe->cdw10 = w.cdw10;
  sqe->cdw11 = w.cdw11;
  sqe->cdw12 = w.cdw12;
  if (req->opcode == IoOpcode::kFlush || req->opcode == IoOpcode::kWriteZeroes) return true;
  req->last_status = nvme::Status::Make(sc::kInvalidField, /*dnr=*/true);
  uint64_t iova;
  if (options_.registry == nullptr ||
      !options_.registry->Translate(req->data, req->data_len, &iova)) {
    return false;  // not DMA memory this agent registered: never handed to a device
  }
  if (req->opcode == IoOpcode::kDatasetManagement) {
    // One page of ranges at most (256 of them): PRP1 alone carries it.
    if ((iova & (options_.page_size - 1)) + req->data_len > options_.page_size) return false;
    sqe->prp1 = iova;
    return true;
  }
  if ((reinterpret_cast<uintptr_t>(req->data) & 3) != 0) return false;  // PRPs: dword aligned
  // This command's own list pages, contiguous after its slot's.
  PrpListPage pages[8];
  const uint32_t n = options_.list_pages_per_command < 8 ? options_.list_pages_per_command : 8;
  for (uint32_t i = 0; i < n; ++i) {
    const uint64_t off =
        (static_cast<uint64_t>(slot) * options_.list_pages_per_command + i) * options_.page_size;
    pages[i].iova = memory_.prp_lists_iova + off;
    pages[i].host = reinterpret_cast<uint64_t*>(memory_.prp_lists + off);
  }
  const Prps prps = BuildPrps(iova, req->data_len, options_.page_size, pages, n);
  if (prps.error != PrpError::kNone) return false;
  sqe->prp1 = prps.prp1;
  sqe->prp2 = prps.prp2;
  return true;
}

SubmitResult VfioQueuePair::Submit(IoRequest* req) {
  if (gone_.load(std::memory_order_relaxed)) return SubmitResult::kGone;
  if (!accepting_ || free_count_ == 0 || sq_.full()) return SubmitResult::kBusy;
  const uint16_t slot = free_slots_[free_head_];
  Command& c = commands_[slot];
  const uint16_t gen = static_cast<uint16_t>((c.gen + 1) & gen_mask_);
  const uint16_t cid = MakeCid(slot, gen);
  nvme::SubmissionEntry sqe;
  if (!BuildCommand(req, slot, cid, &sqe)) {
    FailAtSubmit(req, req->last_status);
    return SubmitResult::kOk;
  }
  free_head_ = (free_head_ + 1) % free_slots_.size();
  --free_count_;
  c.req = req;
  c.gen = gen;
  c.cid = cid;
  c.deadline = options_.clock->MonotonicNanos() + options_.timeout_ns;
  req->backend_tag = cid;
  sq_.Push(sqe);
  ++in_flight_;
  return SubmitResult::kOk;
}

void VfioQueuePair::Ring() { sq_.Ring(); }

uint32_t VfioQueuePair::Reap(CompletionSink& sink, uint32_t max) {
  uint32_t n = 0;
  nvme::CompletionEntry cqe;
  while (n < max && cq_.Peek(&cqe)) {
    cq_.Pop();
    sq_.SetHead(cqe.sq_head);
    const uint16_t slot = cqe.cid & slot_mask_;
    if (slot >= commands_.size() || commands_[slot].req == nullptr ||
        commands_[slot].cid != cqe.cid) {
      stray_.fetch_add(1, std::memory_order_relaxed);  // a duplicate, or a late one
      continue;
    }
    IoRequest* req = commands_[slot].req;
    commands_[slot].req = nullptr;
    FreeSlot(slot);
    --in_flight_;
    ++completions_;
    ++n;
    sink.OnCompletion(req, nvme::Status::FromCqe(cqe));
  }
  cq_.Ring();
  return n;
}

uint32_t VfioQueuePair::Poll(CompletionSink& sink, uint32_t max) {
  uint32_t n = 0;
  while (n < max && !refused_.empty()) {
    IoRequest* req = refused_.PopFront();
    --in_flight_;
    ++n;
    sink.OnCompletion(req, req->last_status);
  }
  n += Reap(sink, max - n);
  // Under steady load polls rarely come up empty: look at deadlines now and then anyway.
  if (in_flight_ > 0 && (++polls_ & 255) == 0) CheckDeadlines();
  if (n > 0) {
    empty_polls_ = 0;
    return n;
  }
  // Nothing, several times in a row: the worker may go to sleep soon. Reset the interrupt
  // eventfd (a system call, so not on every gap of a busy queue), then look once more,
  // so a completion that landed between the first look and the reset is not slept
  // through.
  if (options_.wake_fd >= 0 && ++empty_polls_ >= kMaxEmptyPollsBeforeWakeReset) {
    uint64_t v;
    [[maybe_unused]] ssize_t r = read(options_.wake_fd, &v, sizeof v);
    n = Reap(sink, max);
    if (n > 0) {
      empty_polls_ = 0;
      return n;
    }
  }
  if (in_flight_ > 0) CheckDeadlines();
  return 0;
}

void VfioQueuePair::CheckDeadlines() {
  const int64_t now = options_.clock->MonotonicNanos();
  if (now < next_deadline_check_) return;
  next_deadline_check_ = now + kDeadlineCheckNs;
  bool expired = false;
  for (Command& c : commands_) {
    if (c.req == nullptr) continue;
    if (now >= c.deadline) expired = true;
  }
  if (expired && !timed_out_.exchange(true, std::memory_order_relaxed) && options_.on_timeout) {
    options_.on_timeout();
  }
}

void VfioQueuePair::AbortAll(CompletionSink& sink) {
  const nvme::Status aborted = nvme::Status::Make(sc::kHostAbortedCommand);
  while (!refused_.empty()) {
    IoRequest* req = refused_.PopFront();
    --in_flight_;
    sink.OnCompletion(req, req->last_status);
  }
  for (size_t slot = 0; slot < commands_.size(); ++slot) {
    IoRequest* req = commands_[slot].req;
    if (req == nullptr) continue;
    commands_[slot].req = nullptr;
    FreeSlot(static_cast<uint16_t>(slot));
    --in_flight_;
    sink.OnCompletion(req, aborted);
  }
}

void VfioQueuePair::ResetRings() {
  for (uint16_t i = 0; i < options_.depth; ++i) memory_.cq[i].status = 0;  // phase tags
  sq_.Reset();
  cq_.Reset();
  timed_out_.store(false, std::memory_order_relaxed);
  next_deadline_check_ = 0;
}

}  // namespace umpath::vfio
