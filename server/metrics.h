#pragma once

// Prometheus metrics: the text exposition on an HTTP listener of its own (off unless an
// address is configured), built at scrape time from the core's control API, so the
// series of a removed path or head disappear with it.
//
// Series (base units, _total counters, no node label: the scrape adds it):
//   per path {head, path}, for the paths --metrics_path_detail picks (PathDetail): umpath_path_ana_state{state} (5), umpath_path_selectable,
//     umpath_path_bytes_total, umpath_path_errors_total, umpath_path_failovers_total,
//     umpath_path_in_flight, umpath_path_io_latency_seconds (histogram, 3 buckets):
//     15 series a path;
//   per controller {controller}: umpath_controller_state{state} (6; a path's
//     controller state is its controller's, joined on path = controller);
//   per head {head}, always: umpath_head_paths, _live_paths, _selectable_paths,
//     _waiting_ios, _delayed_removal_seconds, _io_fail_timeout_seconds, _failing_fast,
//     _failovers_total (8), and
//     umpath_head_removal_deadline_timestamp_seconds while a removal is pending;
//     what the application saw (issue 20; the core's HeadInfo::io): umpath_head_info
//     {nguid, uuid, subsystem_nqn, nsid, export_device, volume}, umpath_head_io_total{op}
//     and umpath_head_bytes_total{op} (read, write, flush, discard),
//     umpath_head_io_errors_total{reason} (5), umpath_head_requeued_total,
//     umpath_head_no_path_seconds_total, umpath_head_io_latency_seconds (histogram, 50 us
//     to 30 s, 19 buckets): 45 series a head in all;
//   agent: umpath_events_total, umpath_watchers, umpath_watcher_terminations_total
//     {reason}, umpath_rpcs_total{method, code}, umpath_build_info{version, revision};
//   the process (process_metrics.h): process_cpu_seconds_total,
//     process_resident_memory_bytes, process_virtual_memory_bytes, process_threads,
//     process_start_time_seconds, process_open_fds, process_max_fds.

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/base/build_info.h"
#include "agent/base/mutex.h"
#include "agent/core/info.h"
#include "prometheus/metric_family.h"
#include "server/process_metrics.h"
#include "server/watch.h"

namespace prometheus {
class Exposer;
}

namespace umpath {
class Multipath;
}

namespace umpath::server {

class HttpsScrapeServer;

// Finished RPCs by method and status code, counted by a server interceptor
// (rpc_interceptor.h), which labels every path no service serves "unknown": the series
// and the log's keys are bounded by the methods we serve times the status codes.
// Threading: Count from gRPC threads, Rows from the scrape; one lock, held briefly.
class RpcStats {
 public:
  // Failed calls that change something (attach, set-delayed-removal, ...) are logged
  // through `log` as they happen, at most one line per method every 10 s (with how many
  // were not logged); reads and watches are only counted.
  explicit RpcStats(std::function<void(const std::string&)> log = nullptr) : log_(std::move(log)) {}
  void Count(const std::string& method, int code, const std::string& message = "");
  struct Row {
    std::string method;  // "GetHead", "Check"
    std::string code;    // "OK", "NOT_FOUND"
    uint64_t count = 0;
  };
  std::vector<Row> Rows() const;
  // What a log line repeats of a message.
  static constexpr size_t kMaxLoggedMessageBytes = 256;

