// WatchEvents fan-out across processes: N watchers in a child process (this binary run
// with --fanout-client), so that the parent's CPU time is the server's alone. Events
// are published at a fixed rate; per delivered event: the server's CPU, and the time
// from publishing (the event's own timestamp) to the client's receipt. umpathd's server
// against a bare gRPC server that streams the same bytes (the same core change, its
// event serialized once and written to every stream) run beside it.
#include "bench/fanout_bench.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "agent/base/mutex.h"
#include "agent/core/multipath.h"
#include "grpcpp/grpcpp.h"
#include "server/control_server.h"
#include "server/convert.h"
#include "server/testing/test_topology.h"
#include "umpath/v1/control.grpc.pb.h"

namespace umpath {
namespace {

using SteadyClock = std::chrono::steady_clock;
constexpr char kHead[] = "nguid-ab000000000000000000000000000001";

double CpuSeconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

int64_t WallNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// --- The client side (child process). ---

// One watcher: checks every event comes once and in order, and records its latency.
class FanWatcher final : public grpc::ClientReadReactor<v1::WatchEventsResponse> {
 public:
  FanWatcher(v1::MultipathControl::Stub* stub, uint32_t batch, size_t expect,
             std::atomic<int>* ready, std::atomic<int>* complete)
      : expect_(expect), ready_(ready), complete_(complete) {
    latencies_ms_.reserve(expect);
    req_.set_max_events_per_message(batch);
    stub->async()->WatchEvents(&ctx_, &req_, this);
    StartRead(&msg_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    const int64_t now = WallNanos();
    if (msg_.has_snapshot()) {
      last_ = msg_.snapshot().revision();
      ready_->fetch_add(1);
    } else if (msg_.has_event()) {
      Take(msg_.event(), now);
    } else if (msg_.has_batch()) {
      for (const v1::Event& e : msg_.batch().events()) Take(e, now);
      ++batches_;
    }
    StartRead(&msg_);
  }
  void OnDone(const grpc::Status& s) override {
    status_ = s;
    done_.Notify();
  }
  void Cancel() { ctx_.TryCancel(); }
  void Wait() { done_.WaitFor(std::chrono::seconds(30)); }

  const std::vector<float>& latencies_ms() const { return latencies_ms_; }
  uint64_t order_errors() const { return order_errors_; }
  uint64_t messages() const { return messages_; }
  uint64_t batches() const { return batches_; }

 private:
  void Take(const v1::Event& e, int64_t now) {
    ++messages_;
    if (e.revision() != last_ + 1) ++order_errors_;  // a gap, a repeat or a reorder
    last_ = e.revision();
    const int64_t sent = e.time().seconds() * 1'000'000'000 + e.time().nanos();
    latencies_ms_.push_back(static_cast<float>(now - sent) / 1e6f);
    if (latencies_ms_.size() == expect_) complete_->fetch_add(1);
  }

  grpc::ClientContext ctx_;
  v1::WatchEventsRequest req_;
  v1::WatchEventsResponse msg_;
  const size_t expect_;
  std::atomic<int>* ready_;
  std::atomic<int>* complete_;
  uint64_t last_ = 0;
  uint64_t order_errors_ = 0;
  uint64_t messages_ = 0;
  uint64_t batches_ = 0;
  std::vector<float> latencies_ms_;
  grpc::Status status_;
  Notification done_;
};

bool WaitCount(const std::atomic<int>& n, int want, std::chrono::seconds timeout) {
  const auto deadline = SteadyClock::now() + timeout;
  while (n.load() < want) {
    if (SteadyClock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace

int FanOutClientMain(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "--fanout-client TARGET WATCHERS CONNECTIONS EVENTS BATCH\n");
    return 2;
  }
  const std::string target = argv[1];
  const int watchers = std::atoi(argv[2]);
  const int connections = std::max(1, std::atoi(argv[3]));
  const size_t events = std::strtoul(argv[4], nullptr, 10);
  const uint32_t batch = static_cast<uint32_t>(std::strtoul(argv[5], nullptr, 10));
  std::vector<std::unique_ptr<v1::MultipathControl::Stub>> stubs;
  for (int i = 0; i < connections; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection each
    stubs.push_back(v1::MultipathControl::NewStub(
        grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args)));
  }
  std::atomic<int> ready{0}, complete{0};
  std::vector<std::unique_ptr<FanWatcher>> ws;
  for (int i = 0; i < watchers; ++i) {
    ws.push_back(std::make_unique<FanWatcher>(stubs[i % connections].get(), batch, events,
                                              &ready, &complete));
  }
  if (!WaitCount(ready, watchers, std::chrono::seconds(120))) {
    std::printf("error only %d of %d watchers started\n", ready.load(), watchers);
    std::fflush(stdout);
    std::_Exit(1);
  }
  std::printf("ready\n");
  std::fflush(stdout);
  // The parent publishes; every watcher should have every event some time after.
  WaitCount(complete, watchers, std::chrono::seconds(60 + events / 5));
  std::vector<float> all;
  uint64_t order_errors = 0, messages = 0, batches = 0;
  for (auto& w : ws) {
    all.insert(all.end(), w->latencies_ms().begin(), w->latencies_ms().end());
    order_errors += w->order_errors();
    messages += w->messages();
    batches += w->batches();
  }
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) {
    return all.empty() ? 0.0 : all[std::min(all.size() - 1, static_cast<size_t>(p * all.size()))];
  };
  std::printf("result delivered=%" PRIu64 " complete=%d order_errors=%" PRIu64
              " batches=%" PRIu64 " p50=%.3f p99=%.3f max=%.3f\n",
              messages, complete.load(), order_errors, batches, pct(0.5), pct(0.99),
              all.empty() ? 0.0 : all.back());
  std::fflush(stdout);
  // The parent has what it needs: leave without a teardown that would only cost time.
  std::_Exit(0);
}

namespace {

// --- The bare server: the minimal fan-out, each event serialized once. ---

class BareWatchService final
    : public v1::MultipathControl::WithRawCallbackMethod_WatchEvents<
          v1::MultipathControl::CallbackService> {
 public:
  // Threading: Send comes from the publisher under the service's mutex; OnWriteDone and
  // OnCancel from gRPC threads; the stream's own mutex orders them.
  class Stream final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
   public:
    Stream(BareWatchService* service, const grpc::ByteBuffer& first) : service_(service) {
      MutexLock lock(&mu_);
      StartLocked(first);
    }
    void Send(const grpc::ByteBuffer& b) {
      MutexLock lock(&mu_);
      if (finished_) return;
      if (writing_) {
        queue_.push_back(b);
      } else {
        StartLocked(b);
      }
    }
    void OnWriteDone(bool ok) override {
      MutexLock lock(&mu_);
      writing_ = false;
      if (!ok || finished_) return;
      if (!queue_.empty()) {
        StartLocked(queue_.front());
        queue_.pop_front();
      }
    }
    void OnCancel() override {
      MutexLock lock(&mu_);
      if (finished_) return;
      finished_ = true;
      Finish(grpc::Status::CANCELLED);
    }
    void OnDone() override {
      service_->Forget(this);
      delete this;
    }

   private:
    void StartLocked(const grpc::ByteBuffer& b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      out_ = b;  // shares the slices
      writing_ = true;
      StartWrite(&out_);
    }

    BareWatchService* const service_;
    Mutex mu_;
    std::deque<grpc::ByteBuffer> queue_ ABSL_GUARDED_BY(mu_);
    grpc::ByteBuffer out_ ABSL_GUARDED_BY(mu_);
    bool writing_ ABSL_GUARDED_BY(mu_) = false;
    bool finished_ ABSL_GUARDED_BY(mu_) = false;
  };

