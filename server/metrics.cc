#include "server/metrics.h"

#include <chrono>
#include <limits>
#include <stdexcept>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/core/multipath.h"
#include "grpcpp/support/status.h"
#include "prometheus/collectable.h"
#include "prometheus/exposer.h"
#include "prometheus/text_serializer.h"
#include "server/convert.h"
#include "server/https_scrape.h"
#include "server/process_metrics.h"

namespace umpath::server {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

const char* CodeName(int code) {
  switch (static_cast<grpc::StatusCode>(code)) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

ClientMetric Metric(std::vector<ClientMetric::Label> labels) {
  ClientMetric m;
  m.label = std::move(labels);
  return m;
}
ClientMetric Gauge(std::vector<ClientMetric::Label> labels, double v) {
  ClientMetric m = Metric(std::move(labels));
  m.gauge.value = v;
  return m;
}
ClientMetric Counter(std::vector<ClientMetric::Label> labels, double v) {
  ClientMetric m = Metric(std::move(labels));
  m.counter.value = v;
  return m;
}

// Families in a fixed order, each made once and filled as series come.
class Families {
 public:
  MetricFamily& Get(const std::string& name, MetricType type, const std::string& help) {
    for (MetricFamily& f : families_) {
      if (f.name == name) return f;
    }
    families_.push_back(MetricFamily{name, help, type, {}});
    return families_.back();
  }
  std::vector<MetricFamily> Take() { return std::move(families_); }

 private:
  std::vector<MetricFamily> families_;
};

constexpr std::pair<nvme::AnaState, const char*> kAnaStates[] = {
    {nvme::AnaState::kOptimized, "optimized"},
    {nvme::AnaState::kNonOptimized, "non_optimized"},
    {nvme::AnaState::kInaccessible, "inaccessible"},
    {nvme::AnaState::kPersistentLoss, "persistent_loss"},
    {nvme::AnaState::kChange, "change"},
};
constexpr std::pair<ControllerState, const char*> kControllerStates[] = {
    {ControllerState::kNew, "new"},           {ControllerState::kLive, "live"},
    {ControllerState::kResetting, "resetting"}, {ControllerState::kConnecting, "connecting"},
    {ControllerState::kDeleting, "deleting"}, {ControllerState::kDead, "dead"},
};

constexpr MetricType kGauge = MetricType::Gauge, kCounter = MetricType::Counter;

// Up front, so the exposition keeps one order even with no heads.
void DeclareFamilies(Families& f) {
  f.Get("umpath_path_ana_state", kGauge, "ANA state of a path: 1 for the current state, 0 for the others");
  f.Get("umpath_path_selectable", kGauge, "1 while I/O may be sent down the path (usable and ANA optimized or non-optimized)");
  f.Get("umpath_path_bytes_total", kCounter, "Bytes of successfully completed I/O on the path");
  f.Get("umpath_path_errors_total", kCounter, "Completions with an error on the path (failed over, retried or failed)");
  f.Get("umpath_path_failovers_total", kCounter, "I/Os moved off the path by a path error");
  f.Get("umpath_path_in_flight", kGauge, "Commands outstanding on the path");
  f.Get("umpath_path_io_latency_seconds", MetricType::Histogram,
        "Time from submit to completion of successful I/O on the path");
  f.Get("umpath_controller_state", kGauge, "Controller state: 1 for the current state, 0 for the others");
  f.Get("umpath_controller_fenced_ios_total", kCounter,
        "Commands of the controller handed back for failover after it was fenced and its CQT passed");
  f.Get("umpath_controller_stray_completions_total", kCounter,
        "Completions dropped: identifier not in flight, or of an earlier use of it");
  f.Get("umpath_head_paths", kGauge, "Paths of the head");
  f.Get("umpath_head_live_paths", kGauge, "Paths of the head whose controller is live");
  f.Get("umpath_head_selectable_paths", kGauge, "Paths of the head I/O may be sent to");
  f.Get("umpath_head_waiting_ios", kGauge, "I/Os of the head waiting for a path");
  f.Get("umpath_head_delayed_removal_seconds", kGauge, "How long the head waits for a path once the last one is gone");
  f.Get("umpath_head_io_fail_timeout_seconds", kGauge,
        "How long the head's I/O waits for a selectable path before it fails fast (0: no separate limit)");
  f.Get("umpath_head_failing_fast", kGauge,
        "1 while the head fails its I/O at once, having had no selectable path for its io_fail_timeout");
  f.Get("umpath_head_failovers_total", kCounter,
        "I/Os moved off a path of the head by a path error (umpath_path_failovers_total summed, removed paths included)");
  f.Get("umpath_head_removal_deadline_timestamp_seconds", kGauge,
        "When a pending removal of the head takes effect (present only while one is pending)");
  f.Get("umpath_head_info", kGauge,
        "1 for each head, with its identity, block device and volume label (join on head)");
  f.Get("umpath_head_io_total", kCounter,
        "I/Os the application issued to the head and got answered, ok or not, by operation "
        "(once each, however many paths it took)");
  f.Get("umpath_head_bytes_total", kCounter,
        "Bytes of the head's successful I/O by operation (discard: the bytes released)");
  f.Get("umpath_head_io_errors_total", kCounter, "I/Os of the head answered with an error, by reason");
  f.Get("umpath_head_requeued_total", kCounter,
        "I/Os of the head put back to wait for a path (failed over, or no path selectable)");
  f.Get("umpath_head_no_path_seconds_total", kCounter, "Time the head has had no selectable path");
  f.Get("umpath_head_io_latency_seconds", MetricType::Histogram,
        "Time from an I/O's arrival at the head to its answer, as the application saw it");
}

void AddPathSeries(Families& f, const std::string& head, const PathInfo& p) {
  const std::vector<ClientMetric::Label> l = {{"head", head}, {"path", p.name}};
  MetricFamily& ana = f.Get("umpath_path_ana_state", kGauge, "");
  for (const auto& [state, name] : kAnaStates) {
    std::vector<ClientMetric::Label> ls = l;
    ls.push_back({"state", name});
    ana.metric.push_back(Gauge(std::move(ls), p.ana_state == state ? 1 : 0));
  }
  f.Get("umpath_path_selectable", kGauge, "").metric.push_back(Gauge(l, p.selectable ? 1 : 0));
  f.Get("umpath_path_bytes_total", kCounter, "").metric.push_back(Counter(l, static_cast<double>(p.counters.bytes)));
  f.Get("umpath_path_errors_total", kCounter, "").metric.push_back(Counter(l, static_cast<double>(p.counters.errors)));
  f.Get("umpath_path_failovers_total", kCounter, "")
      .metric.push_back(Counter(l, static_cast<double>(p.counters.failovers)));
  f.Get("umpath_path_in_flight", kGauge, "").metric.push_back(Gauge(l, static_cast<double>(p.counters.in_flight)));
  ClientMetric lat = Metric(l);
  lat.histogram.sample_count = p.counters.completed;
  lat.histogram.sample_sum = static_cast<double>(p.counters.latency_ns_sum) / 1e9;
  lat.histogram.bucket = {{p.counters.latency_le_1ms, 0.001},
                          {p.counters.latency_le_10ms, 0.01},
                          {p.counters.completed, std::numeric_limits<double>::infinity()}};
  f.Get("umpath_path_io_latency_seconds", MetricType::Histogram, "").metric.push_back(std::move(lat));
}

// Issue 20: what the application saw of the head, and its identity to join on.
void AddHeadIoSeries(Families& f, const HeadInfo& h) {
  const std::vector<ClientMetric::Label> l = {{"head", h.name}};
  f.Get("umpath_head_info", kGauge, "")
      .metric.push_back(Gauge({{"head", h.name},
                               {"nguid", h.nguid},
                               {"uuid", h.uuid},
                               {"subsystem_nqn", h.subsys_nqn},
                               {"nsid", absl::StrCat(h.nsid)},
                               {"export_device", h.export_device},
                               {"volume", h.volume}},
                              1));
  MetricFamily& ios = f.Get("umpath_head_io_total", kCounter, "");
  MetricFamily& bytes = f.Get("umpath_head_bytes_total", kCounter, "");
  for (size_t op = 0; op < kHeadOpCount; ++op) {
    const std::vector<ClientMetric::Label> lo = {{"head", h.name}, {"op", HeadOpName(static_cast<HeadOp>(op))}};
    ios.metric.push_back(Counter(lo, static_cast<double>(h.io.ios[op])));
    bytes.metric.push_back(Counter(lo, static_cast<double>(h.io.bytes[op])));
  }
  MetricFamily& errors = f.Get("umpath_head_io_errors_total", kCounter, "");
  for (size_t e = 1; e < kIoErrorCount; ++e) {  // every reason but kNone, 0 included
    errors.metric.push_back(Counter({{"head", h.name}, {"reason", IoErrorLabel(static_cast<IoError>(e))}},
                                    static_cast<double>(h.io.errors[e])));
  }
  f.Get("umpath_head_requeued_total", kCounter, "").metric.push_back(Counter(l, static_cast<double>(h.io.requeued)));
  f.Get("umpath_head_no_path_seconds_total", kCounter, "")
      .metric.push_back(Counter(l, static_cast<double>(h.no_path_nanos) / 1e9));
  ClientMetric lat = Metric(l);
  lat.histogram.sample_count = h.io.answered();
  lat.histogram.sample_sum = static_cast<double>(h.io.latency_ns_sum) / 1e9;
  for (size_t i = 0; i < kHeadLatencyBoundsNs.size(); ++i) {
    lat.histogram.bucket.push_back({h.io.latency[i], static_cast<double>(kHeadLatencyBoundsNs[i]) / 1e9});
  }
  lat.histogram.bucket.push_back({h.io.answered(), std::numeric_limits<double>::infinity()});
  f.Get("umpath_head_io_latency_seconds", MetricType::Histogram, "").metric.push_back(std::move(lat));
}

void AddHeadSeries(Families& f, const HeadInfo& h, uint64_t failovers) {
  const std::vector<ClientMetric::Label> l = {{"head", h.name}};
  f.Get("umpath_head_paths", kGauge, "").metric.push_back(Gauge(l, static_cast<double>(h.paths.size())));
  f.Get("umpath_head_live_paths", kGauge, "").metric.push_back(Gauge(l, h.live_paths));
  f.Get("umpath_head_selectable_paths", kGauge, "").metric.push_back(Gauge(l, h.selectable_paths));
  f.Get("umpath_head_waiting_ios", kGauge, "").metric.push_back(Gauge(l, static_cast<double>(h.waiting_ios)));
  f.Get("umpath_head_delayed_removal_seconds", kGauge, "").metric.push_back(Gauge(l, h.delayed_removal_secs));
  // The setting and the state the core derives from it (SEMANTICS "Fast fail"): an alert
  // reads the state, which the core times exactly, and names the setting.
  f.Get("umpath_head_io_fail_timeout_seconds", kGauge, "").metric.push_back(Gauge(l, h.io_fail_timeout_secs));
  f.Get("umpath_head_failing_fast", kGauge, "").metric.push_back(Gauge(l, h.failing_fast ? 1 : 0));
  f.Get("umpath_head_failovers_total", kCounter, "").metric.push_back(Counter(l, static_cast<double>(failovers)));
  if (h.removal_pending) {
    f.Get("umpath_head_removal_deadline_timestamp_seconds", kGauge, "")
        .metric.push_back(Gauge(l, static_cast<double>(h.removal_deadline_wall_nanos) / 1e9));
  }
  AddHeadIoSeries(f, h);
}

void AddControllerSeries(Families& f, const ControllerInfo& c) {
  MetricFamily& st = f.Get("umpath_controller_state", kGauge, "");
  for (const auto& [state, name] : kControllerStates) {
    st.metric.push_back(Gauge({{"controller", c.name}, {"state", name}}, c.state == state ? 1 : 0));
  }
  const std::vector<ClientMetric::Label> l = {{"controller", c.name}};
  f.Get("umpath_controller_fenced_ios_total", kCounter, "")
      .metric.push_back(Counter(l, static_cast<double>(c.fenced_ios)));
  f.Get("umpath_controller_stray_completions_total", kCounter, "")
      .metric.push_back(Counter(l, static_cast<double>(c.stray_completions)));
}

void AddAgentSeries(Families& f, const AgentStats& agent) {
  f.Get("umpath_fenced_ios_total", kCounter,
        "Commands handed back for failover after their controller was fenced, removed controllers included")
      .metric.push_back(Counter({}, static_cast<double>(agent.fenced_ios)));
  f.Get("umpath_events_total", kCounter, "Events the agent emitted (state changes)")
      .metric.push_back(Counter({}, static_cast<double>(agent.events)));
  f.Get("umpath_watchers", kGauge, "WatchEvents streams open")
      .metric.push_back(Gauge({}, static_cast<double>(agent.watchers)));
  MetricFamily& ends = f.Get("umpath_watcher_terminations_total", kCounter, "WatchEvents streams ended, by reason");
  for (size_t i = 0; i < kWatchEndCount; ++i) {
    ends.metric.push_back(Counter({{"reason", WatchEndName(static_cast<WatchEnd>(i))}},
                                  static_cast<double>(agent.watcher_ends[i])));
  }
  MetricFamily& rpcs = f.Get("umpath_rpcs_total", kCounter,
                             "Finished RPCs by method and status code (method \"unknown\": "
                             "every path no service here serves)");
  for (const RpcStats::Row& r : agent.rpcs) {
    rpcs.metric.push_back(Counter({{"method", r.method}, {"code", r.code}}, static_cast<double>(r.count)));
  }
  f.Get("umpath_build_info", kGauge, "The agent's version, and the commit it was built from")
      .metric.push_back(Gauge({{"version", agent.version}, {"revision", agent.revision}}, 1));
  if (agent.buffers) {
    f.Get("umpath_dma_pinned_bytes", kGauge,
          "Memory the block devices' I/O buffers pin for DMA (made so far; the pools do not shrink)")
        .metric.push_back(Gauge({{"use", "io_buffers"}}, static_cast<double>(agent.buffers->pinned_bytes)));
    f.Get("umpath_dma_pinned_budget_bytes", kGauge, "The I/O buffers' budget (--max_pinned_mib)")
        .metric.push_back(Gauge({}, static_cast<double>(agent.buffers->budget_bytes)));
    f.Get("umpath_exportable_heads", kGauge,
          "Heads that can still be exported within the I/O buffers' budget")
        .metric.push_back(Gauge({}, static_cast<double>(agent.buffers->exportable_heads)));
  }
}

int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

uint64_t PathFailovers(const HeadInfo& h) {
  uint64_t n = 0;
  for (const PathInfo& p : h.paths) n += p.counters.failovers;
  return n;
}

constexpr std::pair<PathDetail, const char*> kPathDetails[] = {
    {PathDetail::kFull, "full"}, {PathDetail::kErrors, "errors"}, {PathDetail::kNone, "none"}};

}  // namespace

absl::StatusOr<PathDetail> ParsePathDetail(absl::string_view text) {
  for (const auto& [d, name] : kPathDetails) {
    if (text == name) return d;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--metrics_path_detail takes full, errors or none, not \"", text, "\""));
}

