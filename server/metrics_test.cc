// Metrics: the families one scrape makes (pure), and the real endpoint scraped over
// HTTP while a real gRPC server counts its calls.
#include "server/metrics.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>
#include <sstream>
#include <thread>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_split.h"
#include "agent/base/status_matchers.h"
#include "agent/core/multipath.h"
#include "agent/core/testing/fake_queue_pair.h"
#include "agent/core/worker.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "server/control_server.h"
#include "server/settings_store.h"
#include "server/testing/test_topology.h"
#include "umpath/v1/control.grpc.pb.h"

namespace umpath::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Text(const std::vector<prometheus::MetricFamily>& f) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, f);
  return out.str();
}

// Series lines (not comments) that contain `needle`.
int SeriesWith(const std::string& text, const std::string& needle) {
  int n = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!line.empty() && line[0] != '#' && absl::StrContains(line, needle)) ++n;
  }
  return n;
}

// Issue 20: what the application saw, per head. 8 series before it (the fast-fail
// timeout and state among them), 37 more: info 1, io and bytes 4 each, errors 5,
// requeued 1, no-path seconds 1, latency 18 + 3.
constexpr int kHeadSeries = 45;

HeadInfo Head(const std::string& name, std::vector<std::string> paths) {
  HeadInfo h;
  h.name = name;
  h.delayed_removal_secs = 30;
  for (const std::string& p : paths) {
    PathInfo pi;
    pi.name = p;
    pi.head = name;
    pi.controller = p;
    pi.controller_state = ControllerState::kLive;
    pi.ana_state = nvme::AnaState::kNonOptimized;
    pi.selectable = true;
    pi.counters.completed = 10;
    pi.counters.latency_le_1ms = 4;
    pi.counters.latency_le_10ms = 9;
    pi.counters.latency_ns_sum = 25'000'000;
    pi.counters.bytes = 40960;
    pi.counters.errors = 2;
    pi.counters.failovers = 1;
    pi.counters.in_flight = 3;
    h.paths.push_back(pi);
  }
  h.live_paths = h.selectable_paths = static_cast<uint32_t>(paths.size());
  return h;
}

TEST(MetricsTest, PathSeriesAreBoundedAndCarryStateCountersAndLatency) {
  ControllerInfo c;
  c.name = "nvme3";
  c.state = ControllerState::kConnecting;
  c.fenced_ios = 7;
  c.stray_completions = 2;
  AgentStats agent;
  agent.fenced_ios = 9;
  const std::string text =
      Text(BuildMetricFamilies({Head("nguid-ab01", {"nvme3", "nvme4"})}, {c}, agent));
  EXPECT_LE(SeriesWith(text, "path=\"nvme3\""), 15);
  EXPECT_EQ(SeriesWith(text, "path=\"nvme3\""), 15);
  EXPECT_THAT(text, HasSubstr("umpath_path_ana_state{head=\"nguid-ab01\",path=\"nvme3\",state=\"non_optimized\"} 1"));
  EXPECT_THAT(text, HasSubstr("umpath_path_ana_state{head=\"nguid-ab01\",path=\"nvme3\",state=\"optimized\"} 0"));
  EXPECT_THAT(text, HasSubstr("umpath_path_selectable{head=\"nguid-ab01\",path=\"nvme4\"} 1"));
  EXPECT_THAT(text, HasSubstr("umpath_path_bytes_total{head=\"nguid-ab01\",path=\"nvme3\"} 40960"));
  EXPECT_THAT(text, HasSubstr("umpath_path_errors_total{head=\"nguid-ab01\",path=\"nvme3\"} 2"));
  EXPECT_THAT(text, HasSubstr("umpath_path_failovers_total{head=\"nguid-ab01\",path=\"nvme3\"} 1"));
  EXPECT_THAT(text, HasSubstr("umpath_path_in_flight{head=\"nguid-ab01\",path=\"nvme3\"} 3"));
  EXPECT_THAT(text, HasSubstr("umpath_path_io_latency_seconds_bucket{head=\"nguid-ab01\",path=\"nvme3\",le=\"0.001\"} 4"));
  EXPECT_THAT(text, HasSubstr("umpath_path_io_latency_seconds_bucket{head=\"nguid-ab01\",path=\"nvme3\",le=\"0.01\"} 9"));
  EXPECT_THAT(text, HasSubstr("umpath_path_io_latency_seconds_bucket{head=\"nguid-ab01\",path=\"nvme3\",le=\"+Inf\"} 10"));
  EXPECT_THAT(text, HasSubstr("umpath_path_io_latency_seconds_count{head=\"nguid-ab01\",path=\"nvme3\"} 10"));
  EXPECT_THAT(text, HasSubstr("umpath_path_io_latency_seconds_sum{head=\"nguid-ab01\",path=\"nvme3\"} 0.025"));
  EXPECT_THAT(text, HasSubstr("umpath_controller_state{controller=\"nvme3\",state=\"connecting\"} 1"));
  EXPECT_THAT(text, HasSubstr("umpath_controller_state{controller=\"nvme3\",state=\"live\"} 0"));
  EXPECT_THAT(text, HasSubstr("umpath_controller_fenced_ios_total{controller=\"nvme3\"} 7"));
  EXPECT_THAT(text, HasSubstr("umpath_controller_stray_completions_total{controller=\"nvme3\"} 2"));
  EXPECT_THAT(text, HasSubstr("umpath_fenced_ios_total 9"));
  EXPECT_THAT(text, HasSubstr("umpath_head_paths{head=\"nguid-ab01\"} 2"));
  EXPECT_THAT(text, HasSubstr("umpath_head_delayed_removal_seconds{head=\"nguid-ab01\"} 30"));
  // No node label: the scrape adds it.
  EXPECT_THAT(text, Not(HasSubstr("node=")));
}

