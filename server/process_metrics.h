#pragma once

// The process_* series every Prometheus client library exports (CPU, memory, file
// descriptors, threads, start time), read from /proc when a scrape asks and never on
// the I/O path. An agent OOM-killed or restarted in a loop shows as a start time that
// moves and an RSS that climbs; without them it shows as nothing.
//
// /proc is the outside world: a file that cannot be read or parsed leaves its series
// out of that scrape, nothing more.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "prometheus/metric_family.h"

namespace umpath::server {

// The fields of /proc/PID/stat (proc(5)) the series need, in the kernel's units.
struct ProcStat {
  uint64_t utime_ticks = 0;  // field 14, clock ticks
  uint64_t stime_ticks = 0;  // field 15
  uint64_t threads = 0;      // field 20
  uint64_t start_ticks = 0;  // field 22, clock ticks after boot
  uint64_t vsize_bytes = 0;  // field 23
  uint64_t rss_pages = 0;    // field 24
};

// The command (field 2) is in parentheses and may itself hold spaces and ')': fields
// are counted from its last ')'.
absl::StatusOr<ProcStat> ParseProcStat(absl::string_view text);
// The "btime" line of /proc/stat: when the machine booted, seconds since the epoch.
absl::StatusOr<int64_t> ParseBootTime(absl::string_view text);

// Where the series come from. A test points `proc` at a tree of its own holding
// self/stat, stat and self/fd/.
struct ProcessSource {
  std::string proc = "/proc";
  int64_t ticks_per_second = 0;  // 0: sysconf(_SC_CLK_TCK)
  int64_t page_bytes = 0;        // 0: sysconf(_SC_PAGESIZE)
};

// Appends process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_threads, process_start_time_seconds,
// process_open_fds and process_max_fds (RLIMIT_NOFILE's soft limit), each only when
// its source could be read.
void AppendProcessFamilies(const ProcessSource& source, std::vector<prometheus::MetricFamily>* out);

}  // namespace umpath::server
