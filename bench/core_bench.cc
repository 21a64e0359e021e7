// The multipath core's cost per I/O, measured against a baseline run beside it:
//  - path selection per policy, 2/4/8 paths, 1 and 2 threads;
//  - submit + complete through a worker's channel (selection, accounting, disposition)
//    against the same queue pair driven directly, and the ratio of the two.
// Timings are printed, never asserted.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <deque>
#include <map>
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

SelectionFixture* g_selection[9];

void BM_Select(benchmark::State& state) {
  const auto policy = static_cast<IoPolicy>(state.range(0));
  const int paths = static_cast<int>(state.range(1));
  if (state.thread_index() == 0) g_selection[paths] = new SelectionFixture(paths);
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

struct CoreRig {
  std::vector<std::unique_ptr<NullQueuePair>> qps;
  std::unique_ptr<Worker> worker;
  std::unique_ptr<Multipath> mp;
  Channel* channel = nullptr;

  CoreRig(int paths, IoPolicy policy) {
    Worker::Options o;
    o.distances = {10, 20};
    worker = Worker::Create(o);
    MultipathOptions mo;
    mo.workers = {worker.get()};
    mp = *Multipath::Create(mo);
    std::string head;
    for (int i = 0; i < paths; ++i) {
      ControllerSpec spec;
      spec.name = "c" + std::to_string(i);
      spec.subsys_nqn = "nqn.bench:s";
      spec.numa_node = i % 2;
      qps.push_back(std::make_unique<NullQueuePair>());
      (void)mp->AddController(spec, nullptr, {qps.back().get()});
      NamespaceSpec ns;
      ns.controller = spec.name;
      ns.nsid = 1;
      ns.size_blocks = 1 << 20;
      head = *mp->AddPath(ns);
    }
    (void)mp->SetPolicy(head, IoPolicyName(policy));
    while (worker->RunOnce() > 0) {
    }
    channel = worker->FindChannel(mp->GetHead(head)->uid);
  }
  ~CoreRig() {
    mp->Shutdown();
    worker->Stop();
  }
};

void BM_Multipath(benchmark::State& state) {
  CoreRig rig(static_cast<int>(state.range(1)), static_cast<IoPolicy>(state.range(0)));
  uint64_t done = 0;
  std::vector<IoRequest> reqs(kBatch);
  for (auto& r : reqs) {
    r.user = &done;
    r.on_complete = &CountDone;
    r.data_len = 4096;
  }
  for (auto _ : state) {
    for (auto& r : reqs) rig.channel->Submit(&r);
    rig.worker->RunOnce();  // rings the doorbells, reaps, runs the disposition
  }
  if (done != uint64_t(state.iterations()) * kBatch) state.SkipWithError("lost I/O");
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.SetLabel(std::string(IoPolicyName(static_cast<IoPolicy>(state.range(0)))));
}
BENCHMARK(BM_Multipath)
    ->ArgsProduct({{int(IoPolicy::kNuma), int(IoPolicy::kRoundRobin),
                    int(IoPolicy::kQueueDepth)},
                   {1, 2, 4}});

// Prints the usual table, then ns per I/O of each submit benchmark and its ratio to the
// direct baseline of the same run.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (r.error_occurred || r.iterations == 0) continue;
      const std::string name = r.benchmark_name();
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
  }

 private:
  std::map<std::string, double> per_io_;
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