TEST(MetricsTest, RemovalDeadlineOnlyWhilePendingAndRemovedSeriesGo) {
  HeadInfo h = Head("nguid-ab01", {"nvme3"});
  std::string text = Text(BuildMetricFamilies({h}, {}, AgentStats{}));
  EXPECT_EQ(SeriesWith(text, "umpath_head_removal_deadline_timestamp_seconds"), 0);
  h.paths.clear();
  h.live_paths = h.selectable_paths = 0;
  h.removal_pending = true;
  h.removal_deadline_wall_nanos = 1'800'000'000'500'000'000;
  text = Text(BuildMetricFamilies({h}, {}, AgentStats{}));
  EXPECT_THAT(text, HasSubstr("umpath_head_removal_deadline_timestamp_seconds{head=\"nguid-ab01\"} 1800000000.5"));
  EXPECT_EQ(SeriesWith(text, "path=\"nvme3\""), 0) << "the removed path's series are gone";
  text = Text(BuildMetricFamilies({}, {}, AgentStats{}));
  EXPECT_EQ(SeriesWith(text, "nguid-ab01"), 0) << "the removed head's series are gone";
}

// Series lines (not comments) that start with `prefix`.
int SeriesOf(const std::string& text, const std::string& prefix) {
  int n = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, prefix)) ++n;
  }
  return n;
}

// `heads` heads of `paths` healthy paths each, nothing counted yet.
std::vector<HeadInfo> Heads(int heads, int paths) {
  std::vector<HeadInfo> out;
  for (int h = 0; h < heads; ++h) {
    std::vector<std::string> names;
    for (int p = 0; p < paths; ++p) names.push_back("nvme" + std::to_string(p));
    out.push_back(Head("h" + std::to_string(h), names));
    out.back().uid = static_cast<uint64_t>(h) + 1;
    for (PathInfo& pi : out.back().paths) pi.counters = PathCounters{};
  }
  return out;
}

constexpr int64_t kSecond = 1'000'000'000;

std::string Scrape(ScrapeHistory& history, const std::vector<HeadInfo>& heads, int64_t now_ns) {
  return Text(BuildMetricFamilies(heads, {}, AgentStats{}, history.Observe(heads, now_ns)));
}

// Issue 18 item 4: 8 heads of 4 paths, scraped every 30 s while one path is failed and
// another errs, then both heal. Heads keep their series (kHeadSeries) at every setting.
TEST(MetricsTest, PathDetailPicksThePathsThatGetSeries) {
  struct Case {
    PathDetail detail;
    int healthy, trouble;  // path series of the 32 paths: all healthy, then two in trouble
  };
  for (const Case& c : {Case{PathDetail::kFull, 480, 480}, Case{PathDetail::kErrors, 0, 30},
                        Case{PathDetail::kNone, 0, 0}}) {
    SCOPED_TRACE(PathDetailName(c.detail));
    ScrapeHistory history(c.detail, 0);
    std::vector<HeadInfo> heads = Heads(8, 4);
    std::string text = Scrape(history, heads, 0);
    EXPECT_EQ(SeriesOf(text, "umpath_path_"), c.healthy);
    EXPECT_EQ(SeriesOf(text, "umpath_head_"), 8 * kHeadSeries);

    PathInfo& failed = heads[3].paths[1];
    failed.selectable = false;
    failed.usable = false;
    heads[3].selectable_paths = 3;
    PathInfo& erring = heads[5].paths[2];
    erring.counters.errors = 7;
    erring.counters.failovers = 5;
    text = Scrape(history, heads, 30 * kSecond);
    EXPECT_EQ(SeriesOf(text, "umpath_path_"), c.trouble);
    EXPECT_EQ(SeriesOf(text, "umpath_head_"), 8 * kHeadSeries);
    EXPECT_THAT(text, HasSubstr("umpath_head_selectable_paths{head=\"h3\"} 3"));
    EXPECT_THAT(text, HasSubstr("umpath_head_failovers_total{head=\"h5\"} 5"));
    if (c.detail != PathDetail::kNone) {
      EXPECT_THAT(text, HasSubstr("umpath_path_selectable{head=\"h3\",path=\"nvme1\"} 0"));
      EXPECT_EQ(SeriesWith(text, "head=\"h3\",path=\"nvme1\""), 15);
      // Its full total, not what it counted since it was last shown.
      EXPECT_THAT(text, HasSubstr("umpath_path_errors_total{head=\"h5\",path=\"nvme2\"} 7"));
      EXPECT_EQ(SeriesWith(text, "head=\"h5\",path=\"nvme2\""), 15);
    }

    // Healed: selectable again, and no error since the previous scrape.
    failed.selectable = failed.usable = true;
    heads[3].selectable_paths = 4;
    text = Scrape(history, heads, 60 * kSecond);
    EXPECT_EQ(SeriesOf(text, "umpath_path_"), c.healthy);
    EXPECT_THAT(text, HasSubstr("umpath_head_failovers_total{head=\"h5\"} 5"));
  }
}