  explicit BareWatchService(Multipath* mp) : mp_(mp) {}

  grpc::ServerWriteReactor<grpc::ByteBuffer>* WatchEvents(grpc::CallbackServerContext*,
                                                          const grpc::ByteBuffer*) override {
    v1::WatchEventsResponse snap;
    snap.mutable_snapshot()->set_revision(mp_->journal().current_revision());
    snap.set_incarnation(mp_->journal().incarnation());
    MutexLock lock(&mu_);
    auto* s = new Stream(this, Serialize(snap));
    streams_.insert(s);
    return s;
  }

  // The journal's newest event, as umpathd would send it, to every stream.
  void PublishLatest() {
    auto events = mp_->journal().ReadSince(mp_->journal().current_revision() - 1, 1);
    if (!events.ok() || events->empty()) return;
    v1::WatchEventsResponse msg;
    server::ToProto(events->front(), msg.mutable_event());
    msg.set_incarnation(mp_->journal().incarnation());
    const grpc::ByteBuffer bytes = Serialize(msg);
    MutexLock lock(&mu_);
    for (Stream* s : streams_) s->Send(bytes);
  }

  void Forget(Stream* s) {
    MutexLock lock(&mu_);
    streams_.erase(s);
  }

 private:
  static grpc::ByteBuffer Serialize(const v1::WatchEventsResponse& msg) {
    const std::string bytes = msg.SerializeAsString();
    grpc::Slice slice(bytes);
    return grpc::ByteBuffer(&slice, 1);
  }

