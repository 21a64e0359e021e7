#pragma once

// A workload on one head through the whole multipath path (SPDK's bdevperf): the I/O
// goes through path selection, failover and requeueing like any frontend's. It drives
// the workers itself (each one's RunOnce on a thread of its own), so nothing in the
// measured path is a posted message or a lock.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/core/io_memory.h"
#include "agent/core/multipath.h"
#include "agent/core/worker.h"

namespace umpath::perf {

// kVerify: each slot writes a pattern to a random place of its own stripe (every 16th
// time a Write Zeroes instead), flushes every 8th time, reads it back and compares.
enum class Pattern : uint8_t { kRead, kWrite, kRandRead, kRandWrite, kVerify };
absl::StatusOr<Pattern> ParsePattern(absl::string_view name);

struct WorkloadOptions {
  Pattern pattern = Pattern::kRandRead;
  uint32_t block_size = 4096;   // bytes, a multiple of the head's block size
  uint32_t queue_depth = 32;    // per worker
  double seconds = 10;
  std::string head;             // empty: the first head; "*": every head (below)
  double head_wait_seconds = 30;
  uint64_t seed = 1;
  // Set from another thread to end the run early (a signal); the result covers what ran.
  const std::atomic<bool>* stop = nullptr;
};

using umpath::IoMemory;
using umpath::IoMemoryAllocator;

// head "*": each I/O goes to the next head in turn (every head that had a live path when
// the run began, all of one size and block size), so that every head is busy; verify is
// refused (what a slot wrote would be read back from another head). The result's head
// is "*" and it has no per-path counters.
inline constexpr std::string_view kEveryHead = "*";

struct PathResult {
  std::string name;
  uint64_t completed = 0;
  uint64_t bytes = 0;
  uint64_t errors = 0;
  uint64_t failovers = 0;
};

struct WorkloadResult {
  std::string head;
  double seconds = 0;
  uint64_t ios = 0;
  uint64_t bytes = 0;
  uint64_t errors = 0;
  uint64_t mismatches = 0;  // verify: reads back that differ from what was written
  uint64_t flushes = 0;     // verify: Flush commands among the ios
  uint64_t zeroes = 0;      // verify: Write Zeroes commands among the ios
  uint64_t p50_ns = 0, p99_ns = 0, max_ns = 0;
  std::string first_error;
  std::vector<PathResult> paths;  // the head's per-path counters during the run
  uint32_t heads = 1;             // the heads the run spread over
  double cpu_ns_per_io = 0;       // the workers' threads' CPU time per I/O
  double iops() const { return seconds > 0 ? ios / seconds : 0; }
  double mbps() const { return seconds > 0 ? bytes / seconds / 1e6 : 0; }
  std::string ToString() const;
};

// `workers` must not be started: the run drives them and returns with nothing of its
// own left in flight.
absl::StatusOr<WorkloadResult> RunWorkload(Multipath* mp, const std::vector<Worker*>& workers,
                                           const IoMemoryAllocator& alloc,
                                           const WorkloadOptions& options);

// Latency histogram, log-linear: 16 buckets per power of two of nanoseconds (under 7%
// error), no allocation per sample.
class LatencyHistogram {
 public:
  void Add(uint64_t ns);
  void Merge(const LatencyHistogram& o);
  uint64_t Percentile(double p) const;  // p in [0, 100]
  uint64_t count() const { return count_; }
  uint64_t max() const { return max_; }

 private:
  static constexpr int kSub = 16;
  static constexpr int kBuckets = 64 * kSub;
  static int Bucket(uint64_t ns);
  static uint64_t BucketUpper(int b);
  uint64_t buckets_[kBuckets] = {};
  uint64_t count_ = 0, max_ = 0;
};

}  // namespace umpath::perf