// Under `errors` a path keeps its series for the hold after it was last in trouble, and
// comes back with its totals when it errs again.
TEST(MetricsTest, ATroubledPathKeepsItsSeriesForTheHold) {
  ScrapeHistory history(PathDetail::kErrors, 600 * kSecond);
  std::vector<HeadInfo> heads = Heads(1, 2);
  PathInfo& p = heads[0].paths[0];
  const std::string series = "head=\"h0\",path=\"nvme0\"";
  EXPECT_EQ(SeriesWith(Scrape(history, heads, 0), series), 0);
  p.counters.errors = 2;
  EXPECT_EQ(SeriesWith(Scrape(history, heads, 100 * kSecond), series), 15);
  EXPECT_EQ(SeriesWith(Scrape(history, heads, 400 * kSecond), series), 15) << "within the hold";
  EXPECT_EQ(SeriesWith(Scrape(history, heads, 700 * kSecond), series), 15) << "at its end";
  EXPECT_EQ(SeriesWith(Scrape(history, heads, 701 * kSecond), series), 0) << "past it";
  p.counters.errors = 3;
  const std::string text = Scrape(history, heads, 2000 * kSecond);
  EXPECT_EQ(SeriesWith(text, series), 15);
  EXPECT_THAT(text, HasSubstr("umpath_path_errors_total{" + series + "} 3"));
  EXPECT_EQ(SeriesWith(text, "path=\"nvme1\""), 0);
  // A path seen first with errors has erred since it came.
  heads[0].paths.push_back(heads[0].paths[1]);
  heads[0].paths.back().name = "nvme2";
  heads[0].paths.back().counters.failovers = 1;
  EXPECT_EQ(SeriesWith(Scrape(history, heads, 2030 * kSecond), "path=\"nvme2\""), 15);
}

// umpath_head_failovers_total never goes back: not when a path goes, nor when one is
// removed and added again between two scrapes. Another head of the same name starts anew.
TEST(MetricsTest, HeadFailoversKeepWhatRemovedPathsCounted) {
  ScrapeHistory history(PathDetail::kNone, 0);
  std::vector<HeadInfo> heads = Heads(1, 3);
  heads[0].paths[0].counters.failovers = 3;
  heads[0].paths[1].counters.failovers = 4;
  const std::string head = "umpath_head_failovers_total{head=\"h0\"} ";
  EXPECT_THAT(Scrape(history, heads, 0), HasSubstr(head + "7"));
  heads[0].paths.erase(heads[0].paths.begin());  // nvme0 goes
  heads[0].paths[0].counters.failovers = 5;
  EXPECT_THAT(Scrape(history, heads, 30 * kSecond), HasSubstr(head + "8"));
  heads[0].paths[0].counters.failovers = 1;  // nvme1 removed and back
  EXPECT_THAT(Scrape(history, heads, 60 * kSecond), HasSubstr(head + "9"));
  heads[0].uid = 99;
  EXPECT_THAT(Scrape(history, heads, 90 * kSecond), HasSubstr(head + "1"));
  EXPECT_EQ(SeriesWith(Scrape(history, {}, 120 * kSecond), "h0"), 0);
  EXPECT_THAT(Scrape(history, heads, 150 * kSecond), HasSubstr(head + "1"));
}

// The alert UmpathHeadFailingFast reads the state; its annotations name the setting.
TEST(MetricsTest, FastFailTimeoutAndStatePerHead) {
  HeadInfo waiting = Head("nguid-ab01", {});
  waiting.live_paths = waiting.selectable_paths = 0;
  waiting.io_fail_timeout_secs = 20;
  HeadInfo failing = waiting;
  failing.name = "nguid-ab02";
  failing.failing_fast = true;
  HeadInfo unlimited = Head("nguid-ab03", {"nvme3"});
  const std::string text = Text(BuildMetricFamilies({waiting, failing, unlimited}, {}, AgentStats{}));
  // Head, its timeout, whether it fails fast.
  for (const auto& [head, timeout, failing_fast] :
       {std::tuple{"nguid-ab01", "20", "0"}, {"nguid-ab02", "20", "1"}, {"nguid-ab03", "0", "0"}}) {
    const std::string l = absl::StrCat("{head=\"", head, "\"} ");
    EXPECT_THAT(text, HasSubstr(absl::StrCat("umpath_head_io_fail_timeout_seconds", l, timeout)));
    EXPECT_THAT(text, HasSubstr(absl::StrCat("umpath_head_failing_fast", l, failing_fast)));
  }
  EXPECT_THAT(text, HasSubstr("# TYPE umpath_head_io_fail_timeout_seconds gauge"));
  EXPECT_THAT(text, HasSubstr("# TYPE umpath_head_failing_fast gauge"));
  EXPECT_EQ(SeriesWith(text, "umpath_head_failing_fast{"), 3);
}