absl::string_view PathDetailName(PathDetail d) {
  for (const auto& [detail, name] : kPathDetails) {
    if (d == detail) return name;
  }
  return "unknown";
}

bool ScrapeHistory::Show(const PathInfo& p, PathSeen& seen, int64_t now_ns) const {
  // A path seen for the first time compares with 0: what it counted since it came.
  const bool erring = p.counters.errors > seen.errors || p.counters.failovers > seen.failovers;
  seen.errors = p.counters.errors;
  seen.failovers = p.counters.failovers;
  if (!p.selectable || erring) {
    seen.unhealthy_at_ns = now_ns;
    seen.ever_unhealthy = true;
  }
  switch (detail_) {
    case PathDetail::kFull: return true;
    case PathDetail::kNone: return false;
    case PathDetail::kErrors: return seen.ever_unhealthy && now_ns - seen.unhealthy_at_ns <= hold_ns_;
  }
  return true;
}

std::vector<HeadView> ScrapeHistory::Observe(const std::vector<HeadInfo>& heads, int64_t now_ns) {
  std::vector<HeadView> views(heads.size());
  MutexLock l(&mu_);
  absl::flat_hash_map<std::string, HeadSeen> next;
  next.reserve(heads.size());
  for (size_t i = 0; i < heads.size(); ++i) {
    const HeadInfo& h = heads[i];
    auto it = heads_.find(h.name);
    // Another head of the same name (another uid) starts its own count.
    HeadSeen* old = it != heads_.end() && it->second.uid == h.uid ? &it->second : nullptr;
    HeadSeen& kept = next[h.name];
    kept.uid = h.uid;
    kept.removed_failovers = old != nullptr ? old->removed_failovers : 0;
    views[i].show_path.reserve(h.paths.size());
    for (const PathInfo& p : h.paths) {
      PathSeen seen;
      if (old != nullptr) {
        if (auto pit = old->paths.find(p.name); pit != old->paths.end()) {
          seen = pit->second;
          old->paths.erase(pit);
        }
      }
      // Counters that went back: the path was removed and added again between two scrapes.
      if (p.counters.errors < seen.errors || p.counters.failovers < seen.failovers) {
        kept.removed_failovers += seen.failovers;
        seen.errors = seen.failovers = 0;
      }
      views[i].show_path.push_back(Show(p, seen, now_ns));
      kept.paths.emplace(p.name, seen);
    }
    if (old != nullptr) {
      for (const auto& [name, gone] : old->paths) kept.removed_failovers += gone.failovers;
    }
    views[i].failovers = kept.removed_failovers + PathFailovers(h);
  }
  heads_ = std::move(next);
  return views;
}

