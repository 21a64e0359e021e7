#include "server/process_metrics.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "agent/base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"

namespace umpath::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// A command with spaces and parentheses, then fields 3..52 as a 6.x kernel writes them:
// utime 150, stime 50, 7 threads, started 123456 ticks after boot, 100 MiB virtual,
// 2560 pages resident.
constexpr char kStat[] =
    "4242 (um) pathd (x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 50 0 0 20 0 7 0 123456 "
    "104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

TEST(ParseProcStatTest, CountsFieldsFromTheCommandsLastParenthesis) {
  ASSERT_OK_AND_ASSIGN(ProcStat s, ParseProcStat(kStat));
  EXPECT_EQ(s.utime_ticks, 150u);
  EXPECT_EQ(s.stime_ticks, 50u);
  EXPECT_EQ(s.threads, 7u);
  EXPECT_EQ(s.start_ticks, 123456u);
  EXPECT_EQ(s.vsize_bytes, 104857600u);
  EXPECT_EQ(s.rss_pages, 2560u);
}

TEST(ParseProcStatTest, MalformedTextIsAnErrorNotACrash) {
  const std::string full = kStat;
  const size_t rss_at = full.find(" 2560 ");
  for (const std::string& bad : {
           std::string(""),
           std::string("4242 umpathd S 1"),                     // no parentheses
           std::string("4242 (umpathd)"),                       // nothing after the command
           full.substr(0, rss_at),                              // cut before field 24
           std::string(full).replace(rss_at + 1, 4, "25x0"),    // not a number
           std::string(full).replace(rss_at + 1, 4, "-256"),    // negative
           std::string(full).replace(full.find(" 150 ") + 1, 3, "99999999999999999999999"),  // past 64 bits
           std::string("\0\0\0)\0", 5),
       }) {
    EXPECT_THAT(ParseProcStat(bad), testing::StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
  }
}

TEST(ParseProcStatTest, ThisProcessParses) {
  std::ifstream in("/proc/self/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_OK_AND_ASSIGN(ProcStat s, ParseProcStat(text));
  EXPECT_GE(s.threads, 1u);
  EXPECT_GT(s.rss_pages, 0u);
  EXPECT_GT(s.vsize_bytes, 0u);
}

TEST(ParseBootTimeTest, FindsTheBtimeLine) {
  ASSERT_OK_AND_ASSIGN(int64_t boot, ParseBootTime("cpu  1 2 3\nintr 5\nctxt 9\nbtime 1764700000\nprocesses 3\n"));
  EXPECT_EQ(boot, 1764700000);
  for (const char* bad : {"", "cpu 1 2\n", "btime\n", "btime x\n", "btime -5\n", "btimes 17\n"}) {
    EXPECT_FALSE(ParseBootTime(bad).ok()) << bad;
  }
}

// A fake /proc: self/stat, stat and self/fd/ with three entries.
class FakeProc {
 public:
  FakeProc() {
    char tmpl[] = "/tmp/umpath-fake-proc-XXXXXX";
    dir_ = mkdtemp(tmpl);
    std::filesystem::create_directories(dir_ + "/self/fd");
    for (const char* fd : {"0", "1", "2"}) std::ofstream(dir_ + "/self/fd/" + fd) << "";
  }
  ~FakeProc() { std::filesystem::remove_all(dir_); }
  void Write(const std::string& file, const std::string& text) { std::ofstream(dir_ + "/" + file) << text; }
  ProcessSource source() const { return {dir_, 100, 4096}; }

 private:
  std::string dir_;
};

std::map<std::string, double> Values(const std::vector<prometheus::MetricFamily>& families) {
  std::map<std::string, double> v;
  for (const prometheus::MetricFamily& f : families) {
    EXPECT_EQ(f.metric.size(), 1u) << f.name;
    const prometheus::ClientMetric& m = f.metric.at(0);
    v[f.name] = f.type == prometheus::MetricType::Counter ? m.counter.value : m.gauge.value;
  }
  return v;
}

TEST(AppendProcessFamiliesTest, SeriesFromAFakeProc) {
  FakeProc proc;
  proc.Write("self/stat", kStat);
  proc.Write("stat", "cpu  1 2 3\nbtime 1764700000\n");
  std::vector<prometheus::MetricFamily> f;
  AppendProcessFamilies(proc.source(), &f);
  const std::map<std::string, double> v = Values(f);
  EXPECT_DOUBLE_EQ(v.at("process_cpu_seconds_total"), 2.0);  // (150 + 50) / 100
  EXPECT_DOUBLE_EQ(v.at("process_resident_memory_bytes"), 2560.0 * 4096);
  EXPECT_DOUBLE_EQ(v.at("process_virtual_memory_bytes"), 104857600.0);
  EXPECT_DOUBLE_EQ(v.at("process_threads"), 7.0);
  EXPECT_DOUBLE_EQ(v.at("process_start_time_seconds"), 1764700000.0 + 1234.56);
  EXPECT_DOUBLE_EQ(v.at("process_open_fds"), 3.0);
  EXPECT_GT(v.at("process_max_fds"), 0.0);
  const std::string text = prometheus::TextSerializer().Serialize(f);
  EXPECT_THAT(text, HasSubstr("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 2\n"));
}

// What cannot be read or parsed is left out of the scrape; the rest is there.
TEST(AppendProcessFamiliesTest, MalformedProcLeavesItsSeriesOut) {
  struct Case {
    const char* what;
    std::string stat, boot;  // "" : the file is missing
    std::vector<std::string> present;
  };
  const std::vector<std::string> fds = {"process_max_fds", "process_open_fds"};
  const std::vector<std::string> all = {"process_cpu_seconds_total", "process_max_fds", "process_open_fds",
                                        "process_resident_memory_bytes", "process_start_time_seconds",
                                        "process_threads", "process_virtual_memory_bytes"};
  std::vector<std::string> no_start = all;
  std::erase(no_start, "process_start_time_seconds");
  for (const Case& c : {
           Case{"no stat files", "", "", fds},
           Case{"truncated stat", std::string(kStat).substr(0, 40), "btime 1764700000\n", fds},
           Case{"garbage stat", "\x01\x02)) ((", "btime 1764700000\n", fds},
           Case{"no btime", kStat, "cpu 1 2 3\n", no_start},
           Case{"all good", kStat, "btime 1764700000\n", all},
       }) {
    SCOPED_TRACE(c.what);
    FakeProc proc;
    if (!c.stat.empty()) proc.Write("self/stat", c.stat);
    if (!c.boot.empty()) proc.Write("stat", c.boot);
    std::vector<prometheus::MetricFamily> f;
    AppendProcessFamilies(proc.source(), &f);
    std::vector<std::string> names;
    for (const auto& [name, v] : Values(f)) names.push_back(name);
    EXPECT_EQ(names, c.present);
  }
  // No /proc at all: nothing from it, and the limit still.
  std::vector<prometheus::MetricFamily> f;
  AppendProcessFamilies({"/nonexistent/proc", 100, 4096}, &f);
  EXPECT_THAT(prometheus::TextSerializer().Serialize(f), Not(HasSubstr("process_open_fds")));
}

}  // namespace
}  // namespace umpath::server
