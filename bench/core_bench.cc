// The multipath core's cost per I/O, measured against a baseline run beside it:
//  - path selection per policy, 2/4/8 paths, 1 and 2 threads;
//  - submit + complete through a worker's channel (selection, accounting, disposition)
//    against the same queue pair driven directly, and the ratio of the two.
// Timings are printed, never asserted.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <deque>
#include <map>
#include <mutex>
#include <memory>
#include <string>
#include <vector>

#include "agent/core/multipath.h"
#include "agent/core/path_selector.h"
#include "agent/core/worker.h"

namespace umpath {
namespace {

// Completes whatever was rung on the next poll, in order, with success: the cheapest
// possible device, so what is measured is the layer above it.
class NullQueuePair final : public QueuePair {
 public:
  NullQueuePair() { ring_.resize(kSize); }
  SubmitResult Submit(IoRequest* req) override {
    if (tail_ - head_ == kSize) return SubmitResult::kBusy;
    ring_[tail_++ % kSize] = req;
    return SubmitResult::kOk;
  }
  void Ring() override { rung_ = tail_; }
  uint32_t Poll(CompletionSink& sink, uint32_t max) override {
    uint32_t n = 0;
    while (head_ != rung_ && n < max) {
      sink.OnCompletion(ring_[head_++ % kSize], nvme::Status{});
      ++n;
    }
    return n;
  }
  void AbortAll(CompletionSink& sink) override {
    rung_ = tail_;
    while (head_ != rung_) {
      sink.OnCompletion(ring_[head_++ % kSize],
                        nvme::Status::Make(nvme::status_code::kHostAbortedCommand));
    }
  }
  uint32_t outstanding() const override { return static_cast<uint32_t>(tail_ - head_); }