void RpcStats::Count(const std::string& method, int code, const std::string& message) {
  std::string line;
  {
    MutexLock l(&mu_);
    ++counts_[{method, code}];
    // Reads, watches, health and reflection (buf curl probes v1 reflection first, which
    // gRPC 1.51 answers UNIMPLEMENTED) are counted, not logged.
    const bool reads = absl::StartsWith(method, "Get") || absl::StartsWith(method, "List") ||
                       method == "WatchEvents" || method == "Check" || method == "Watch" ||
                       method == "ServerReflectionInfo";
    if (code == 0 || reads || !log_) return;
    const int64_t now = SteadyNowNs();
    Logged& g = logged_[method];
    if (g.at_ns != 0 && now - g.at_ns < 10'000'000'000) {
      ++g.unlogged;
      return;
    }
    // The message may repeat what a caller sent: a bounded, escaped prefix of it.
    line = absl::StrCat("rpc-error method=", method, " code=", CodeName(code),
                        " message=", QuotePrefix(message, kMaxLoggedMessageBytes));
    if (g.unlogged > 0) absl::StrAppend(&line, " (", g.unlogged, " more since the last line)");
    g = Logged{now, 0};
  }
  log_(line);
}

std::vector<RpcStats::Row> RpcStats::Rows() const {
  MutexLock l(&mu_);
  std::vector<Row> rows;
  rows.reserve(counts_.size());
  for (const auto& [key, n] : counts_) rows.push_back(Row{key.first, CodeName(key.second), n});
  return rows;
}

