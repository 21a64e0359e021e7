#pragma once

// One NVMe I/O queue pair driven from a worker: the core's QueuePair over an SQ/CQ in
// DMA memory (SPDK's nvme_pcie_qpair, libvfn's nvme_sq/nvme_cq).
//
// Read, Write, Flush and Write Zeroes; data described by PRPs built from registered
// buffers (DmaRegistry), each command's PRP list pages preallocated with its CID;
// completions reaped by phase tag, one CQ doorbell per reaped batch, one SQ doorbell
// per submitted batch (Ring). Every command carries a deadline: a command past it marks
// the queue timed out and tells the controller's owner, who resets the controller; the
// commands come back through AbortAll after the controller is disabled (never before:
// the device could still write their buffers).
//
// Threading: the owning worker, except `gone` (set by the control thread when the
// controller is lost) and the timeout notice (called on the worker thread; it must only
// signal). Hot path: no lock, no allocation, no system call except resetting the MSI-X
// eventfd once polls keep finding nothing (the worker is about to sleep).

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "agent/core/clock.h"
#include "agent/core/queue_pair.h"
#include "agent/vfio/dma_registry.h"
#include "agent/vfio/prp.h"
#include "agent/vfio/queue.h"

namespace umpath::vfio {

// Where one I/O queue pair lives. Built by VfioController from one DMA buffer; unit
// tests build it from plain memory and play the controller themselves.
struct IoQueueMemory {
  nvme::SubmissionEntry* sq = nullptr;
  volatile nvme::CompletionEntry* cq = nullptr;
  // depth * list_pages_per_command pages of page_size bytes, and their IOVA.
  uint8_t* prp_lists = nullptr;
  uint64_t prp_lists_iova = 0;
  volatile uint32_t* sq_doorbell = nullptr;
  volatile uint32_t* cq_doorbell = nullptr;
};

struct IoQueueOptions {
  uint16_t qid = 1;
  uint16_t depth = 128;          // entries in each ring; depth - 1 commands in flight
  uint32_t page_size = 4096;     // CC.MPS
  uint32_t max_transfer = 0;     // bytes (MDTS); larger commands fail with Invalid Field
  uint32_t list_pages_per_command = 1;
  int64_t timeout_ns = 30'000'000'000;  // the kernel's default io_timeout
  const Clock* clock = SystemClock::Get();
  const DmaRegistry* registry = nullptr;
  int wake_fd = -1;                   // the queue's MSI-X eventfd; -1: poll only
  std::function<void()> on_timeout;   // worker thread; must only signal
};

// The PRP list pages each command needs for transfers up to `max_transfer` bytes at any
// dword-aligned start.
uint32_t ListPagesPerCommand(uint32_t max_transfer, uint32_t page_size);

class VfioQueuePair final : public QueuePair {
 public:
  VfioQueuePair(IoQueueOptions options, IoQueueMemory memory);
  ~VfioQueuePair() override;

  SubmitResult Submit(IoRequest* req) override;
  void Ring() override;
  uint32_t Poll(CompletionSink& sink, uint32_t max) override;
  void AbortAll(CompletionSink& sink) override;
  uint32_t outstanding() const override { return in_flight_; }
  int wake_fd() const override { return options_.wake_fd; }

  // Worker thread, while the controller is disabled (reset): forget the rings' state so
  // the queue can be created again on the same memory. Call after AbortAll.
  void ResetRings();
  // Where the rings are: the SQ's tail, the CQ's head and phase. With nothing in flight
  // (a hand-over), that is all another process needs to go on with the queue.
  struct Positions {
    uint16_t sq_tail = 0;
    uint16_t cq_head = 0;
    bool cq_phase = true;
  };
  Positions positions() const { return {sq_.tail(), cq_.head(), cq_.phase()}; }
  // Before first use, for a queue another process drove and left empty.
  void RestorePositions(const Positions& p) {
    sq_.Restore(p.sq_tail);
    cq_.Restore(p.cq_head, p.cq_phase);
  }
  // While false, Submit answers kBusy (a reset is under way). Worker thread.
  void set_accepting(bool accepting) { accepting_ = accepting; }

  // Any thread: the controller is gone; Submit answers kGone from now on.
  void MarkGone() { gone_.store(true, std::memory_order_relaxed); }
  // Any thread: a command passed its deadline since the last reset.
  bool timed_out() const { return timed_out_.load(std::memory_order_relaxed); }

  uint64_t stray_completions() const override {
    return stray_.load(std::memory_order_relaxed);
  }
  // The command identifier of slot `slot` at generation `gen` (tests play the device).
  uint16_t MakeCid(uint16_t slot, uint16_t gen) const {
    return static_cast<uint16_t>(slot | (gen & gen_mask_) << slot_bits_);
  }

  uint16_t qid() const { return options_.qid; }
  uint64_t doorbell_writes() const { return sq_.doorbell_writes(); }
  uint64_t completions() const { return completions_; }

 private:
  // A command identifier is a slot (low bits) and that slot's generation (the bits
  // above), bumped on every use: a completion for a slot not in flight, or of an
  // earlier use of it, is dropped and counted (SEMANTICS "Fencing"), never taken for the
  // command that holds the slot now. Slots are reused oldest first, so a late
  // completion meets a wrong generation as late as possible (as the kernel's genctr).
  struct Command {
    IoRequest* req = nullptr;
    int64_t deadline = 0;
    uint16_t cid = 0;  // slot | generation << slot_bits_, while in flight
    uint16_t gen = 0;  // the last generation used
  };
  bool BuildCommand(IoRequest* req, uint16_t slot, uint16_t cid, nvme::SubmissionEntry* sqe);
  void FreeSlot(uint16_t slot) {
    free_slots_[(free_head_ + free_count_) % free_slots_.size()] = slot;
    ++free_count_;
  }
  void FailAtSubmit(IoRequest* req, nvme::Status status);
  void CheckDeadlines();
  uint32_t Reap(CompletionSink& sink, uint32_t max);

  const IoQueueOptions options_;
  const IoQueueMemory memory_;
  SubmissionRing sq_;
  CompletionRing cq_;
  std::vector<Command> commands_;  // by slot
  std::vector<uint16_t> free_slots_;  // a ring: free_count_ slots from free_head_
  size_t free_head_ = 0, free_count_ = 0;
  uint16_t slot_bits_ = 0, slot_mask_ = 0, gen_mask_ = 0;
  std::atomic<uint64_t> stray_{0};
  uint32_t in_flight_ = 0;
  // Commands refused before reaching the device (bad buffer, too large): completed with
  // their status on the next poll, so Submit never calls back into the channel.
  IoList refused_;
  bool accepting_ = true;
  std::atomic<bool> gone_{false};
  std::atomic<bool> timed_out_{false};
  int64_t next_deadline_check_ = 0;
  uint32_t polls_ = 0;
  int empty_polls_ = 0;  // in a row
  uint64_t completions_ = 0;
};

}  // namespace umpath::vfio
