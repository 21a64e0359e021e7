#pragma once

// What the application saw of a head: its I/O by operation, the errors it was answered
// with, the requeues, and the latency from the request's arrival at the channel to its
// answer (issue 20). Paths have their own counters (PathWorkerCounters); these count an
// I/O once however many paths it went through.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "agent/core/io_request.h"
#include "agent/nvme/wire.h"

namespace umpath {

// The `op` label: a write of zeroes is a write, Dataset Management (deallocate) a discard.
enum class HeadOp : uint8_t { kRead, kWrite, kFlush, kDiscard };
inline constexpr size_t kHeadOpCount = 4;
inline const char* HeadOpName(HeadOp op) {
  constexpr const char* kNames[kHeadOpCount] = {"read", "write", "flush", "discard"};
  return kNames[static_cast<size_t>(op)];
}
inline HeadOp HeadOpOf(nvme::IoOpcode opcode) {
  switch (opcode) {
    case nvme::IoOpcode::kRead: return HeadOp::kRead;
    case nvme::IoOpcode::kWrite:
    case nvme::IoOpcode::kWriteZeroes: return HeadOp::kWrite;
    case nvme::IoOpcode::kFlush: return HeadOp::kFlush;
    case nvme::IoOpcode::kDatasetManagement: return HeadOp::kDiscard;
  }
  return HeadOp::kWrite;
}

// One slot per IoError; kNone's stays 0.
inline constexpr size_t kIoErrorCount = static_cast<size_t>(IoError::kFastFail) + 1;
// The `reason` label of umpath_head_io_errors_total (Prometheus style: snake case).
inline const char* IoErrorLabel(IoError e) {
  switch (e) {
    case IoError::kNone: return "none";
    case IoError::kNvme: return "nvme";
    case IoError::kNoPath: return "no_path";
    case IoError::kHeadRemoved: return "head_removed";
    case IoError::kShutdown: return "shutdown";
    case IoError::kFastFail: return "fast_fail";
  }
  return "unknown";
}

// Upper bounds of the latency histogram's finite buckets, 50 us to 30 s: a 2 ms I/O, a
// 200 ms retry and a 2 s failover stall land in different buckets.
inline constexpr std::array<int64_t, 18> kHeadLatencyBoundsNs = {
    50'000,      100'000,     250'000,       500'000,       1'000'000,     2'500'000,
    5'000'000,   10'000'000,  25'000'000,    50'000'000,    100'000'000,   250'000'000,
    500'000'000, 1'000'000'000, 2'500'000'000, 5'000'000'000, 10'000'000'000, 30'000'000'000};
inline constexpr size_t kHeadLatencyBuckets = kHeadLatencyBoundsNs.size() + 1;  // and +Inf

// The bucket of a latency: how many bounds lie below it. A fixed count of compares the
// compiler turns into straight-line code (no branch that depends on the latency, so no
// misprediction when latencies spread).
inline size_t HeadLatencyBucket(int64_t ns) {
  size_t i = 0;
  for (int64_t bound : kHeadLatencyBoundsNs) i += static_cast<size_t>(ns > bound);
  return i;
}

// Per-(head, worker) counters, made with the head (HeadShared) so they outlive every
// path table (epoch) and the head's removal while its last I/Os are answered.
// Threading: written only by that worker (relaxed load+store, no read-modify-write),
// read by the control side for reports; a read may miss the newest I/O.
struct alignas(64) HeadWorkerCounters {
  std::array<std::atomic<uint64_t>, kHeadOpCount> ios{};    // answered, ok or not
  std::array<std::atomic<uint64_t>, kHeadOpCount> bytes{};  // of the successful ones
  std::array<std::atomic<uint64_t>, kIoErrorCount> errors{};
  std::atomic<uint64_t> requeued{0};
  std::array<std::atomic<uint64_t>, kHeadLatencyBuckets> latency{};  // not cumulative
  std::atomic<uint64_t> latency_ns_sum{0};

  static void Add(std::atomic<uint64_t>& c, uint64_t v) {
    c.store(c.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
  }
};

// The same, summed over the workers, as the control API reports it.
struct HeadIoCounters {
  std::array<uint64_t, kHeadOpCount> ios{};
  std::array<uint64_t, kHeadOpCount> bytes{};
  std::array<uint64_t, kIoErrorCount> errors{};
  uint64_t requeued = 0;
  std::array<uint64_t, kHeadLatencyBuckets> latency{};  // cumulative: [i] counts <= bound i
  uint64_t latency_ns_sum = 0;
  uint64_t answered() const { return latency.back(); }

  void AddWorker(const HeadWorkerCounters& c) {
    for (size_t i = 0; i < kHeadOpCount; ++i) {
      ios[i] += c.ios[i].load(std::memory_order_relaxed);
      bytes[i] += c.bytes[i].load(std::memory_order_relaxed);
    }
    for (size_t i = 0; i < kIoErrorCount; ++i) errors[i] += c.errors[i].load(std::memory_order_relaxed);
    requeued += c.requeued.load(std::memory_order_relaxed);
    uint64_t below = 0;
    for (size_t i = 0; i < kHeadLatencyBuckets; ++i) {
      below += c.latency[i].load(std::memory_order_relaxed);
      latency[i] += below;
    }
    latency_ns_sum += c.latency_ns_sum.load(std::memory_order_relaxed);
  }
};

}  // namespace umpath
