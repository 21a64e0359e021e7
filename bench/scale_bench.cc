// Issue 18 item 3: umpathd at scale, on the simulated backend (--sim), through its real
// socket and metrics port. For each size (heads x paths): resident memory, the time
// from the start until every head has all its paths live, ListHeads by pages of 1,000
// (p50/p99 per page), GetHead, the WatchEvents snapshot, a metrics scrape, and event
// fan-out to watchers (publish-to-receipt p50/p99 and the agent's CPU per delivered
// event); then how each grows with the number of heads.
//
// Usage: umpath_scale_bench --umpathd=PATH [--sizes=256,1024,4096] [--paths=4]
//          [--namespaces_per_subsystem=16] [--watchers=100] [--events=200] [--rate=20]
// Each size runs its own umpathd (no block devices, null namespaces). The bench's
// clients share the machine with it: on 2 cores the figures include that contention.

#include <arpa/inet.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "grpcpp/grpcpp.h"
#include "umpath/v1/control.grpc.pb.h"

ABSL_FLAG(std::string, umpathd, "", "the umpathd binary");
ABSL_FLAG(std::string, sizes, "256,1024,4096", "numbers of heads");
ABSL_FLAG(int, paths, 4, "paths per head (controllers per subsystem)");
ABSL_FLAG(int, namespaces_per_subsystem, 16, "heads per subsystem");
ABSL_FLAG(int, watchers, 100, "WatchEvents streams during the fan-out");
ABSL_FLAG(int, events, 200, "path failures and reinstatements during the fan-out");
ABSL_FLAG(int, rate, 20, "of those, per second");

namespace {

using Clock = std::chrono::steady_clock;
using umpath::v1::MultipathControl;
namespace v1 = umpath::v1;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(std::ceil(p * v.size())) - (p > 0 ? 1 : 0));
  return v[i];
}

long StatusKb(pid_t pid, const char* field) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) {
      long kb = 0;
      std::istringstream(line.substr(line.find(':') + 1)) >> kb;
      return kb;
    }
  }
  return -1;
}

// utime + stime of the process, seconds.
double CpuSeconds(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> f = absl::StrSplit(all.substr(all.rfind(')') + 2), ' ');
  double ut = 0, st = 0;
  if (f.size() > 12) {
    (void)absl::SimpleAtod(f[11], &ut);
    (void)absl::SimpleAtod(f[12], &st);
  }
  return (ut + st) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// A plain HTTP/1.0 GET of /metrics on loopback: the body.
std::string Scrape(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    const std::string req = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
    (void)!write(fd, req.data(), req.size());
    char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  const size_t body = out.find("\r\n\r\n");
  return body == std::string::npos ? "" : out.substr(body + 4);
}

struct Figures {
  int heads = 0;
  double start_s = NAN;
  long rss_kb = 0, hwm_kb = 0;
  double list_p50 = NAN, list_p99 = NAN, list_all_ms = NAN;
  double get_p99 = NAN;
  double snapshot_ms = NAN;
  size_t snapshot_bytes = 0;
  double scrape_ms = NAN;
  size_t scrape_bytes = 0, scrape_series = 0;
  double fan_p50 = NAN, fan_p99 = NAN, cpu_us_per_delivery = NAN;
  uint64_t delivered = 0, expected = 0;
  std::string error;
};

class Agent {
 public:
  Agent(const std::string& binary, int heads, const std::string& dir, int metrics_port) {
    const int per = absl::GetFlag(FLAGS_namespaces_per_subsystem);
    const std::string sim = absl::StrCat((heads + per - 1) / per, ":", per, ":", absl::GetFlag(FLAGS_paths));
    socket_ = dir + "/umpathd.sock";
    std::vector<std::string> args = {binary,
                                     "--sim=" + sim,
                                     "--sim_memory=false",
                                     "--ublk=false",
                                     "--workers=1",
                                     "--socket=" + socket_,
                                     "--state_file=" + dir + "/heads",
                                     "--handover_socket=" + dir + "/handover.sock",
                                     absl::StrCat("--metrics_address=127.0.0.1:", metrics_port),
                                     absl::StrCat("--max_watchers=", absl::GetFlag(FLAGS_watchers) + 16),
                                     absl::StrCat("--max_watchers_per_caller=", absl::GetFlag(FLAGS_watchers) + 16)};
    started_ = Clock::now();
    pid_ = fork();
    if (pid_ == 0) {
      const std::string log = dir + "/umpathd.err";
      freopen(log.c_str(), "w", stderr);
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    // Retried every 50 ms until the agent listens (gRPC's own backoff would wait seconds).
    grpc::ChannelArguments ch;
    ch.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
    ch.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
    ch.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 50);
    stub_ = MultipathControl::NewStub(
        grpc::CreateCustomChannel("unix:" + socket_, grpc::InsecureChannelCredentials(), ch));
  }
  ~Agent() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int st;
      waitpid(pid_, &st, 0);
    }
  }
  pid_t pid() const { return pid_; }
  Clock::time_point started() const { return started_; }
  MultipathControl::Stub* stub() { return stub_.get(); }
  const std::string& socket() const { return socket_; }

 private:
  pid_t pid_ = -1;
  std::string socket_;
  Clock::time_point started_;
  std::unique_ptr<MultipathControl::Stub> stub_;
};

