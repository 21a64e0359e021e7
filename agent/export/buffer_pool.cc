#include "agent/export/buffer_pool.h"

namespace umpath::ublk {

void BufferPool::Add(IoMemory memory, uint32_t buffers) {
  auto* base = static_cast<uint8_t*>(memory.host);
  free_.reserve(size_t{buffers_} + buffers);
  for (uint32_t i = 0; i < buffers; ++i) free_.push_back(base + size_t{i} * buffer_bytes_);
  buffers_ += buffers;
  memory_.push_back(std::move(memory));
}

void BufferPool::Wait(Waiter* w) {
  w->next = nullptr;
  w->waiting = true;
  if (last_ == nullptr) {
    first_ = w;
  } else {
    last_->next = w;
  }
  last_ = w;
  ++waiting_;
}

uint32_t BufferPool::ServeSlow() {
  uint32_t served = 0;
  Waiter* prev = nullptr;
  Waiter* w = first_;
  // A waiter that may not borrow yet stays in line; one behind it that is owed a buffer
  // (its queue gave its own back meanwhile) goes ahead.
  while (w != nullptr && !free_.empty()) {
    Waiter* next = w->next;
    if (!CanTake(*w->account)) {
      prev = w;
      w = next;
      continue;
    }
    if (prev == nullptr) {
      first_ = next;
    } else {
      prev->next = next;
    }
    if (last_ == w) last_ = prev;
    w->next = nullptr;
    w->waiting = false;
    --waiting_;
    ++served;
    w->ready(w, Take(w->account));
    w = next;
  }
  return served;
}

}  // namespace umpath::ublk
