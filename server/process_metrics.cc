#include "server/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace umpath::server {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

std::optional<std::string> ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return s.str();
}

// Entries of <proc>/self/fd. The directory being read is itself one of them, as in the
// Go client's count, which the same dashboards were drawn with.
std::optional<uint64_t> CountOpenFds(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return std::nullopt;
  uint64_t n = 0;
  while (const dirent* e = readdir(d)) {
    const absl::string_view name = e->d_name;
    if (name != "." && name != "..") ++n;
  }
  closedir(d);
  return n;
}

void Add(std::vector<MetricFamily>* out, const char* name, MetricType type, const char* help, double v) {
  ClientMetric m;
  if (type == MetricType::Counter) {
    m.counter.value = v;
  } else {
    m.gauge.value = v;
  }
  out->push_back(MetricFamily{name, help, type, {std::move(m)}});
}

}  // namespace

absl::StatusOr<ProcStat> ParseProcStat(absl::string_view text) {
  const size_t close = text.rfind(')');
  if (close == absl::string_view::npos) return absl::InvalidArgumentError("/proc stat: no command");
  const std::vector<absl::string_view> f =
      absl::StrSplit(text.substr(close + 1), absl::ByAnyChar(" \n"), absl::SkipEmpty());
  // f[0] is field 3 (state); field N is f[N - 3].
  auto field = [&f](size_t n, uint64_t* v) { return n - 3 < f.size() && absl::SimpleAtoi(f[n - 3], v); };
  ProcStat s;
  if (!field(14, &s.utime_ticks) || !field(15, &s.stime_ticks) || !field(20, &s.threads) ||
      !field(22, &s.start_ticks) || !field(23, &s.vsize_bytes) || !field(24, &s.rss_pages)) {
    return absl::InvalidArgumentError(absl::StrCat("/proc stat: ", f.size() + 2, " fields, or one not a number"));
  }
  return s;
}

absl::StatusOr<int64_t> ParseBootTime(absl::string_view text) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    std::vector<absl::string_view> w = absl::StrSplit(line, ' ', absl::SkipEmpty());
    int64_t t;
    if (w.size() == 2 && w[0] == "btime" && absl::SimpleAtoi(w[1], &t) && t > 0) return t;
  }
  return absl::InvalidArgumentError("/proc/stat: no btime line");
}

void AppendProcessFamilies(const ProcessSource& source, std::vector<MetricFamily>* out) {
  const double ticks = static_cast<double>(source.ticks_per_second > 0 ? source.ticks_per_second
                                                                      : sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(source.page_bytes > 0 ? source.page_bytes : sysconf(_SC_PAGESIZE));
  std::optional<std::string> text = ReadSmallFile(source.proc + "/self/stat");
  absl::StatusOr<ProcStat> st = text ? ParseProcStat(*text) : absl::NotFoundError("no /proc/self/stat");
  if (st.ok() && ticks > 0) {
    Add(out, "process_cpu_seconds_total", MetricType::Counter, "User and system CPU time spent, seconds",
        static_cast<double>(st->utime_ticks + st->stime_ticks) / ticks);
    Add(out, "process_resident_memory_bytes", MetricType::Gauge, "Resident memory size, bytes",
        static_cast<double>(st->rss_pages) * page);
    Add(out, "process_virtual_memory_bytes", MetricType::Gauge, "Virtual memory size, bytes",
        static_cast<double>(st->vsize_bytes));
    Add(out, "process_threads", MetricType::Gauge, "OS threads of the process", static_cast<double>(st->threads));
    text = ReadSmallFile(source.proc + "/stat");
    if (absl::StatusOr<int64_t> boot = text ? ParseBootTime(*text) : absl::NotFoundError(""); boot.ok()) {
      Add(out, "process_start_time_seconds", MetricType::Gauge, "Start time of the process since the epoch, seconds",
          static_cast<double>(*boot) + static_cast<double>(st->start_ticks) / ticks);
    }
  }
  if (std::optional<uint64_t> fds = CountOpenFds(source.proc + "/self/fd")) {
    Add(out, "process_open_fds", MetricType::Gauge, "Open file descriptors", static_cast<double>(*fds));
  }
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY) {
    Add(out, "process_max_fds", MetricType::Gauge, "Most file descriptors the process may open (RLIMIT_NOFILE)",
        static_cast<double>(lim.rlim_cur));
  }
}

}  // namespace umpath::server
