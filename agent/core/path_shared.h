#pragma once

#include <atomic>
#include <cstdint>

#include "agent/core/types.h"
#include "agent/nvme/wire.h"

namespace umpath {

// The part of a path that workers read on every I/O, packed in one word so a selection
// reads each candidate's state with one load.
struct PathStateWord {
  ControllerState controller = ControllerState::kNew;
  nvme::AnaState ana = nvme::AnaState::kOptimized;
  bool ana_pending = false;
  bool ready = false;
  bool admin_failed = false;  // failed for maintenance through the control API

  // SEMANTICS "Path usability": LIVE, or DELETING so in-flight I/O can finish.
  bool usable() const {
    return (controller == ControllerState::kLive ||
            controller == ControllerState::kDeleting) &&
           !ana_pending && ready && !admin_failed;
  }
  bool selectable() const {
    return usable() && (ana == nvme::AnaState::kOptimized ||
                        ana == nvme::AnaState::kNonOptimized);
  }
  bool optimized() const { return selectable() && ana == nvme::AnaState::kOptimized; }
  // What the numa cache may keep using without a rescan (the kernel's
  // nvme_path_is_optimized): LIVE and OPTIMIZED.
  bool cacheable() const { return optimized() && controller == ControllerState::kLive; }

  uint32_t Pack() const {
    return uint32_t(controller) | uint32_t(ana) << 8 | uint32_t(ana_pending) << 16 |
           uint32_t(ready) << 17 | uint32_t(admin_failed) << 18;
  }
  static PathStateWord Unpack(uint32_t w) {
    PathStateWord s;
    s.controller = ControllerState(w & 0xff);
    s.ana = nvme::AnaState((w >> 8) & 0xff);
    s.ana_pending = (w >> 16) & 1;
    s.ready = (w >> 17) & 1;
    s.admin_failed = (w >> 18) & 1;
    return s;
  }
};

inline constexpr uint32_t kAnaPendingBit = 1u << 16;

// Threading: `state` is written by the control side (under Multipath's lock) and by a
// worker that sees an ANA path error (fetch_or of the pending bit); read by every worker
// per I/O. A stale read is harmless: the worst case is one I/O sent to a path that just
// went bad, which fails over. `in_flight` is written by every worker that submits
// through this path under the queue-depth policy, so it sits on its own cache line.
struct PathShared {
  alignas(64) std::atomic<uint32_t> state{0};
  alignas(64) std::atomic<int32_t> in_flight{0};

  PathStateWord Load() const {
    return PathStateWord::Unpack(state.load(std::memory_order_acquire));
  }
  void Store(const PathStateWord& s) { state.store(s.Pack(), std::memory_order_release); }
  // SEMANTICS: in-flight counters never go negative (a reset on re-identify may race
  // with completions of commands counted before it).
  void DecrementInFlight() {
    int32_t v = in_flight.load(std::memory_order_relaxed);
    while (v > 0 &&
           !in_flight.compare_exchange_weak(v, v - 1, std::memory_order_relaxed)) {
    }
  }
};

}  // namespace umpath