TEST(MetricsTest, HeadIoSeriesCarryWhatTheApplicationSaw) {
  HeadInfo h = Head("nguid-ab01", {"nvme3"});
  h.subsys_nqn = "nqn.2026-01.io.umpath:s";
  h.nsid = 7;
  h.nguid = "ab01";
  h.export_device = "/dev/ublkb0";
  h.volume = "pv-123";
  h.io.ios = {5, 3, 1, 2};
  h.io.bytes = {20480, 12288, 0, 65536};
  h.io.errors[static_cast<size_t>(IoError::kFastFail)] = 2;
  h.io.requeued = 4;
  h.no_path_nanos = 2'500'000'000;
  // Cumulative: 6 at most 1 ms, 10 at most 2.5 s, 11 in all (one past 30 s).
  for (size_t i = 0; i < kHeadLatencyBuckets; ++i) h.io.latency[i] = i < 4 ? 0 : i < 14 ? 6 : i < 18 ? 10 : 11;
  h.io.latency_ns_sum = 33'000'000'000;
  const std::string text = Text(BuildMetricFamilies({h}, {}, AgentStats{}));
  const std::string l = "head=\"nguid-ab01\"";
  EXPECT_THAT(text, HasSubstr("umpath_head_info{" + l + ",nguid=\"ab01\",uuid=\"\",subsystem_nqn=\"nqn.2026-01.io.umpath:s\","
                              "nsid=\"7\",export_device=\"/dev/ublkb0\",volume=\"pv-123\"} 1"));
  EXPECT_THAT(text, HasSubstr("umpath_head_io_total{" + l + ",op=\"read\"} 5"));
  EXPECT_THAT(text, HasSubstr("umpath_head_io_total{" + l + ",op=\"write\"} 3"));
  EXPECT_THAT(text, HasSubstr("umpath_head_io_total{" + l + ",op=\"flush\"} 1"));
  EXPECT_THAT(text, HasSubstr("umpath_head_io_total{" + l + ",op=\"discard\"} 2"));
  EXPECT_THAT(text, HasSubstr("umpath_head_bytes_total{" + l + ",op=\"read\"} 20480"));
  EXPECT_THAT(text, HasSubstr("umpath_head_bytes_total{" + l + ",op=\"discard\"} 65536"));
  EXPECT_THAT(text, HasSubstr("umpath_head_io_errors_total{" + l + ",reason=\"fast_fail\"} 2"));
  EXPECT_THAT(text, HasSubstr("umpath_head_io_errors_total{" + l + ",reason=\"no_path\"} 0"));
  EXPECT_EQ(SeriesWith(text, "umpath_head_io_errors_total{"), 5) << "every reason, 0 included";
  EXPECT_EQ(SeriesWith(text, "reason=\"none\""), 0);
  EXPECT_THAT(text, HasSubstr("umpath_head_requeued_total{" + l + "} 4"));
  EXPECT_THAT(text, HasSubstr("umpath_head_no_path_seconds_total{" + l + "} 2.5"));
  EXPECT_THAT(text, HasSubstr("umpath_head_io_latency_seconds_bucket{" + l + ",le=\"5e-05\"} 0"));
  EXPECT_THAT(text, HasSubstr("umpath_head_io_latency_seconds_bucket{" + l + ",le=\"0.001\"} 6"));
  EXPECT_THAT(text, HasSubstr("umpath_head_io_latency_seconds_bucket{" + l + ",le=\"2.5\"} 10"));
  EXPECT_THAT(text, HasSubstr("umpath_head_io_latency_seconds_bucket{" + l + ",le=\"30\"} 10"));
  EXPECT_THAT(text, HasSubstr("umpath_head_io_latency_seconds_bucket{" + l + ",le=\"+Inf\"} 11"));
  EXPECT_THAT(text, HasSubstr("umpath_head_io_latency_seconds_count{" + l + "} 11"));
  EXPECT_THAT(text, HasSubstr("umpath_head_io_latency_seconds_sum{" + l + "} 33"));
  EXPECT_EQ(SeriesWith(text, "umpath_head_io_latency_seconds_bucket{"), 19);
  EXPECT_EQ(SeriesOf(text, "umpath_head_"), kHeadSeries);
  EXPECT_THAT(text, HasSubstr("# TYPE umpath_head_io_latency_seconds histogram"));
  EXPECT_THAT(text, HasSubstr("# TYPE umpath_head_no_path_seconds_total counter"));
  EXPECT_THAT(text, HasSubstr("# TYPE umpath_head_info gauge"));
  // A removed head's go with it, as its other series.
  EXPECT_EQ(SeriesWith(Text(BuildMetricFamilies({}, {}, AgentStats{})), "nguid-ab01"), 0);
}

TEST(MetricsTest, PathDetailNames) {
  for (PathDetail d : {PathDetail::kFull, PathDetail::kErrors, PathDetail::kNone}) {
    ASSERT_OK_AND_ASSIGN(PathDetail parsed, ParsePathDetail(PathDetailName(d)));
    EXPECT_EQ(parsed, d);
  }
  EXPECT_THAT(ParsePathDetail("all"), umpath::testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                                               HasSubstr("takes full, errors or none, not \"all\"")));
}

