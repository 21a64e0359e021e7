// The control service against a baseline run beside it (printed, never asserted):
//  1. GetHead over a Unix socket: umpathd's server (peer credentials, roles, the core's
//     lookup, conversion) against a bare gRPC server answering the same message from
//     memory on the same kind of socket. Calls/s, p50/p99 latency, and the ratio.
//  2. WatchEvents fan-out: N watchers; for each state change, the time until the last
//     watcher has it. p50/p99/max over the changes, with the process's CPU time and RSS.
//  3. WatchEvents fan-out with the watchers in another process (fanout_bench.cc): the
//     server's CPU per delivered event and publish-to-receipt p50/p99, against a bare
//     gRPC server streaming the same bytes.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "agent/base/mutex.h"
#include "agent/core/multipath.h"
#include "bench/fanout_bench.h"
#include "grpcpp/grpcpp.h"
#include "server/control_server.h"
#include "server/convert.h"
#include "server/testing/test_topology.h"
#include "umpath/v1/control.grpc.pb.h"

namespace umpath {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Latencies {
  std::vector<double> ms;
  double Pct(double p) {
    std::sort(ms.begin(), ms.end());
    return ms.empty() ? 0 : ms[std::min(ms.size() - 1, static_cast<size_t>(p * ms.size()))];
  }
};

// The baseline: GetHead answered from a prepared message, nothing else.
class BareService final : public v1::MultipathControl::CallbackService {
 public:
  explicit BareService(v1::Head head) : head_(std::move(head)) {}
  grpc::ServerUnaryReactor* GetHead(grpc::CallbackServerContext* ctx, const v1::GetHeadRequest*,
                                    v1::GetHeadResponse* resp) override {
    *resp->mutable_head() = head_;
    auto* r = ctx->DefaultReactor();
    r->Finish(grpc::Status::OK);
    return r;
  }

