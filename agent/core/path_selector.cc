#include "agent/core/path_selector.h"

#include <limits>

namespace umpath {

int PathSelector::SelectNuma(absl::Span<const PathCandidate> paths) {
  const int n = static_cast<int>(paths.size());
  // The cache holds only while its path is LIVE and OPTIMIZED; on a NON-OPTIMIZED
  // fallback every I/O rescans, so failback to OPTIMIZED is immediate.
  if (cached_ >= 0 && cached_ < n && paths[cached_].Load().cacheable()) {
    return cached_;
  }
  int best_opt = kNone, best_nonopt = kNone;
  uint32_t opt_dist = std::numeric_limits<uint32_t>::max();
  uint32_t nonopt_dist = opt_dist;
  for (int i = 0; i < n; ++i) {
    const PathStateWord s = paths[i].Load();
    if (!s.selectable()) continue;
    // Strict '<' keeps the first in list order on a tie.
    if (s.ana == nvme::AnaState::kOptimized) {
      if (paths[i].distance < opt_dist) {
        opt_dist = paths[i].distance;
        best_opt = i;
      }
    } else if (paths[i].distance < nonopt_dist) {
      nonopt_dist = paths[i].distance;
      best_nonopt = i;
    }
  }
  cached_ = best_opt != kNone ? best_opt : best_nonopt;
  return cached_;
}

int PathSelector::SelectRoundRobin(absl::Span<const PathCandidate> paths) {
  const int n = static_cast<int>(paths.size());
  if (n == 0) return kNone;
  const int start = (last_ >= 0 && last_ < n) ? last_ + 1 : 0;
  int first_nonopt = kNone;
  for (int k = 0; k < n; ++k) {
    const int i = (start + k) % n;
    const PathStateWord s = paths[i].Load();
    if (!s.selectable()) continue;
    if (s.ana == nvme::AnaState::kOptimized) {
      last_ = i;
      return i;
    }
    if (first_nonopt == kNone) first_nonopt = i;
  }
  // NON-OPTIMIZED only when no OPTIMIZED path is usable.
  if (first_nonopt != kNone) last_ = first_nonopt;
  return first_nonopt;
}

int PathSelector::SelectQueueDepth(absl::Span<const PathCandidate> paths) {
  int best_opt = kNone, best_nonopt = kNone;
  int32_t opt_depth = std::numeric_limits<int32_t>::max();
  int32_t nonopt_depth = opt_depth;
  const int n = static_cast<int>(paths.size());
  for (int i = 0; i < n; ++i) {
    const PathStateWord s = paths[i].Load();
    if (!s.selectable()) continue;
    const int32_t depth = paths[i].shared->in_flight.load(std::memory_order_relaxed);
    if (s.ana == nvme::AnaState::kOptimized) {
      if (depth < opt_depth) {
        opt_depth = depth;
        best_opt = i;
        if (depth == 0) return i;  // nothing beats an idle OPTIMIZED path
      }
    } else if (depth < nonopt_depth) {
      nonopt_depth = depth;
      best_nonopt = i;
    }
  }
  return best_opt != kNone ? best_opt : best_nonopt;
}

}  // namespace umpath