 private:
  static constexpr uint64_t kSize = 1024;
  std::vector<IoRequest*> ring_;
  uint64_t head_ = 0, tail_ = 0, rung_ = 0;
};

constexpr int kBatch = 32;  // commands per doorbell, like a QD-32 workload

void CountDone(IoRequest* r, IoResult res) {
  ++*static_cast<uint64_t*>(r->user);
  benchmark::DoNotOptimize(res);
}

// --- Path selection. ---

struct SelectionFixture {
  std::deque<PathShared> shared;
  std::vector<PathCandidate> candidates;
  explicit SelectionFixture(int paths) {
    for (int i = 0; i < paths; ++i) {
      PathStateWord w;
      w.controller = ControllerState::kLive;
      w.ready = true;
      // Half OPTIMIZED: the realistic ANA split of a two-controller array.
      w.ana = i % 2 ? nvme::AnaState::kNonOptimized : nvme::AnaState::kOptimized;
      shared.emplace_back();
      shared.back().Store(w);
      candidates.push_back(PathCandidate{&shared.back(), uint32_t(10 + 10 * (i % 3))});
    }
  }
};

std::unique_ptr<SelectionFixture> g_selection[9];

void BM_Select(benchmark::State& state) {
  const auto policy = static_cast<IoPolicy>(state.range(0));
  const int paths = static_cast<int>(state.range(1));
  if (state.thread_index() == 0) g_selection[paths] = std::make_unique<SelectionFixture>(paths);
  // Every thread reads the same paths with a selector of its own, as workers do.
  PathSelector sel;
  int64_t sum = 0;
  for (auto _ : state) {
    const int i = sel.Select(policy, g_selection[paths]->candidates);
    sum += i;
    if (policy == IoPolicy::kQueueDepth) {
      // Queue-depth's real per-I/O cost: count the command in and out.
      PathShared& p = *g_selection[paths]->candidates[i].shared;
      p.in_flight.fetch_add(1, std::memory_order_relaxed);
      p.DecrementInFlight();
    }
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(std::string(IoPolicyName(policy)));
}
BENCHMARK(BM_Select)
    ->ArgsProduct({{int(IoPolicy::kNuma), int(IoPolicy::kRoundRobin),
                    int(IoPolicy::kQueueDepth)},
                   {2, 4, 8}})
    ->Threads(1)
    ->Threads(2);

// --- Submit and complete. ---

// The baseline: the same queue pair, driven with no multipath layer at all.
class DirectSink final : public CompletionSink {
 public:
  void OnCompletion(IoRequest* req, nvme::Status s) override {
    req->on_complete(req, IoResult{IoError::kNone, s});
  }
};

void BM_Direct(benchmark::State& state) {
  NullQueuePair qp;
  DirectSink sink;
  uint64_t done = 0;
  std::vector<IoRequest> reqs(kBatch);
  for (auto& r : reqs) {
    r.user = &done;
    r.on_complete = &CountDone;
    r.data_len = 4096;
  }
  for (auto _ : state) {
    for (auto& r : reqs) qp.Submit(&r);
    qp.Ring();
    qp.Poll(sink, kBatch);
  }
  if (done != uint64_t(state.iterations()) * kBatch) state.SkipWithError("lost I/O");
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_Direct);

// One head over `paths` controllers, `workers` hand-driven workers, each with its own
// queue pair per controller and its own channel.
struct CoreRig {
  std::vector<std::unique_ptr<NullQueuePair>> qps;
  std::vector<std::unique_ptr<Worker>> workers;
  std::unique_ptr<Multipath> mp;
  std::vector<Channel*> channels;

  CoreRig(int paths, IoPolicy policy, int nworkers = 1) {
    MultipathOptions mo;
    for (int w = 0; w < nworkers; ++w) {
      Worker::Options o;
      o.index = w;
      o.numa_node = w % 2;
      o.distances = w % 2 ? std::vector<uint32_t>{20, 10} : std::vector<uint32_t>{10, 20};
      workers.push_back(Worker::Create(o));
      mo.workers.push_back(workers.back().get());
    }
    mp = *Multipath::Create(mo);
    std::string head;
    for (int i = 0; i < paths; ++i) {
      ControllerSpec spec;
      spec.name = "c" + std::to_string(i);
      spec.subsys_nqn = "nqn.bench:s";
      spec.numa_node = i % 2;
      std::vector<QueuePair*> mine;
      for (int w = 0; w < nworkers; ++w) {
        qps.push_back(std::make_unique<NullQueuePair>());
        mine.push_back(qps.back().get());
      }
      (void)mp->AddController(spec, nullptr, mine);
      NamespaceSpec ns;
      ns.controller = spec.name;
      ns.nsid = 1;
      ns.size_blocks = 1 << 20;
      head = *mp->AddPath(ns);
    }
    (void)mp->SetPolicy(head, IoPolicyName(policy));
    for (auto& w : workers) {
      while (w->RunOnce() > 0) {
      }
      channels.push_back(w->FindChannel(mp->GetHead(head)->uid));
    }
  }
  ~CoreRig() {
    mp->Shutdown();
    for (auto& w : workers) w->Stop();
  }
};

// Submits and completes batches on one worker's channel until the benchmark stops.
void DriveChannel(benchmark::State& state, Worker* worker, Channel* channel) {
  uint64_t done = 0;
  // RunOnce reaps before it rings, so a batch completes one pass after it was rung:
  // two sets of commands alternate, and each pass still submits, rings and reaps 32.
  std::vector<IoRequest> reqs(2 * kBatch);
  for (auto& r : reqs) {
    r.user = &done;
    r.on_complete = &CountDone;
    r.data_len = 4096;
  }
  size_t set = 0;
  for (auto _ : state) {
    for (size_t i = 0; i < kBatch; ++i) channel->Submit(&reqs[set + i]);
    worker->RunOnce();  // reaps the previous batch, rings this one
    set ^= kBatch;
  }
  // A batch rung late in one pass completes in the next: drain before counting.
  while (worker->RunOnce() > 0) {
  }
  if (done != uint64_t(state.iterations()) * kBatch) state.SkipWithError("lost I/O");
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.SetLabel(std::string(IoPolicyName(static_cast<IoPolicy>(state.range(0)))));
}

void BM_Multipath(benchmark::State& state) {
  CoreRig rig(static_cast<int>(state.range(1)), static_cast<IoPolicy>(state.range(0)));
  DriveChannel(state, rig.workers[0].get(), rig.channels[0]);
}
BENCHMARK(BM_Multipath)
    ->ArgsProduct({{int(IoPolicy::kNuma), int(IoPolicy::kRoundRobin),
                    int(IoPolicy::kQueueDepth)},
                   {1, 2, 4}});

// Two workers on one head, one benchmark thread driving each: if the layer wrote a cache
// line the other worker also writes, the per-I/O CPU time at 2 threads would rise above
// that at 1 thread. The rig is built once per argument pair and shared by the threads.
std::mutex g_rigs_mu;
std::map<std::pair<int, int>, std::unique_ptr<CoreRig>> g_rigs;

void BM_MultipathWorkers(benchmark::State& state) {
  CoreRig* rig;
  {
    std::lock_guard<std::mutex> lock(g_rigs_mu);
    auto& slot = g_rigs[{int(state.range(0)), int(state.range(1))}];
    if (!slot) {
      slot = std::make_unique<CoreRig>(static_cast<int>(state.range(1)),
                                       static_cast<IoPolicy>(state.range(0)), 2);
    }
    rig = slot.get();
  }
  const int w = state.thread_index();
  DriveChannel(state, rig->workers[w].get(), rig->channels[w]);
}
BENCHMARK(BM_MultipathWorkers)
    ->ArgsProduct({{int(IoPolicy::kNuma), int(IoPolicy::kRoundRobin),
                    int(IoPolicy::kQueueDepth)},
                   {2}})
    ->Threads(1)
    ->Threads(2);

// Prints the usual table, then ns per I/O of each submit benchmark and its ratio to the
// direct baseline of the same run.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (r.error_occurred || r.iterations == 0) continue;
      const std::string name = r.benchmark_name();
      if (name.rfind("BM_MultipathWorkers", 0) == 0) {
        // CPU time summed over threads / I/Os summed over threads: the cost per I/O
        // on each worker.
        workers_[name] = r.GetAdjustedCPUTime() / kBatch;
        continue;
      }
      if (name.rfind("BM_Direct", 0) != 0 && name.rfind("BM_Multipath", 0) != 0) continue;
      const double ns_per_io = r.GetAdjustedRealTime() / kBatch;
      per_io_[name] = ns_per_io;
    }
  }
  void PrintRatios() const {
    auto direct = per_io_.find("BM_Direct");
    if (direct == per_io_.end()) return;
    std::printf("\nsubmit+complete, ns per I/O (batch %d) and ratio to direct:\n", kBatch);
    std::printf("  %-28s %8.1f ns  1.000x\n", "direct", direct->second);
    for (const auto& [name, ns] : per_io_) {
      if (name == "BM_Direct") continue;
      std::printf("  %-28s %8.1f ns  %.3fx  (+%.1f ns)\n", name.c_str(), ns,
                  ns / direct->second, ns - direct->second);
    }
    std::printf("\ntwo workers on one head, CPU ns per I/O per worker, 2 threads / 1 thread:\n");
    for (const auto& [name, ns] : workers_) {
      const std::string::size_type at = name.rfind("/threads:1");
      if (at == std::string::npos) continue;
      auto two = workers_.find(name.substr(0, at) + "/threads:2");
      if (two == workers_.end()) continue;
      std::printf("  %-36s %8.1f ns  %8.1f ns  %.3fx\n", name.substr(0, at).c_str(), ns,
                  two->second, two->second / ns);
    }
  }

 private:
  std::map<std::string, double> per_io_;
  std::map<std::string, double> workers_;
};

}  // namespace
}  // namespace umpath

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  umpath::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.PrintRatios();
  benchmark::Shutdown();
  return 0;
}
