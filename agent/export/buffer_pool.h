#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "agent/core/io_memory.h"

namespace umpath::ublk {

// One worker's I/O buffers, shared by every device queue the worker serves, so pinned
// memory follows a budget rather than the number of exported heads. A request takes a
// buffer when it needs one (a read as it arrives, a write when the kernel asks for its
// data, a discard for its range) and gives it back once its result is with the kernel.
//
// Every queue is guaranteed `kGuaranteed` buffers: as long as it holds fewer, one is
// free for it (the pool keeps as many free as the queues are owed). Beyond that a queue
// borrows what no queue is owed, up to its depth, first come first served; a request
// that finds none waits in line. So a device whose I/O waits out an outage keeps what it
// borrowed but cannot starve the others, which always have their own.
//
// Threading: the owning worker's thread only (memory arrives by Post).
class BufferPool {
 public:
  static constexpr uint32_t kGuaranteed = 1;

  // A queue's standing with the pool.
  struct Account {
    uint32_t held = 0;
  };
  // A request waiting for a buffer; `ready` gets it (the waiter is out of line by then).
  struct Waiter {
    Account* account = nullptr;
    void* user = nullptr;
    void (*ready)(Waiter* w, uint8_t* buffer) = nullptr;
    Waiter* next = nullptr;
    bool waiting = false;
  };

  explicit BufferPool(uint32_t buffer_bytes) : buffer_bytes_(buffer_bytes) {}
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // Carves `memory` (at least buffers x buffer_bytes) into buffers; they serve waiters.
  void Add(IoMemory memory, uint32_t buffers);

  void Register(Account* a) { owed_ += kGuaranteed; (void)a; }
  // Once the account holds nothing and none of its requests wait.
  void Unregister(Account* a) { owed_ -= a->held < kGuaranteed ? kGuaranteed - a->held : 0; }

  // A buffer for `a`, or nullptr: then call Wait.
  uint8_t* Take(Account* a) {
    if (!CanTake(*a)) return nullptr;
    if (a->held < kGuaranteed) --owed_;
    ++a->held;
    uint8_t* b = free_.back();
    free_.pop_back();
    return b;
  }
  void Give(Account* a, uint8_t* buffer) {
    --a->held;
    if (a->held < kGuaranteed) ++owed_;
    free_.push_back(buffer);  // capacity reserved for every buffer: no allocation
  }
  void Wait(Waiter* w);
  // Hands freed buffers to the waiters that may have them, in line order; returns how
  // many were served. Cheap when nobody waits.
  uint32_t Serve() { return first_ == nullptr || free_.empty() ? 0 : ServeSlow(); }

  uint32_t buffer_bytes() const { return buffer_bytes_; }
  uint32_t buffers() const { return buffers_; }
  uint32_t free() const { return static_cast<uint32_t>(free_.size()); }
  uint32_t owed() const { return owed_; }
  uint32_t waiting() const { return waiting_; }

 private:
  bool CanTake(const Account& a) const {
    return !free_.empty() && (a.held < kGuaranteed || free_.size() > owed_);
  }
  uint32_t ServeSlow();

  const uint32_t buffer_bytes_;
  uint32_t buffers_ = 0;
  uint32_t owed_ = 0;
  uint32_t waiting_ = 0;
  std::vector<uint8_t*> free_;
  std::vector<IoMemory> memory_;
  Waiter* first_ = nullptr;
  Waiter* last_ = nullptr;
};

}  // namespace umpath::ublk