TEST(MetricsTest, AgentSeries) {
  AgentStats a;
  a.version = "0.1.0";
  a.revision = "9d8b46ef69ef";
  a.events = 42;
  a.watchers = 3;
  a.watcher_ends[static_cast<size_t>(WatchEnd::kFellBehind)] = 2;
  a.rpcs = {{"GetHead", "NOT_FOUND", 5}};
  const std::string text = Text(BuildMetricFamilies({}, {}, a));
  EXPECT_THAT(text, HasSubstr("umpath_events_total 42"));
  EXPECT_THAT(text, HasSubstr("umpath_watchers 3"));
  EXPECT_THAT(text, HasSubstr("umpath_watcher_terminations_total{reason=\"fell_behind\"} 2"));
  EXPECT_THAT(text, HasSubstr("umpath_watcher_terminations_total{reason=\"client_gone\"} 0"));
  EXPECT_THAT(text, HasSubstr("umpath_rpcs_total{method=\"GetHead\",code=\"NOT_FOUND\"} 5"));
  EXPECT_THAT(text, HasSubstr("umpath_build_info{version=\"0.1.0\",revision=\"9d8b46ef69ef\"} 1"));
  EXPECT_THAT(text, HasSubstr("# TYPE umpath_events_total counter"));
  // No block devices: no buffer series.
  EXPECT_THAT(text, Not(HasSubstr("umpath_dma_pinned_bytes")));
}

TEST(MetricsTest, TheIoBuffersBudget) {
  AgentStats a;
  a.buffers = BufferBudgetInfo{uint64_t{48} << 20, uint64_t{64} << 20, 128 << 10, 192};
  const std::string text = Text(BuildMetricFamilies({}, {}, a));
  EXPECT_THAT(text, HasSubstr("umpath_dma_pinned_bytes{use=\"io_buffers\"} 50331648"));
  EXPECT_THAT(text, HasSubstr("umpath_dma_pinned_budget_bytes 67108864"));
  EXPECT_THAT(text, HasSubstr("umpath_exportable_heads 192"));
  EXPECT_THAT(text, HasSubstr("# TYPE umpath_dma_pinned_bytes gauge"));
}

// The value of an unlabelled series, or -1 when it is not there.
double ValueOf(const std::string& text, const std::string& name) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    double v;
    if (absl::ConsumePrefix(&line, name + " ") && absl::SimpleAtod(line, &v)) return v;
  }
  return -1;
}

// The process_* series of this test process, as a scrape shows them.
void ExpectSaneProcessSeries(const std::string& body) {
  const double now = static_cast<double>(time(nullptr));
  const double start = ValueOf(body, "process_start_time_seconds");
  EXPECT_GT(start, now - 3600) << "started within the hour";
  EXPECT_LE(start, now + 1);
  EXPECT_GT(ValueOf(body, "process_resident_memory_bytes"), 1 << 20);
  EXPECT_GE(ValueOf(body, "process_virtual_memory_bytes"), ValueOf(body, "process_resident_memory_bytes"));
  EXPECT_GE(ValueOf(body, "process_open_fds"), 3) << "stdio and the listener at least";
  EXPECT_GE(ValueOf(body, "process_max_fds"), ValueOf(body, "process_open_fds"));
  EXPECT_GE(ValueOf(body, "process_threads"), 2) << "the HTTP server's thread at least";
  EXPECT_GE(ValueOf(body, "process_cpu_seconds_total"), 0);
  EXPECT_THAT(body, HasSubstr("# TYPE process_cpu_seconds_total counter"));
  std::printf("process series: rss %.1f MiB, %.0f fds of %.0f, %.0f threads, cpu %.2f s, started %.1f s ago\n",
              ValueOf(body, "process_resident_memory_bytes") / (1 << 20), ValueOf(body, "process_open_fds"),
              ValueOf(body, "process_max_fds"), ValueOf(body, "process_threads"),
              ValueOf(body, "process_cpu_seconds_total"), now - start);
}

