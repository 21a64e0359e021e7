#pragma once

// Prometheus metrics: the text exposition on an HTTP listener of its own (off unless an
// address is configured), built at scrape time from the core's control API, so the
// series of a removed path or head disappear with it.
//
// Series (base units, _total counters, no node label: the scrape adds it):
//   per path {head, path}: umpath_path_ana_state{state} (5), umpath_path_selectable,
//     umpath_path_bytes_total, umpath_path_errors_total, umpath_path_failovers_total,
//     umpath_path_in_flight, umpath_path_io_latency_seconds (histogram, 3 buckets):
//     15 series a path;
//   per controller {controller}: umpath_controller_state{state} (6; a path's
//     controller state is its controller's, joined on path = controller);
//   per head {head}: umpath_head_paths, _live_paths, _selectable_paths, _waiting_ios,
//     _delayed_removal_seconds, and umpath_head_removal_deadline_timestamp_seconds while
//     a removal is pending;
//   agent: umpath_events_total, umpath_watchers, umpath_watcher_terminations_total
//     {reason}, umpath_rpcs_total{method, code}, umpath_build_info{version}.

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "agent/base/mutex.h"
#include "agent/core/info.h"
#include "prometheus/metric_family.h"
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

// What the agent-wide series come from.
struct AgentStats {
  std::string version;
  std::optional<BufferBudgetInfo> buffers;
  uint64_t events = 0;
  uint64_t fenced_ios = 0;
  uint64_t watchers = 0;
  WatchEndCounts watcher_ends{};
  std::vector<RpcStats::Row> rpcs;
};

// The families of one scrape. Pure: unit-tested on hand-made inputs.
std::vector<prometheus::MetricFamily> BuildMetricFamilies(const std::vector<HeadInfo>& heads,
                                                          const std::vector<ControllerInfo>& controllers,
                                                          const AgentStats& agent);

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
  std::string version;
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