 private:
  const v1::Head head_;
};

struct Rate {
  double calls_per_sec;
  double p50, p99;
};

Rate Hammer(const std::string& target, const std::string& head, int threads, int seconds) {
  std::atomic<bool> stop{false};
  std::vector<Latencies> lat(threads);
  std::vector<std::thread> ts;
  std::atomic<uint64_t> calls{0}, errors{0};
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection per thread
      auto stub = v1::MultipathControl::NewStub(
          grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
      v1::GetHeadRequest req;
      req.set_name(head);
      while (!stop.load(std::memory_order_relaxed)) {
        grpc::ClientContext ctx;
        v1::GetHeadResponse resp;
        const auto t0 = Clock::now();
        grpc::Status s = stub->GetHead(&ctx, req, &resp);
        lat[t].ms.push_back(Ms(Clock::now() - t0));
        (s.ok() ? calls : errors).fetch_add(1);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  stop = true;
  for (auto& t : ts) t.join();
  if (errors > 0) std::printf("  (%lu errors)\n", static_cast<unsigned long>(errors.load()));
  Latencies all;
  for (auto& l : lat) all.ms.insert(all.ms.end(), l.ms.begin(), l.ms.end());
  return Rate{static_cast<double>(calls) / seconds, all.Pct(0.5), all.Pct(0.99)};
}

void GetHeadBench(const std::string& dir, int seconds) {
  auto mp = *Multipath::Create(MultipathOptions{});
  (void)testing::AddTestTopology(mp.get(), 2, 1);
  const std::string head = "heads/nguid-ab000000000000000000000000000001";
  server::ServerOptions o;
  o.socket_path = dir + "/umpathd.sock";
  o.access.admin_uids = {getuid()};
  auto ours = *server::ControlServer::Create(mp.get(), o);

  v1::Head prepared;
  server::ToProto(*mp->GetHead(head.substr(6)), &prepared);
  BareService bare(prepared);
  grpc::ServerBuilder b;
  b.RegisterService(&bare);
  b.AddListeningPort("unix:" + dir + "/bare.sock", grpc::InsecureServerCredentials());
  auto bare_server = b.BuildAndStart();

  std::printf("GetHead over a Unix socket, %d s per run:\n", seconds);
  for (int threads : {1, 2}) {
    Rate base = Hammer("unix:" + dir + "/bare.sock", head, threads, seconds);
    Rate mine = Hammer("unix:" + o.socket_path, head, threads, seconds);
    std::printf("  %d client thread(s): bare %.0f calls/s (p50 %.3f ms, p99 %.3f ms); "
                "umpathd %.0f calls/s (p50 %.3f ms, p99 %.3f ms); ratio %.3f\n",
                threads, base.calls_per_sec, base.p50, base.p99, mine.calls_per_sec, mine.p50,
                mine.p99, mine.calls_per_sec / base.calls_per_sec);
  }
  bare_server->Shutdown();
  ours->Shutdown();
}

// One watcher on the callback client API: records when each revision arrives.
class Watcher final : public grpc::ClientReadReactor<v1::WatchEventsResponse> {
 public:
  Watcher(v1::MultipathControl::Stub* stub, std::vector<Clock::time_point>* arrivals,
          std::atomic<int>* ready)
      : arrivals_(arrivals), ready_(ready) {
    stub->async()->WatchEvents(&ctx_, &req_, this);
    StartRead(&msg_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (msg_.has_snapshot()) {
      base_ = msg_.snapshot().revision();
      ready_->fetch_add(1);
    } else if (msg_.has_event()) {
      const uint64_t k = msg_.event().revision() - base_ - 1;
      if (k < arrivals_->size()) (*arrivals_)[k] = Clock::now();
    }
    StartRead(&msg_);
  }
  void OnDone(const grpc::Status&) override { done_.Notify(); }
  void Cancel() { ctx_.TryCancel(); }
  void Wait() { done_.WaitFor(std::chrono::seconds(30)); }

 private:
  grpc::ClientContext ctx_;
  v1::WatchEventsRequest req_;
  v1::WatchEventsResponse msg_;
  std::vector<Clock::time_point>* arrivals_;
  std::atomic<int>* ready_;
  uint64_t base_ = 0;
  Notification done_;
};

long RssKb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

double CpuSeconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

void FanOutBench(const std::string& dir, int watchers, int changes) {
  auto mp = *Multipath::Create(MultipathOptions{});
  (void)testing::AddTestTopology(mp.get(), 2, 1);
  server::ServerOptions o;
  o.socket_path = dir + "/fanout.sock";
  o.access.admin_uids = {getuid()};
  o.service.watch.max_watchers = watchers + 16;
  o.service.watch.max_watchers_per_caller = watchers + 16;
  auto ours = *server::ControlServer::Create(mp.get(), o);
  const long rss0 = RssKb();

  // A few connections, many streams each, as a node's sidecars and dashboards would.
  std::vector<std::unique_ptr<v1::MultipathControl::Stub>> stubs;
  for (int i = 0; i < 8; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt(GRPC_ARG_MAX_CONCURRENT_STREAMS, 100000);
    stubs.push_back(v1::MultipathControl::NewStub(grpc::CreateCustomChannel(
        "unix:" + o.socket_path, grpc::InsecureChannelCredentials(), args)));
  }
  std::vector<std::vector<Clock::time_point>> arrivals(
      watchers, std::vector<Clock::time_point>(changes));
  std::atomic<int> ready{0};
  std::vector<std::unique_ptr<Watcher>> ws;
  for (int i = 0; i < watchers; ++i) {
    ws.push_back(std::make_unique<Watcher>(stubs[i % stubs.size()].get(), &arrivals[i], &ready));
  }
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (ready.load() < watchers && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const long rss1 = RssKb();
  const double cpu0 = CpuSeconds();
  const std::string head = "nguid-ab000000000000000000000000000001";
  std::vector<Clock::time_point> sent(changes);
  for (int k = 0; k < changes; ++k) {
    sent[k] = Clock::now();
    (void)mp->SetDelayedRemoval(head, 10 + (k % 2));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const double cpu = CpuSeconds() - cpu0;
  Latencies last;
  int missing = 0;
  for (int k = 0; k < changes; ++k) {
    Clock::time_point latest = sent[k];
    for (int i = 0; i < watchers; ++i) {
      if (arrivals[i][k] == Clock::time_point{}) {
        ++missing;
      } else {
        latest = std::max(latest, arrivals[i][k]);
      }
    }
    last.ms.push_back(Ms(latest - sent[k]));
  }
  std::printf("WatchEvents fan-out: %d watchers (%d ready), %d changes 50 ms apart:\n", watchers,
              ready.load(), changes);
  std::printf("  change -> last watcher's receipt: p50 %.2f ms, p99 %.2f ms, max %.2f ms; "
              "%d receipts missing\n",
              last.Pct(0.5), last.Pct(0.99), last.Pct(1.0), missing);
  std::printf("  process CPU while fanning out (server and clients in one process): %.2f s "
              "over %.1f s; RSS %ld kB idle, %ld kB with the watchers (+%ld kB, %.1f kB each)\n",
              cpu, changes * 0.05 + 0.5, rss0, rss1, rss1 - rss0,
              static_cast<double>(rss1 - rss0) / watchers);
  for (auto& w : ws) w->Cancel();
  for (auto& w : ws) w->Wait();
  ours->Shutdown();
}

}  // namespace
}  // namespace umpath

// umpath_server_bench [SECONDS [WATCHERS [RATE [FANOUT_SECONDS [CONNECTIONS]]]]]
// umpath_server_bench --fanout [WATCHERS [RATE [FANOUT_SECONDS [CONNECTIONS]]]]: case 3 only.
int main(int argc, char** argv) {
  // As umpathd does (agent/main.cc), for both servers here: Debian's absl::Mutex would
  // otherwise keep a deadlock-detection graph of every lock gRPC takes.
  if (!std::getenv("UMPATH_BENCH_ABSL_DEADLOCK_DETECTION")) {
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  }
  if (argc > 1 && std::string(argv[1]) == "--fanout-client") {
    return umpath::FanOutClientMain(argc - 1, argv + 1);
  }
  const bool fanout_only = argc > 1 && std::string(argv[1]) == "--fanout";
  auto arg = [&](int i, int def) { return argc > i ? std::atoi(argv[i]) : def; };
  const int seconds = fanout_only ? 0 : arg(1, 3);
  umpath::FanOutOptions fan;
  fan.watchers = arg(2, 1000);
  fan.rate = std::max(1, arg(3, 20));
  fan.seconds = std::max(1, arg(4, 10));
  fan.connections = arg(5, 0);
  char tmpl[] = "/tmp/umpath-server-bench-XXXXXX";
  if (!mkdtemp(tmpl)) return 1;
  if (!fanout_only) {
    umpath::GetHeadBench(tmpl, seconds);
    umpath::FanOutBench(tmpl, fan.watchers, 40);
  }
  umpath::FanOutProcessBench(tmpl, fan);
  std::filesystem::remove_all(tmpl);
  return 0;
}