// A plain HTTP/1.0 GET on loopback.
std::string Scrape(int port, const std::string& path = "/metrics") {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  (void)!write(fd, req.data(), req.size());
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

TEST(MetricsEndpointTest, ScrapesTheLiveCoreAndCountsRpcs) {
  MultipathOptions mo;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Multipath> mp, Multipath::Create(mo));
  ASSERT_OK(testing::AddTestTopology(mp.get(), 2, 1));
  char tmpl[] = "/tmp/umpath-metrics-test-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  RpcStats rpcs;
  ServerOptions so;
  so.socket_path = std::string(tmpl) + "/umpathd.sock";
  so.access.admin_uids = {getuid()};
  so.rpc_stats = &rpcs;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ControlServer> server, ControlServer::Create(mp.get(), so));
  MetricsOptions o;
  o.address = "127.0.0.1:0";
  o.mp = mp.get();
  o.rpcs = &rpcs;
  o.version = "test";
  o.watchers = [&] { return server->service().watchers(); };
  o.watcher_ends = [&] { return server->service().watcher_ends(); };
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<MetricsEndpoint> m, MetricsEndpoint::Create(o));
  ASSERT_GT(m->port(), 0);

  auto stub = v1::MultipathControl::NewStub(
      grpc::CreateChannel("unix:" + server->socket_path(), grpc::InsecureChannelCredentials()));
  for (int i = 0; i < 2; ++i) {
    grpc::ClientContext ctx;
    v1::GetHeadRequest req;
    req.set_name("heads/nothere");
    v1::GetHeadResponse resp;
    EXPECT_EQ(stub->GetHead(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    v1::GetAgentInfoResponse resp;
    EXPECT_TRUE(stub->GetAgentInfo(&ctx, v1::GetAgentInfoRequest(), &resp).ok());
  }
  std::string body = Scrape(m->port());
  EXPECT_THAT(body, HasSubstr("200 OK"));
  EXPECT_THAT(body, HasSubstr("umpath_rpcs_total{method=\"GetHead\",code=\"NOT_FOUND\"} 2"));
  EXPECT_THAT(body, HasSubstr("umpath_rpcs_total{method=\"GetAgentInfo\",code=\"OK\"} 1"));
  EXPECT_THAT(body, HasSubstr("umpath_head_paths{head=\"nguid-ab000000000000000000000000000001\"} 2"));
  EXPECT_THAT(body, HasSubstr("umpath_controller_state{controller=\"c1\",state=\"live\"} 1"));
  EXPECT_EQ(SeriesWith(body, "path=\"c1\""), 15);
  // The revision defaults to this build's (cmake/revision.cmake): 12 hex digits in a
  // git checkout, as CI builds.
  EXPECT_THAT(body, ::testing::ContainsRegex("umpath_build_info\\{version=\"test\",revision=\"([0-9a-f]{12}|unknown)\"\\} 1"));
  EXPECT_THAT(body, HasSubstr(std::string("revision=\"") + kBuildRevision + "\""));
  ExpectSaneProcessSeries(body);

  // A controller removed: its paths' and its own series are gone from the next scrape.
  ASSERT_OK(mp->RemoveController("c1", "test"));
  body = Scrape(m->port());
  EXPECT_EQ(SeriesWith(body, "path=\"c1\""), 0);
  EXPECT_EQ(SeriesWith(body, "controller=\"c1\""), 0);
  EXPECT_THAT(body, HasSubstr("umpath_head_paths{head=\"nguid-ab000000000000000000000000000001\"} 1"));
  m.reset();
  server->Shutdown();
  std::filesystem::remove_all(tmpl);
}

// Issue 20 over the real scrape: I/O through a (hand-driven) worker and a fake queue pair
// shows in the head's series, and the volume set through UpdateHeadSettings (kept in a
// real settings file) in umpath_head_info.
TEST(MetricsEndpointTest, HeadIoSeriesAndTheVolumeLabelOverHttp) {
  char tmpl[] = "/tmp/umpath-metrics-test-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<SettingsStore> store, SettingsStore::Open(std::string(tmpl) + "/settings"));
  umpath::testing::FakeQueuePair qp("c0");  // outlives the worker, which points at it
  std::unique_ptr<Worker> worker = Worker::Create(Worker::Options{});
  ASSERT_NE(worker, nullptr);
  MultipathOptions mo;
  mo.workers = {worker.get()};
  mo.initial_settings = [s = store.get()](absl::string_view head) { return s->Lookup(head); };
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Multipath> mp, Multipath::Create(mo));
  ControllerSpec spec;
  spec.name = "c0";
  spec.subsys_nqn = "nqn.2026-01.io.umpath:test";
  spec.transport = "fake";
  ASSERT_OK(mp->AddController(spec, nullptr, {&qp}));
  ASSERT_OK(testing::AddTestNamespace(mp.get(), 1, 1));
  const std::string head = "nguid-ab000000000000000000000000000001";
  auto run = [&] {
    for (int i = 0; i < 20 && worker->RunOnce() > 0; ++i) {
    }
  };
  run();
  struct Io {
    IoRequest req;
    bool ok = false;
  } read, write;
  for (Io* io : {&read, &write}) {
    io->req.blocks = 8;
    io->req.data_len = 4096;
    io->req.user = io;
    io->req.on_complete = [](IoRequest* r, IoResult res) { static_cast<Io*>(r->user)->ok = res.ok(); };
  }
  write.req.opcode = nvme::IoOpcode::kWrite;
  Channel* ch = worker->FindChannel(mp->GetHead(head)->uid);
  ASSERT_NE(ch, nullptr);
  ch->Submit(&read.req);
  ch->Submit(&write.req);
  worker->Flush();
  run();
  ASSERT_TRUE(read.ok);
  ASSERT_TRUE(write.ok);

  ServerOptions so;
  so.socket_path = std::string(tmpl) + "/umpathd.sock";
  so.access.admin_uids = {getuid()};
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ControlServer> server, ControlServer::Create(mp.get(), so, store.get()));
  MetricsOptions o;
  o.address = "127.0.0.1:0";
  o.mp = mp.get();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<MetricsEndpoint> m, MetricsEndpoint::Create(o));
  const std::string l = "head=\"" + head + "\"";
  std::string body = Scrape(m->port());
  ASSERT_THAT(body, HasSubstr("200 OK"));
  EXPECT_THAT(body, HasSubstr("umpath_head_io_total{" + l + ",op=\"read\"} 1"));
  EXPECT_THAT(body, HasSubstr("umpath_head_io_total{" + l + ",op=\"write\"} 1"));
  EXPECT_THAT(body, HasSubstr("umpath_head_bytes_total{" + l + ",op=\"write\"} 4096"));
  EXPECT_THAT(body, HasSubstr("umpath_head_io_latency_seconds_count{" + l + "} 2"));
  EXPECT_THAT(body, HasSubstr("umpath_head_io_errors_total{" + l + ",reason=\"no_path\"} 0"));
  EXPECT_THAT(body, HasSubstr("umpath_head_requeued_total{" + l + "} 0"));
  EXPECT_THAT(body, HasSubstr("umpath_head_no_path_seconds_total{" + l + "} 0"));
  EXPECT_THAT(body, HasSubstr("umpath_head_io_fail_timeout_seconds{" + l + "} 0"));
  EXPECT_THAT(body, HasSubstr("umpath_head_failing_fast{" + l + "} 0"));
  EXPECT_THAT(body, HasSubstr("umpath_head_info{" + l + ",nguid=\"ab000000000000000000000000000001\",uuid=\"\","
                              "subsystem_nqn=\"nqn.2026-01.io.umpath:test\",nsid=\"1\",export_device=\"\",volume=\"\"} 1"));

  auto stub = v1::MultipathControl::NewStub(
      grpc::CreateChannel("unix:" + server->socket_path(), grpc::InsecureChannelCredentials()));
  auto update = [&](const std::string& volume) {
    grpc::ClientContext ctx;
    v1::UpdateHeadSettingsRequest req;
    req.mutable_settings()->set_name("heads/" + head + "/settings");
    req.mutable_settings()->set_volume(volume);
    v1::UpdateHeadSettingsResponse resp;
    return stub->UpdateHeadSettings(&ctx, req, &resp);
  };
  ASSERT_TRUE(update("pv-123").ok());
  body = Scrape(m->port());
  EXPECT_THAT(body, HasSubstr("umpath_head_info{" + l + ",nguid=\"ab000000000000000000000000000001\",uuid=\"\","
                              "subsystem_nqn=\"nqn.2026-01.io.umpath:test\",nsid=\"1\",export_device=\"\","
                              "volume=\"pv-123\"} 1"));
  EXPECT_EQ(SeriesWith(body, "umpath_head_info{"), 1);
  // Out of bounds: refused, and the label stays.
  EXPECT_EQ(update("pv 123").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(update(std::string(254, 'a')).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(Scrape(m->port()), HasSubstr("volume=\"pv-123\"} 1"));
  // Kept in the file, so a head that comes back takes it.
  EXPECT_EQ(store->Lookup(head)->volume, "pv-123");

  m.reset();
  server->Shutdown();
  mp->Shutdown();
  run();
  std::filesystem::remove_all(tmpl);
}

// The real scrape path at each setting: 8 heads of 4 paths (4 controllers), a path
// failed by hand and reinstated.
TEST(MetricsEndpointTest, PathSeriesPerDetailOverHttp) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Multipath> mp, Multipath::Create(MultipathOptions{}));
  ASSERT_OK(testing::AddTestTopology(mp.get(), 4, 8));
  const std::string head = "nguid-ab000000000000000000000000000003";
  const std::string path = "head=\"" + head + "\",path=\"c2\"";
  struct Case {
    PathDetail detail;
    int healthy, failed;  // path series
  };
  for (const Case& c : {Case{PathDetail::kFull, 480, 480}, Case{PathDetail::kErrors, 0, 15},
                        Case{PathDetail::kNone, 0, 0}}) {
    SCOPED_TRACE(PathDetailName(c.detail));
    MetricsOptions o;
    o.address = "127.0.0.1:0";
    o.mp = mp.get();
    o.path_detail = c.detail;
    o.path_detail_hold = std::chrono::nanoseconds(0);
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<MetricsEndpoint> m, MetricsEndpoint::Create(o));
    std::string body = Scrape(m->port());
    ASSERT_THAT(body, HasSubstr("200 OK"));
    const int all = SeriesWith(body, "umpath_");
    EXPECT_EQ(SeriesOf(body, "umpath_path_"), c.healthy);
    EXPECT_EQ(SeriesOf(body, "umpath_head_"), 8 * kHeadSeries);
    EXPECT_EQ(SeriesOf(body, "umpath_controller_"), 4 * 8);

    ASSERT_OK(mp->FailPath(head, "c2", "test"));
    body = Scrape(m->port());
    EXPECT_EQ(SeriesOf(body, "umpath_path_"), c.failed);
    EXPECT_EQ(SeriesWith(body, path), c.detail == PathDetail::kNone ? 0 : 15);
    EXPECT_THAT(body, HasSubstr("umpath_head_selectable_paths{head=\"" + head + "\"} 3"));
    if (c.detail != PathDetail::kNone) {
      EXPECT_THAT(body, HasSubstr("umpath_path_selectable{" + path + "} 0"));
    }

    ASSERT_OK(mp->ReinstatePath(head, "c2"));
    body = Scrape(m->port());
    EXPECT_EQ(SeriesOf(body, "umpath_path_"), c.healthy);
    EXPECT_EQ(SeriesWith(body, "umpath_"), all);
    std::printf("path detail %s: %d series with every path healthy, %d with one failed\n",
                std::string(PathDetailName(c.detail)).c_str(), all, all - c.healthy + c.failed);
  }
}