// Every head by pages of 1,000; each page's time into `page_ms` when given.
grpc::Status ListAll(MultipathControl::Stub* stub, std::vector<v1::Head>* heads,
                     std::vector<double>* page_ms = nullptr) {
  v1::ListHeadsRequest req;
  req.set_page_size(1000);
  do {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::ListHeadsResponse resp;
    const auto t0 = Clock::now();
    grpc::Status s = stub->ListHeads(&ctx, req, &resp);
    if (page_ms) page_ms->push_back(Ms(Clock::now() - t0));
    if (!s.ok()) return s;
    for (v1::Head& h : *resp.mutable_heads()) heads->push_back(std::move(h));
    req.set_page_token(resp.next_page_token());
  } while (!req.page_token().empty());
  return grpc::Status::OK;
}

void Run(const std::string& binary, int heads, Figures* f) {
  f->heads = heads;
  char tmpl[] = "/tmp/umpath-scale-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  const int mport = FreePort();
  Agent agent(binary, heads, dir, mport);
  const int paths = absl::GetFlag(FLAGS_paths);
  const int expected_heads = (heads + absl::GetFlag(FLAGS_namespaces_per_subsystem) - 1) /
                             absl::GetFlag(FLAGS_namespaces_per_subsystem) *
                             absl::GetFlag(FLAGS_namespaces_per_subsystem);

  // Start: until every head has all its paths live (polled every 50 ms, once the socket
  // exists: a gRPC channel that found nothing listening backs off for seconds).
  while (access(agent.socket().c_str(), F_OK) != 0 && Clock::now() - agent.started() < std::chrono::minutes(1)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::vector<v1::Head> all;
  for (;;) {
    if (Clock::now() - agent.started() > std::chrono::minutes(10)) {
      f->error = "never saw every head with all its paths live";
      return;
    }
    all.clear();
    grpc::Status ls = ListAll(agent.stub(), &all);
    if (ls.ok() && static_cast<int>(all.size()) == expected_heads &&
        std::all_of(all.begin(), all.end(),
                    [&](const v1::Head& h) { return static_cast<int>(h.live_paths()) == paths; })) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  f->start_s = Ms(Clock::now() - agent.started()) / 1000;
  f->heads = expected_heads;
  f->rss_kb = StatusKb(agent.pid(), "VmRSS");
  f->hwm_kb = StatusKb(agent.pid(), "VmHWM");

  // ListHeads: 20 full listings by pages of 1,000.
  std::vector<double> page_ms, all_ms;
  for (int i = 0; i < 20; ++i) {
    std::vector<v1::Head> h;
    const auto t0 = Clock::now();
    (void)ListAll(agent.stub(), &h, &page_ms);
    all_ms.push_back(Ms(Clock::now() - t0));
  }
  f->list_p50 = Percentile(page_ms, 0.5);
  f->list_p99 = Percentile(page_ms, 0.99);
  f->list_all_ms = Percentile(all_ms, 0.5);

  // GetHead: 500 random heads.
  std::mt19937 rng(7);
  std::vector<double> get_ms;
  for (int i = 0; i < 500; ++i) {
    grpc::ClientContext ctx;
    v1::GetHeadRequest req;
    req.set_name(all[rng() % all.size()].name());
    v1::GetHeadResponse resp;
    const auto t0 = Clock::now();
    if (agent.stub()->GetHead(&ctx, req, &resp).ok()) get_ms.push_back(Ms(Clock::now() - t0));
  }
  f->get_p99 = Percentile(get_ms, 0.99);

  // The snapshot: from the call to its first message.
  {
    grpc::ClientContext ctx;
    v1::WatchEventsRequest req;
    const auto t0 = Clock::now();
    auto reader = agent.stub()->WatchEvents(&ctx, req);
    v1::WatchEventsResponse resp;
    if (reader->Read(&resp) && resp.has_snapshot()) {
      f->snapshot_ms = Ms(Clock::now() - t0);
      f->snapshot_bytes = resp.ByteSizeLong();
    }
    ctx.TryCancel();
    reader->Finish();
  }

  // A scrape (the second: the first may pay for first-use allocations).
  (void)Scrape(mport);
  {
    const auto t0 = Clock::now();
    const std::string body = Scrape(mport);
    f->scrape_ms = Ms(Clock::now() - t0);
    f->scrape_bytes = body.size();
    for (absl::string_view line : absl::StrSplit(body, '\n')) {
      f->scrape_series += !line.empty() && line[0] != '#';
    }
  }

  // Fan-out: watchers read live events while paths fail and come back at --rate a second.
  const int nw = absl::GetFlag(FLAGS_watchers);
  const int ne = absl::GetFlag(FLAGS_events);
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs(nw);
  std::vector<std::vector<double>> lat(nw);
  std::atomic<int> ready{0};
  std::atomic<uint64_t> delivered{0};
  std::vector<std::thread> readers;
  auto ch = grpc::CreateChannel("unix:" + agent.socket(), grpc::InsecureChannelCredentials());
  std::unique_ptr<MultipathControl::Stub> wstub = MultipathControl::NewStub(ch);
  for (int w = 0; w < nw; ++w) {
    ctxs[w] = std::make_unique<grpc::ClientContext>();
    readers.emplace_back([&, w] {
      v1::WatchEventsRequest req;
      req.add_types(v1::EVENT_TYPE_PATH_STATE_CHANGED);
      auto reader = wstub->WatchEvents(ctxs[w].get(), req);
      v1::WatchEventsResponse resp;
      bool counted = false;
      while (reader->Read(&resp)) {
        if (resp.has_snapshot() || resp.has_progress()) {
          if (!counted) ready.fetch_add(1), counted = true;
          continue;
        }
        const auto& t = resp.event().time();
        const double sent_ns = static_cast<double>(t.seconds()) * 1e9 + t.nanos();
        const double now_ns = static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                      std::chrono::system_clock::now().time_since_epoch())
                                                      .count());
        lat[w].push_back((now_ns - sent_ns) / 1e6);
        delivered.fetch_add(1);
      }
      reader->Finish();
    });
  }
  while (ready.load() < nw) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const double cpu0 = CpuSeconds(agent.pid());
  const auto gap = std::chrono::microseconds(1000000 / std::max(1, absl::GetFlag(FLAGS_rate)));
  auto next = Clock::now();
  int changes = 0;
  for (int i = 0; i < ne; i += 2) {
    const v1::Head& h = all[rng() % all.size()];
    const std::string path = h.paths(static_cast<int>(rng() % h.paths_size())).name();
    for (int k = 0; k < 2 && i + k < ne; ++k) {
      std::this_thread::sleep_until(next);
      next += gap;
      grpc::ClientContext ctx;
      grpc::Status s;
      if (k == 0) {
        v1::FailPathRequest req;
        req.set_name(path);
        req.set_reason("scale bench");
        v1::FailPathResponse resp;
        s = agent.stub()->FailPath(&ctx, req, &resp);
      } else {
        v1::ReinstatePathRequest req;
        req.set_name(path);
        v1::ReinstatePathResponse resp;
        s = agent.stub()->ReinstatePath(&ctx, req, &resp);
      }
      changes += s.ok();
      if (!s.ok() && f->error.empty()) f->error = absl::StrCat("fail/reinstate: ", s.error_message());
    }
  }
  // Until every watcher has every event (or 30 s pass).
  f->expected = static_cast<uint64_t>(changes) * nw;
  const auto until = Clock::now() + std::chrono::seconds(30);
  while (delivered.load() < f->expected && Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const double cpu1 = CpuSeconds(agent.pid());
  f->delivered = delivered.load();
  for (auto& c : ctxs) c->TryCancel();
  for (auto& t : readers) t.join();
  std::vector<double> merged;
  for (auto& l : lat) merged.insert(merged.end(), l.begin(), l.end());
  f->fan_p50 = Percentile(merged, 0.5);
  f->fan_p99 = Percentile(merged, 0.99);
  if (f->delivered > 0) f->cpu_us_per_delivery = (cpu1 - cpu0) * 1e6 / static_cast<double>(f->delivered);
  std::filesystem::remove_all(dir);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string binary = absl::GetFlag(FLAGS_umpathd);
  if (binary.empty()) {
    std::fprintf(stderr, "usage: umpath_scale_bench --umpathd=PATH [--sizes=256,1024,4096]\n");
    return 2;
  }
  std::vector<Figures> all;
  for (absl::string_view s : absl::StrSplit(absl::GetFlag(FLAGS_sizes), ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(s, &n) || n <= 0) {
      std::fprintf(stderr, "not a size: %s\n", std::string(s).c_str());
      return 2;
    }
    Figures f;
    Run(binary, n, &f);
    all.push_back(f);
    std::printf(
        "scale: heads %d x %d paths: start %.1f s, rss %.1f MB (peak %.1f), ListHeads page p50 %.1f ms p99 %.1f ms "
        "(all %.0f ms), GetHead p99 %.2f ms, snapshot %.0f ms %.1f MB, scrape %.0f ms %.1f MB %zu series, "
        "fan-out %d watchers: %llu/%llu delivered, p50 %.1f ms p99 %.1f ms, agent cpu %.1f us/delivery%s%s\n",
        f.heads, absl::GetFlag(FLAGS_paths), f.start_s, f.rss_kb / 1024.0, f.hwm_kb / 1024.0, f.list_p50, f.list_p99,
        f.list_all_ms, f.get_p99, f.snapshot_ms, f.snapshot_bytes / 1048576.0, f.scrape_ms, f.scrape_bytes / 1048576.0,
        f.scrape_series, absl::GetFlag(FLAGS_watchers), static_cast<unsigned long long>(f.delivered),
        static_cast<unsigned long long>(f.expected), f.fan_p50, f.fan_p99, f.cpu_us_per_delivery,
        f.error.empty() ? "" : "; ERROR: ", f.error.c_str());
    std::fflush(stdout);
  }
  // Growth: each figure at the largest size over the smallest, beside the heads' ratio.
  if (all.size() >= 2) {
    const Figures& a = all.front();
    const Figures& b = all.back();
    const double x = static_cast<double>(b.heads) / a.heads;
    auto growth = [&](const char* what, double va, double vb) {
      const double r = vb / va;
      const char* verdict = r <= 1.5 ? "flat" : r <= x * 1.5 ? "linear or better" : "worse than linear";
      std::printf("growth: %-22s x%.1f for x%.0f heads (%s)\n", what, r, x, verdict);
    };
    growth("rss", a.rss_kb, b.rss_kb);
    growth("start", a.start_s, b.start_s);
    growth("ListHeads page p99", a.list_p99, b.list_p99);
    growth("ListHeads all", a.list_all_ms, b.list_all_ms);
    growth("GetHead p99", a.get_p99, b.get_p99);
    growth("snapshot", a.snapshot_ms, b.snapshot_ms);
    growth("scrape", a.scrape_ms, b.scrape_ms);
    growth("fan-out p99", a.fan_p99, b.fan_p99);
    growth("cpu per delivery", a.cpu_us_per_delivery, b.cpu_us_per_delivery);
  }
  return 0;
}
