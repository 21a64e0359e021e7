#pragma once

// One NVMe submission/completion queue pair as the host sees it: rings in DMA memory,
// tail and head indices, doorbells in BAR0 (libvfn's nvme_sq/nvme_cq, SPDK's qpair).
//
// Threading: owned by one worker (or the admin path under the control lock); nothing
// here is shared. Hot path: no allocation, no lock.

#include <atomic>
#include <cstdint>

#include "agent/nvme/wire.h"

namespace umpath::vfio {

class SubmissionRing {
 public:
  // `entries` holds `depth` SQEs; `doorbell` is the queue's SQ tail doorbell in BAR0.
  SubmissionRing(nvme::SubmissionEntry* entries, uint16_t depth, volatile uint32_t* doorbell)
      : entries_(entries), depth_(depth), doorbell_(doorbell) {}

  // One slot is always left empty (full is tail + 1 == head).
  bool full() const { return static_cast<uint16_t>((tail_ + 1) % depth_) == head_; }
  uint16_t free_slots() const {
    return static_cast<uint16_t>((head_ + depth_ - tail_ - 1) % depth_);
  }
  // Copies the entry in; false when full. The doorbell is not written.
  bool Push(const nvme::SubmissionEntry& sqe) {
    if (full()) return false;
    entries_[tail_] = sqe;
    tail_ = static_cast<uint16_t>((tail_ + 1) % depth_);
    return true;
  }
  // One doorbell write for everything pushed since the last one.
  void Ring() {
    if (tail_ == rung_) return;
    // Do not let the doorbell store pass the stores of the queue entries: the controller
    // reads the entries as soon as it sees the new tail.
    std::atomic_thread_fence(std::memory_order_release);
    *doorbell_ = tail_;
    rung_ = tail_;
    ++doorbell_writes_;
  }
  // From each completion: how far the controller has consumed the queue (CQE SQHD).
  void SetHead(uint16_t sq_head) {
    if (sq_head < depth_) head_ = sq_head;
  }
  uint16_t tail() const { return tail_; }
  uint64_t doorbell_writes() const { return doorbell_writes_; }
  // The queue was deleted or the controller disabled: start over at slot 0.
  void Reset() { tail_ = head_ = rung_ = 0; }
  // An empty queue another process drove (a hand-over): it left off at `tail`.
  void Restore(uint16_t tail) { tail_ = head_ = rung_ = tail < depth_ ? tail : 0; }

 private:
  nvme::SubmissionEntry* const entries_;
  const uint16_t depth_;
  volatile uint32_t* const doorbell_;
  uint16_t tail_ = 0, head_ = 0, rung_ = 0;
  uint64_t doorbell_writes_ = 0;
};

class CompletionRing {
 public:
  CompletionRing(volatile nvme::CompletionEntry* entries, uint16_t depth,
                 volatile uint32_t* doorbell)
      : entries_(entries), depth_(depth), doorbell_(doorbell) {}

  // The next completion if the controller has posted it (its phase tag matches ours),
  // copied out; false otherwise.
  bool Peek(nvme::CompletionEntry* out) const {
    const volatile nvme::CompletionEntry& e = entries_[head_];
    if (((e.status & 1) != 0) != phase_) return false;
    // Read the entry only after its phase tag said it is complete.
    std::atomic_thread_fence(std::memory_order_acquire);
    out->dw0 = e.dw0;
    out->dw1 = e.dw1;
    out->sq_head = e.sq_head;
    out->sq_id = e.sq_id;
    out->cid = e.cid;
    out->status = e.status;
    return true;
  }
  // Consumes the peeked entry; the phase flips when the head wraps.
  void Pop() {
    if (++head_ == depth_) {
      head_ = 0;
      phase_ = !phase_;
    }
    ++unrung_;
  }
  // Tells the controller the slots are free again: one write per reaped batch.
  void Ring() {
    if (unrung_ == 0) return;
    *doorbell_ = head_;
    unrung_ = 0;
  }
  uint16_t head() const { return head_; }
  bool phase() const { return phase_; }
  // A queue another process drove (a hand-over): its next entry is at `head`, of `phase`.
  void Restore(uint16_t head, bool phase) {
    head_ = head < depth_ ? head : 0;
    phase_ = phase;
    unrung_ = 0;
  }
  // The queue was deleted or the controller disabled (its entries zeroed by the caller).
  void Reset() {
    head_ = 0;
    phase_ = true;
    unrung_ = 0;
  }

 private:
  volatile nvme::CompletionEntry* const entries_;
  const uint16_t depth_;
  volatile uint32_t* const doorbell_;
  uint16_t head_ = 0;
  bool phase_ = true;  // the controller posts the first pass with phase 1
  uint32_t unrung_ = 0;
};

// Command identifiers of one queue: a fixed array with a free stack (libvfn's rq
// tracker), so the completion's CID finds its request in O(1) without allocation.
template <typename T, uint16_t N>
class CidTable {
 public:
  CidTable() {
    for (uint16_t i = 0; i < N; ++i) free_[i] = static_cast<uint16_t>(N - 1 - i);
    top_ = N;
  }
  // A free CID bound to `item`, or -1 when all are in use.
  int Acquire(T* item) {
    if (top_ == 0) return -1;
    const uint16_t cid = free_[--top_];
    items_[cid] = item;
    return cid;
  }
  // The item bound to `cid`, released; nullptr for a CID that is not in use (a
  // controller bug or a stale completion: never trusted).
  T* Release(uint16_t cid) {
    if (cid >= N || items_[cid] == nullptr) return nullptr;
    T* item = items_[cid];
    items_[cid] = nullptr;
    free_[top_++] = cid;
    return item;
  }
  uint16_t in_use() const { return static_cast<uint16_t>(N - top_); }

 private:
  T* items_[N] = {};
  uint16_t free_[N];
  uint16_t top_;
};

}  // namespace umpath::vfio