std::vector<MetricFamily> BuildMetricFamilies(const std::vector<HeadInfo>& heads,
                                              const std::vector<ControllerInfo>& controllers,
                                              const AgentStats& agent,
                                              const std::vector<HeadView>& views) {
  Families f;
  DeclareFamilies(f);
  for (size_t i = 0; i < heads.size(); ++i) {
    const HeadInfo& h = heads[i];
    const HeadView* v = i < views.size() ? &views[i] : nullptr;
    for (size_t j = 0; j < h.paths.size(); ++j) {
      if (v == nullptr || (j < v->show_path.size() && v->show_path[j])) AddPathSeries(f, h.name, h.paths[j]);
    }
    AddHeadSeries(f, h, v != nullptr ? v->failovers : PathFailovers(h));
  }
  for (const ControllerInfo& c : controllers) AddControllerSeries(f, c);
  AddAgentSeries(f, agent);
  return f.Take();
}

class MetricsEndpoint::Collector final : public prometheus::Collectable {
 public:
  explicit Collector(MetricsOptions o)
      : o_(std::move(o)), history_(o_.path_detail, static_cast<int64_t>(o_.path_detail_hold.count())) {}
  std::vector<MetricFamily> Collect() const override {
    AgentStats a;
    a.version = o_.version;
    a.revision = o_.revision;
    a.events = o_.mp->journal().current_revision();
    a.fenced_ios = o_.mp->fenced_ios_total();
    if (o_.watchers) a.watchers = o_.watchers();
    if (o_.watcher_ends) a.watcher_ends = o_.watcher_ends();
    if (o_.rpcs) a.rpcs = o_.rpcs->Rows();
    if (o_.buffers) a.buffers = o_.buffers();
    const std::vector<HeadInfo> heads = o_.mp->ListHeads();
    const int64_t now = o_.now_ns ? o_.now_ns() : SteadyNowNs();
    std::vector<MetricFamily> f = BuildMetricFamilies(heads, o_.mp->ListControllers(), a, history_.Observe(heads, now));
    AppendProcessFamilies(o_.process, &f);
    return f;
  }

