#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "agent/core/head_io_stats.h"
#include "agent/core/path_shared.h"
#include "agent/core/types.h"

namespace umpath {

// Per-(path, worker) counters. Threading: written only by that worker (relaxed
// load+store, no read-modify-write bus lock), read by the control side for reports.
struct alignas(64) PathWorkerCounters {
  std::atomic<uint64_t> submitted{0};
  std::atomic<uint64_t> completed{0};
  std::atomic<uint64_t> errors{0};
  std::atomic<uint64_t> failovers{0};
  std::atomic<uint64_t> retries{0};
  std::atomic<uint64_t> bytes{0};
  std::atomic<int64_t> in_flight{0};
  // Completion latency of successful commands on this path (submit to reap), for the
  // metrics' histogram: its count is `completed`, these are the two finite buckets
  // (non-cumulative) and the sum.
  std::atomic<uint64_t> latency_le_1ms{0};
  std::atomic<uint64_t> latency_le_10ms{0};
  std::atomic<uint64_t> latency_ns_sum{0};
  // The status field of the last completion with an error (0: none yet), for the
  // agent's rate-limited error summaries.
  std::atomic<uint16_t> last_error_status{0};

  static void Add(std::atomic<uint64_t>& c, uint64_t v) {
    c.store(c.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
  }
  static void Add(std::atomic<int64_t>& c, int64_t v) {
    c.store(c.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
  }
};

// Per-controller data workers may touch. Threading: immutable after creation except
// `ana_read_requested`, set by a worker on an ANA path error and cleared by the control
// side when it asks the backend for the log.
struct ControllerShared {
  uint32_t id = 0;
  bool ana_supported = false;
  std::array<uint16_t, 3> crdt{};  // Command Retry Delay Times, 100 ms units
  std::atomic<bool> ana_read_requested{false};
};

// Per-head data workers read. Threading: written by the control side, read by workers.
struct HeadShared {
  // delayed_removal_secs > 0: with no usable path, I/O waits instead of failing.
  std::atomic<bool> queue_if_no_path{false};
  // Set (to the IoError its I/O fails with) when the control side removed the head; a
  // worker that finds no path before its DropHead arrives fails I/O with it, not kNoPath.
  std::atomic<uint8_t> removed_with{0};
  // SEMANTICS "Fast fail": set while the head has had no usable path for longer than its
  // io_fail_timeout_secs; a worker then fails I/O that finds no path instead of queueing it.
  std::atomic<bool> fail_fast{false};
  // I/O waiting on the requeue lists, per worker (written by that worker only).
  std::unique_ptr<std::atomic<uint32_t>[]> waiting;
  // What the application saw, per worker (written by that worker only). Here rather than
  // in a channel or its path table: a worker's channel answers the head's last I/Os
  // (kHeadRemoved) after the control side let the head go, through the snapshot it holds.
  std::unique_ptr<HeadWorkerCounters[]> counters;
  // Immutable after creation: the bytes of a discard's or a write of zeroes' blocks.
  uint32_t block_size = 512;
};

struct PathRecordShared {
  std::shared_ptr<PathShared> state;
  std::shared_ptr<ControllerShared> controller;
  std::shared_ptr<PathWorkerCounters[]> counters;  // one per worker
  int numa_node = -1;
  uint32_t nsid = 0;
};

// An immutable view of one head that the control side publishes to every worker after
// each topology or policy change. Workers hold it while any I/O they issued through it
// is in flight.
struct HeadSnapshot {
  uint64_t head_uid = 0;
  uint64_t generation = 0;
  IoPolicy policy = IoPolicy::kNuma;
  std::shared_ptr<HeadShared> head;
  std::vector<PathRecordShared> paths;  // in list order
};

}  // namespace umpath