// Item 14: on the way down, health goes NOT_SERVING and watchers end before the metrics
// endpoint stops. Its HTTP server waits for the scrape it is serving (held here in a
// collector) and otherwise takes up to 2 s; before, it was stopped first and held health
// SERVING and every watcher open meanwhile (here: until the callers' deadlines).
TEST(MetricsEndpointTest, HealthAndWatchersEndBeforeTheMetricsEndpointStops) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Multipath> mp, Multipath::Create(MultipathOptions{}));
  ASSERT_OK(testing::AddTestTopology(mp.get(), 1, 1));
  char tmpl[] = "/tmp/umpath-metrics-test-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  ServerOptions so;
  so.socket_path = std::string(tmpl) + "/umpathd.sock";
  so.access.admin_uids = {getuid()};
  so.health_address = "127.0.0.1:0";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ControlServer> server, ControlServer::Create(mp.get(), so));
  std::atomic<bool> hold{false};
  Notification in_scrape, release;
  MetricsOptions o;
  o.address = "127.0.0.1:0";
  o.mp = mp.get();
  o.watchers = [&] {
    if (hold.load()) {
      in_scrape.Notify();
      release.WaitFor(std::chrono::seconds(120));
    }
    return server->service().watchers();
  };
  o.watcher_ends = [&] { return server->service().watcher_ends(); };
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<MetricsEndpoint> m, MetricsEndpoint::Create(o));
  const int port = m->port();
  server->AdoptMetrics(std::move(m));

  auto deadline = [] { return std::chrono::system_clock::now() + std::chrono::seconds(20); };
  auto health = grpc::health::v1::Health::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(server->health_port()), grpc::InsecureChannelCredentials()));
  grpc::ClientContext hctx;
  hctx.set_deadline(deadline());
  auto probe = health->Watch(&hctx, grpc::health::v1::HealthCheckRequest());
  grpc::health::v1::HealthCheckResponse status;
  ASSERT_TRUE(probe->Read(&status));
  ASSERT_EQ(status.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  auto stub = v1::MultipathControl::NewStub(
      grpc::CreateChannel("unix:" + server->socket_path(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext wctx;
  wctx.set_deadline(deadline());
  auto watcher = stub->WatchEvents(&wctx, v1::WatchEventsRequest());
  v1::WatchEventsResponse msg;
  ASSERT_TRUE(watcher->Read(&msg));

  hold = true;
  std::thread scraper([&] { Scrape(port); });
  ASSERT_TRUE(in_scrape.WaitFor(std::chrono::seconds(30)));
  std::thread stopper([&] { server->Shutdown(); });
  // The scrape is still held, so the endpoint has not stopped: both end regardless.
  EXPECT_TRUE(probe->Read(&status) &&
              status.status() == grpc::health::v1::HealthCheckResponse::NOT_SERVING)
      << probe->Finish().error_message();
  while (watcher->Read(&msg)) {
  }
  grpc::Status s = watcher->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  release.Notify();
  scraper.join();
  stopper.join();
  std::filesystem::remove_all(tmpl);
}

TEST(MetricsEndpointTest, BadAddressesAreRefused) {
  MultipathOptions mo;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Multipath> mp, Multipath::Create(mo));
  MetricsOptions o;
  o.mp = mp.get();
  for (const char* bad : {"", "9810", "127.0.0.1:", ":9810"}) {
    o.address = bad;
    EXPECT_THAT(MetricsEndpoint::Create(o), umpath::testing::StatusIs(absl::StatusCode::kInvalidArgument))
        << bad;
  }
  // A port already taken.
  o.address = "127.0.0.1:0";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<MetricsEndpoint> first, MetricsEndpoint::Create(o));
  o.address = "127.0.0.1:" + std::to_string(first->port());
  EXPECT_THAT(MetricsEndpoint::Create(o),
              umpath::testing::StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("cannot serve metrics")));
}

TEST(RpcStatsTest, FailedMutationsAreLoggedAtMostOnceAMethodEvery10s) {
  std::vector<std::string> lines;
  RpcStats stats([&](const std::string& l) { lines.push_back(l); });
  stats.Count("GetHead", 5, "head x not found");             // a read: counted only
  stats.Count("ServerReflectionInfo", 12, "");                // reflection: counted only
  stats.Count("AttachController", 14, "could not connect");   // logged
  stats.Count("AttachController", 14, "could not connect");   // within 10 s: counted
  stats.Count("DetachController", 5, "controller nvme9 not found");
  stats.Count("SetDelayedRemoval", 0, "");                    // OK: not logged
  EXPECT_THAT(lines, ::testing::ElementsAre(
                         "rpc-error method=AttachController code=UNAVAILABLE message=\"could not connect\"",
                         "rpc-error method=DetachController code=NOT_FOUND message=\"controller nvme9 not found\""));
  uint64_t attach = 0;
  for (const RpcStats::Row& r : stats.Rows()) {
    if (r.method == "AttachController" && r.code == "UNAVAILABLE") attach = r.count;
  }
  EXPECT_EQ(attach, 2u);
}

}  // namespace
}  // namespace umpath::server