  Multipath* const mp_;
  Mutex mu_;
  absl::flat_hash_set<Stream*> streams_ ABSL_GUARDED_BY(mu_);
};

struct FanOutRun {
  bool ok = false;
  double cpu_s = 0;
  uint64_t delivered = 0, order_errors = 0, batches = 0;
  int complete = 0;
  double p50 = 0, p99 = 0, max = 0;
};

// Starts the clients, publishes `rate` events/s for `seconds`, and reads the result.
FanOutRun RunClients(const std::string& target, const FanOutOptions& o, uint32_t batch,
                     const std::function<void()>& publish) {
  FanOutRun run;
  const int events = o.rate * o.seconds;
  const std::string cmd =
      absl::StrCat("/proc/", getpid(), "/exe --fanout-client ", target, " ", o.watchers, " ",
                   o.connections > 0 ? o.connections : o.watchers, " ", events, " ", batch);
  FILE* child = popen(cmd.c_str(), "r");
  if (child == nullptr) return run;
  char line[512];
  if (std::fgets(line, sizeof line, child) == nullptr || std::string(line) != "ready\n") {
    std::printf("  the clients did not start: %s\n", line);
    pclose(child);
    return run;
  }
  const double cpu0 = CpuSeconds();
  const auto t0 = SteadyClock::now();
  const auto period = std::chrono::nanoseconds(1'000'000'000 / o.rate);
  for (int k = 0; k < events; ++k) {
    std::this_thread::sleep_until(t0 + k * period);
    publish();
  }
  if (std::fgets(line, sizeof line, child) != nullptr) {
    run.cpu_s = CpuSeconds() - cpu0;
    run.ok = std::sscanf(line,
                         "result delivered=%" SCNu64 " complete=%d order_errors=%" SCNu64
                         " batches=%" SCNu64 " p50=%lf p99=%lf max=%lf",
                         &run.delivered, &run.complete, &run.order_errors, &run.batches,
                         &run.p50, &run.p99, &run.max) == 7;
  }
  pclose(child);
  return run;
}

void Print(const char* name, const FanOutRun& r) {
  if (!r.ok) {
    std::printf("  %-22s failed\n", name);
    return;
  }
  std::printf("  %-22s %6.2f us CPU/event (%.2f s for %" PRIu64 " deliveries, %d watchers "
              "complete, %" PRIu64 " order errors, %" PRIu64 " batches); "
              "publish->receipt p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
              name, r.delivered ? r.cpu_s * 1e6 / r.delivered : 0.0, r.cpu_s, r.delivered,
              r.complete, r.order_errors, r.batches, r.p50, r.p99, r.max);
}

}  // namespace

void FanOutProcessBench(const std::string& dir, const FanOutOptions& o) {
  std::printf("WatchEvents fan-out, clients in another process: %d watchers over %d "
              "connection(s), %d events/s for %d s:\n",
              o.watchers, o.connections > 0 ? o.connections : o.watchers, o.rate, o.seconds);
  FanOutRun bare;
  {
    auto mp = *Multipath::Create(MultipathOptions{});
    (void)testing::AddTestTopology(mp.get(), 2, 1);
    BareWatchService service(mp.get());
    grpc::ServerBuilder b;
    b.RegisterService(&service);
    const std::string target = "unix:" + dir + "/bare-fanout.sock";
    b.AddListeningPort(target, grpc::InsecureServerCredentials());
    auto server = b.BuildAndStart();
    int k = 0;
    bare = RunClients(target, o, 0, [&] {
      (void)mp->SetDelayedRemoval(kHead, 10 + (k++ % 2));
      service.PublishLatest();
    });
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }
  Print("bare gRPC server:", bare);
  std::vector<std::pair<uint32_t, FanOutRun>> ours;
  for (uint32_t batch : o.batches) {
    auto mp = *Multipath::Create(MultipathOptions{});
    (void)testing::AddTestTopology(mp.get(), 2, 1);
    server::ServerOptions so;
    so.socket_path = dir + "/fanout-" + std::to_string(batch) + ".sock";
    so.access.admin_uids = {getuid()};
    so.service.watch.max_watchers = o.watchers + 16;
    so.service.watch.max_watchers_per_caller = o.watchers + 16;
    auto server = *server::ControlServer::Create(mp.get(), so);
    int k = 0;
    FanOutRun r = RunClients("unix:" + so.socket_path, o, batch, [&] {
      (void)mp->SetDelayedRemoval(kHead, 10 + (k++ % 2));
    });
    server->Shutdown();
    Print(absl::StrCat("umpathd, batch ", batch, ":").c_str(), r);
    if (r.ok && bare.ok && r.delivered && bare.delivered && bare.p99 > 0) {
      std::printf("  %-22s CPU/event %.2fx the bare server's, p99 %.2fx\n", "",
                  (r.cpu_s / r.delivered) / (bare.cpu_s / bare.delivered), r.p99 / bare.p99);
    }
  }
}

}  // namespace umpath
