#pragma once

#include <cstdint>

#include "absl/types/span.h"
#include "agent/core/path_shared.h"
#include "agent/core/types.h"

namespace umpath {

// One path as a worker sees it: its shared state and its NUMA distance from the worker.
struct PathCandidate {
  PathShared* shared = nullptr;
  uint32_t distance = 10;
  // This worker's queue pair to the path refused a command as gone; the path is not
  // chosen here again until the control side has caught up (new snapshot).
  const bool* queue_gone = nullptr;

  PathStateWord Load() const {
    PathStateWord s = shared->Load();
    if (queue_gone && *queue_gone) s.controller = ControllerState::kDead;
    return s;
  }
};

// SEMANTICS.md "Path usability and selection", for one worker's view of one head.
// Holds the numa cache and the round-robin position; both are private to the worker,
// so selection writes no cache line another worker reads.
//
// Threading: owned by one worker; Select reads PathShared atomics only.
class PathSelector {
 public:
  static constexpr int kNone = -1;

  // Returns the index of the chosen candidate, or kNone when no path is selectable.
  int Select(IoPolicy policy, absl::Span<const PathCandidate> paths) {
    switch (policy) {
      case IoPolicy::kNuma: return SelectNuma(paths);
      case IoPolicy::kRoundRobin: return SelectRoundRobin(paths);
      case IoPolicy::kQueueDepth: return SelectQueueDepth(paths);
    }
    return kNone;
  }
  // A policy change or a new path list clears every cached path.
  void Reset() {
    cached_ = kNone;
    last_ = kNone;
  }
  // Failover: forget a cached path that points at the failed one.
  void Forget(int index) {
    if (cached_ == index) cached_ = kNone;
  }
  int cached() const { return cached_; }

 private:
  int SelectNuma(absl::Span<const PathCandidate> paths);
  int SelectRoundRobin(absl::Span<const PathCandidate> paths);
  int SelectQueueDepth(absl::Span<const PathCandidate> paths);

  int cached_ = kNone;  // numa: current path of this worker's node
  int last_ = kNone;    // round-robin: last path used
};

}  // namespace umpath