 private:
  const std::function<void(const std::string&)> log_;
  mutable Mutex mu_;
  absl::flat_hash_map<std::pair<std::string, int>, uint64_t> counts_ ABSL_GUARDED_BY(mu_);
  struct Logged {
    int64_t at_ns = 0;
    uint64_t unlogged = 0;
  };
  absl::flat_hash_map<std::string, Logged> logged_ ABSL_GUARDED_BY(mu_);
};

// --metrics_path_detail: which paths get their 15 series (a head's always come).
//   kFull: every path.
//   kErrors: a path that is not healthy: not selectable (failed by hand, controller not
//     LIVE, ANA inaccessible/persistent loss/change/pending, not ready), or whose errors
//     or failovers grew since the previous scrape; and it keeps its series for a hold
//     (MetricsOptions::path_detail_hold, 10 minutes) after it was last seen so, so a
//     rate() over the rules' 5 minute windows ends at 0 instead of with the series, and a
//     path that errs every few minutes is one series, not a new one each time.
//   kNone: no path.
// A path's series come back with the core's totals (never restarted at 0): Prometheus
// sees a staleness marker when they go and the same series, higher, when they return,
// so rate() reads no counter reset, and counts what happened meanwhile when its window
// holds a sample from before the gap.
enum class PathDetail { kFull, kErrors, kNone };
absl::StatusOr<PathDetail> ParsePathDetail(absl::string_view text);
absl::string_view PathDetailName(PathDetail d);

// What one scrape shows of each head beyond its HeadInfo.
struct HeadView {
  std::vector<bool> show_path;  // parallel to HeadInfo::paths
  // Failovers of the head's paths, those removed since included: a counter that does
  // not go back when a path goes (which rate() would read as a reset and a spike).
  uint64_t failovers = 0;
};

// What earlier scrapes saw: each path's errors and failovers and when it was last
// unhealthy, and the failovers of each head's removed paths.
// Threading: scrapes, one at a time (the exposer serves with one thread); one lock.
class ScrapeHistory {
 public:
  ScrapeHistory(PathDetail detail, int64_t hold_ns) : detail_(detail), hold_ns_(hold_ns) {}
  // One HeadView per head; forgets the heads and paths that are gone.
  std::vector<HeadView> Observe(const std::vector<HeadInfo>& heads, int64_t now_ns);

 private:
  struct PathSeen {
    uint64_t errors = 0;
    uint64_t failovers = 0;
    int64_t unhealthy_at_ns = 0;
    bool ever_unhealthy = false;
  };
  struct HeadSeen {
    uint64_t uid = 0;
    uint64_t removed_failovers = 0;  // of the paths gone, or whose counters went back
    absl::flat_hash_map<std::string, PathSeen> paths;
  };
  bool Show(const PathInfo& p, PathSeen& seen, int64_t now_ns) const;
  const PathDetail detail_;
  const int64_t hold_ns_;
  Mutex mu_;
  absl::flat_hash_map<std::string, HeadSeen> heads_ ABSL_GUARDED_BY(mu_);
};

// What the agent-wide series come from.
struct AgentStats {
  std::string version;
  std::string revision;
  std::optional<BufferBudgetInfo> buffers;
  uint64_t events = 0;
  uint64_t fenced_ios = 0;
  uint64_t watchers = 0;
  WatchEndCounts watcher_ends{};
  std::vector<RpcStats::Row> rpcs;
};

// The families of one scrape. Pure: unit-tested on hand-made inputs. `views` (one per
// head, from ScrapeHistory) picks the paths shown and gives the heads' failovers; empty:
// every path, and the failovers of the paths there are.
std::vector<prometheus::MetricFamily> BuildMetricFamilies(const std::vector<HeadInfo>& heads,
                                                          const std::vector<ControllerInfo>& controllers,
                                                          const AgentStats& agent,
                                                          const std::vector<HeadView>& views = {});

struct MetricsOptions {
  std::string address;  // "127.0.0.1:9810"; port 0 picks one (see port())
  // HTTPS instead of HTTP when set: the certificate (PEM, with its chain) and its key.
  // With a client CA, a scraper must present a certificate that chains to it (Prometheus'
  // tls_config cert_file/key_file); nothing else is served.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  Multipath* mp = nullptr;
  const RpcStats* rpcs = nullptr;
  std::function<uint64_t()> watchers;
  std::function<WatchEndCounts()> watcher_ends;
  std::function<std::optional<BufferBudgetInfo>()> buffers;
  std::string version = kBuildVersion;
  std::string revision = kBuildRevision;
  ProcessSource process;  // the process_* series
  PathDetail path_detail = PathDetail::kFull;
  std::chrono::nanoseconds path_detail_hold = std::chrono::minutes(10);
  std::function<int64_t()> now_ns;  // a steady clock; default std::chrono::steady_clock
};

// Threading: Create and the destructor from one thread; scrapes run on the HTTP
// server's own thread and only call the core's thread-safe control API.
class MetricsEndpoint {
 public:
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Create(MetricsOptions options);
  ~MetricsEndpoint();
  int port() const { return port_; }
  // "https" with a certificate, else "http".
  const char* scheme() const { return https_ ? "https" : "http"; }

 private:
  class Collector;
  MetricsEndpoint() = default;
  std::shared_ptr<Collector> collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;  // HTTP
  std::unique_ptr<HttpsScrapeServer> https_;       // or HTTPS
  int port_ = 0;
};

}  // namespace umpath::server