 private:
  const MetricsOptions o_;
  mutable ScrapeHistory history_;
};

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Create(MetricsOptions options) {
  if (options.mp == nullptr) return absl::InvalidArgumentError("metrics without a core");
  const size_t colon = options.address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == options.address.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics address \"", options.address, "\" is not HOST:PORT (e.g. 127.0.0.1:9810)"));
  }
  if (options.tls_cert_file.empty() &&
      !(options.tls_key_file.empty() && options.tls_client_ca_file.empty())) {
    return absl::InvalidArgumentError(
        "metrics_tls_key_file and metrics_tls_client_ca_file need metrics_tls_cert_file");
  }
  std::unique_ptr<MetricsEndpoint> m(new MetricsEndpoint());
  const std::string address = options.address;
  if (!options.tls_cert_file.empty()) {
    if (options.tls_key_file.empty()) {
      return absl::InvalidArgumentError("metrics_tls_cert_file needs metrics_tls_key_file");
    }
    HttpsScrapeOptions h{address, options.tls_cert_file, options.tls_key_file, options.tls_client_ca_file, {}};
    m->collector_ = std::make_shared<Collector>(std::move(options));
    h.body = [c = m->collector_] {
      return prometheus::TextSerializer().Serialize(c->Collect());
    };
    absl::StatusOr<std::unique_ptr<HttpsScrapeServer>> https = HttpsScrapeServer::Create(std::move(h));
    if (!https.ok()) return https.status();
    m->https_ = std::move(*https);
    m->port_ = m->https_->port();
    return m;
  }
  m->collector_ = std::make_shared<Collector>(std::move(options));
  try {
    // One thread: a scrape is small and Prometheus scrapes one at a time.
    m->exposer_ = std::make_unique<prometheus::Exposer>(address, 1);
  } catch (const std::exception& e) {
    return absl::FailedPreconditionError(absl::StrCat("cannot serve metrics on ", address, ": ", e.what()));
  }
  m->exposer_->RegisterCollectable(m->collector_);
  const std::vector<int> ports = m->exposer_->GetListeningPorts();
  m->port_ = ports.empty() ? 0 : ports.front();
  return m;
}

MetricsEndpoint::~MetricsEndpoint() = default;

}  // namespace umpath::server
