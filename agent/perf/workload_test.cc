#include "agent/perf/workload.h"

#include <cstring>
#include <deque>
#include <thread>
#include <memory>
#include <vector>

#include "agent/base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace umpath::perf {
namespace {

// A controller over a RAM disk shared by every path: reads and writes really move data,
// so verify can find a mismatch. Every `fail_every`-th command fails with a path error.
class RamQueuePair final : public QueuePair {
 public:
  RamQueuePair(std::vector<uint8_t>* disk, uint32_t block) : disk_(disk), block_(block) {}
  SubmitResult Submit(IoRequest* req) override {
    if (pending_.size() >= 256) return SubmitResult::kBusy;
    pending_.push_back(req);
    return SubmitResult::kOk;
  }
  void Ring() override {}
  uint32_t Poll(CompletionSink& sink, uint32_t max) override {
    uint32_t n = 0;
    while (n < max && !pending_.empty()) {
      IoRequest* r = pending_.front();
      pending_.pop_front();
      ++n;
      ++commands;
      if (fail_every && commands % fail_every == 0) {
        sink.OnCompletion(r, nvme::Status::Make(nvme::status_code::kControllerPathError));
        continue;
      }
      uint8_t* at = disk_->data() + r->slba * block_;
      if (r->opcode == nvme::IoOpcode::kWrite) std::memcpy(at, r->data, r->data_len);
      if (r->opcode == nvme::IoOpcode::kRead) std::memcpy(r->data, at, r->data_len);
      if (r->opcode == nvme::IoOpcode::kWriteZeroes && !ignore_write_zeroes) std::memset(at, 0, size_t{r->blocks} * block_);
      if (r->opcode == nvme::IoOpcode::kFlush) ++flushes;
      if (corrupt_reads && r->opcode == nvme::IoOpcode::kRead) static_cast<uint8_t*>(r->data)[0] ^= 1;
      sink.OnCompletion(r, nvme::Status{});
    }
    return n;
  }
  void AbortAll(CompletionSink& sink) override {
    while (!pending_.empty()) {
      IoRequest* r = pending_.front();
      pending_.pop_front();
      sink.OnCompletion(r, nvme::Status::Make(nvme::status_code::kHostAbortedCommand));
    }
  }
  uint32_t outstanding() const override { return static_cast<uint32_t>(pending_.size()); }

  uint64_t commands = 0;
  uint64_t flushes = 0;
  uint64_t fail_every = 0;
  bool corrupt_reads = false;
  bool ignore_write_zeroes = false;

 private:
  std::vector<uint8_t>* disk_;
  uint32_t block_;
  std::deque<IoRequest*> pending_;
};

class WorkloadTest : public ::testing::Test {
 protected:
  static constexpr uint32_t kBlock = 512;
  static constexpr uint64_t kBlocks = 16384;  // 8 MiB

  void Build(IoPolicy policy, int nworkers = 1, int namespaces = 1) {
    disk_.assign(kBlocks * kBlock, 0);
    for (int i = 0; i < nworkers; ++i) {
      Worker::Options wo;
      wo.index = i;
      workers_.push_back(Worker::Create(wo));
      raw_workers_.push_back(workers_.back().get());
    }
    MultipathOptions mo;
    mo.workers = raw_workers_;
    mo.default_policy = policy;
    auto mp = Multipath::Create(mo);
    ASSERT_OK(mp);
    mp_ = std::move(*mp);
    for (const char* name : {"c0", "c1"}) {
      std::vector<QueuePair*> qps;
      for (int i = 0; i < nworkers; ++i) {
        qps_.push_back(std::make_unique<RamQueuePair>(&disk_, kBlock));
        qps.push_back(qps_.back().get());
      }
      ControllerSpec cs;
      cs.name = name;
      cs.subsys_nqn = "nqn.test:perf";
      ASSERT_OK(mp_->AddController(cs, &backend_, qps));
      for (int n = 1; n <= namespaces; ++n) {
        NamespaceSpec ns;
        ns.controller = name;
        ns.nsid = static_cast<uint32_t>(n);
        ns.ids.eui64 = std::array<uint8_t, 8>{1, 2, 3, 4, 5, 6, 7, static_cast<uint8_t>(7 + n)};
        ns.size_blocks = kBlocks;
        ns.block_size = kBlock;
        ASSERT_OK(mp_->AddPath(ns));
      }
    }
  }
  void TearDown() override {
    if (mp_) mp_->Shutdown();
    for (auto* w : raw_workers_) w->Stop();
  }
  IoMemoryAllocator Alloc() {
    return [](uint64_t bytes) -> absl::StatusOr<IoMemory> {
      std::shared_ptr<uint8_t[]> mem(new uint8_t[bytes]);
      return IoMemory{mem.get(), mem};
    };
  }
  uint64_t Completed(const WorkloadResult& r, const std::string& path) {
    for (const auto& p : r.paths) {
      if (p.name == path) return p.completed;
    }
    return 0;
  }

  struct NullBackend final : ControllerBackend {
    void RequestAnaLog() override {}
    void Reset() override {}
    void OnQuiesced() override {}
    void OnHandedBack() override {}
    void OnQueuePairsReleased() override {}
  } backend_;
  std::vector<uint8_t> disk_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<Worker*> raw_workers_;
  std::vector<std::unique_ptr<RamQueuePair>> qps_;
  std::unique_ptr<Multipath> mp_;
};

TEST_F(WorkloadTest, VerifyRoundRobinUsesBothPathsWithNoMismatch) {
  Build(IoPolicy::kRoundRobin, 2);
  WorkloadOptions o;
  o.pattern = Pattern::kVerify;
  o.queue_depth = 8;
  o.seconds = 0.3;
  ASSERT_OK_AND_ASSIGN(WorkloadResult r, RunWorkload(mp_.get(), raw_workers_, Alloc(), o));
  EXPECT_GT(r.ios, 100u);
  EXPECT_EQ(r.errors, 0u) << r.first_error;
  EXPECT_EQ(r.mismatches, 0u);
  EXPECT_GT(Completed(r, "c0"), 0u);
  EXPECT_GT(Completed(r, "c1"), 0u);
  EXPECT_EQ(Completed(r, "c0") + Completed(r, "c1"), r.ios);
  EXPECT_GT(r.max_ns, 0u);
  EXPECT_LE(r.p50_ns, r.p99_ns);
  EXPECT_LE(r.p99_ns, r.max_ns);
  EXPECT_THAT(r.ToString(), ::testing::HasSubstr("mismatches=0"));
  // Write Zeroes and Flush are part of the cycle, and what they leave is checked too.
  EXPECT_GT(r.zeroes, 0u);
  EXPECT_GT(r.flushes, 0u);
  EXPECT_EQ(qps_[0]->flushes + qps_[1]->flushes + qps_[2]->flushes + qps_[3]->flushes, r.flushes);
}

TEST_F(WorkloadTest, NumaUsesOnePath) {
  Build(IoPolicy::kNuma);
  WorkloadOptions o;
  o.pattern = Pattern::kRandRead;
  o.seconds = 0.2;
  ASSERT_OK_AND_ASSIGN(WorkloadResult r, RunWorkload(mp_.get(), raw_workers_, Alloc(), o));
  EXPECT_GT(r.ios, 100u);
  EXPECT_EQ(std::min(Completed(r, "c0"), Completed(r, "c1")), 0u);
  EXPECT_EQ(std::max(Completed(r, "c0"), Completed(r, "c1")), r.ios);
}

TEST_F(WorkloadTest, WriteZeroesThatDoNothingAreMismatches) {
  Build(IoPolicy::kRoundRobin);
  std::memset(disk_.data(), 0x5a, disk_.size());
  for (auto& q : qps_) q->ignore_write_zeroes = true;
  WorkloadOptions o;
  o.pattern = Pattern::kVerify;
  o.seconds = 0.3;
  ASSERT_OK_AND_ASSIGN(WorkloadResult r, RunWorkload(mp_.get(), raw_workers_, Alloc(), o));
  EXPECT_GT(r.zeroes, 0u);
  EXPECT_GT(r.mismatches, 0u);
}

TEST_F(WorkloadTest, VerifyCountsCorruptionAsMismatches) {
  Build(IoPolicy::kQueueDepth);
  for (auto& q : qps_) q->corrupt_reads = true;
  WorkloadOptions o;
  o.pattern = Pattern::kVerify;
  o.seconds = 0.2;
  ASSERT_OK_AND_ASSIGN(WorkloadResult r, RunWorkload(mp_.get(), raw_workers_, Alloc(), o));
  EXPECT_GT(r.mismatches, 0u);
  EXPECT_EQ(r.errors, 0u);
}

TEST_F(WorkloadTest, PathErrorsFailOverWithoutErrorsOrMismatches) {
  Build(IoPolicy::kRoundRobin);
  qps_[0]->fail_every = 7;
  WorkloadOptions o;
  o.pattern = Pattern::kVerify;
  o.seconds = 0.3;
  ASSERT_OK_AND_ASSIGN(WorkloadResult r, RunWorkload(mp_.get(), raw_workers_, Alloc(), o));
  EXPECT_EQ(r.errors, 0u) << r.first_error;
  EXPECT_EQ(r.mismatches, 0u);
  uint64_t failovers = 0;
  for (const auto& p : r.paths) failovers += p.failovers;
  EXPECT_GT(failovers, 0u);
}

TEST_F(WorkloadTest, SequentialWriteThenReadCoversTheStripes) {
  Build(IoPolicy::kRoundRobin);
  WorkloadOptions o;
  o.pattern = Pattern::kWrite;
  o.block_size = 65536;
  o.queue_depth = 4;
  o.seconds = 0.1;
  ASSERT_OK_AND_ASSIGN(WorkloadResult w, RunWorkload(mp_.get(), raw_workers_, Alloc(), o));
  EXPECT_EQ(w.bytes, w.ios * 65536);
  o.pattern = Pattern::kRead;
  ASSERT_OK_AND_ASSIGN(WorkloadResult r, RunWorkload(mp_.get(), raw_workers_, Alloc(), o));
  EXPECT_GT(r.ios, 0u);
  EXPECT_EQ(r.errors, 0u);
}

TEST_F(WorkloadTest, StopEndsTheRunEarlyWithAResult) {
  Build(IoPolicy::kRoundRobin);
  std::atomic<bool> stop{false};
  WorkloadOptions o;
  o.pattern = Pattern::kVerify;
  o.seconds = 600;
  o.stop = &stop;
  std::thread stopper([&stop] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    stop = true;
  });
  ASSERT_OK_AND_ASSIGN(WorkloadResult r, RunWorkload(mp_.get(), raw_workers_, Alloc(), o));
  stopper.join();
  EXPECT_LT(r.seconds, 60);
  EXPECT_GT(r.ios, 0u);
  EXPECT_EQ(r.errors, 0u);
  EXPECT_EQ(r.mismatches, 0u);
}

// Every head ("*"): I/O goes to each head in turn, so every head and path does work, and
// the run says how many heads and what a worker's CPU per I/O was.
TEST_F(WorkloadTest, EveryHeadSpreadsTheIoOverAllHeads) {
  Build(IoPolicy::kRoundRobin, 1, 3);
  WorkloadOptions o;
  o.pattern = Pattern::kRandWrite;
  o.head = std::string(kEveryHead);
  o.queue_depth = 8;
  o.seconds = 0.2;
  ASSERT_OK_AND_ASSIGN(WorkloadResult r, RunWorkload(mp_.get(), raw_workers_, Alloc(), o));
  EXPECT_EQ(r.errors, 0u) << r.first_error;
  EXPECT_EQ(r.heads, 3u);
  EXPECT_EQ(r.head, "*");
  EXPECT_GT(r.cpu_ns_per_io, 0);
  EXPECT_THAT(r.ToString(), ::testing::HasSubstr(" heads=3 cpu_ns_per_io="));
  std::vector<HeadInfo> heads = mp_->ListHeads();
  ASSERT_EQ(heads.size(), 3u);
  for (const HeadInfo& h : heads) {
    uint64_t done = 0;
    for (const PathInfo& p : h.paths) done += p.counters.completed;
    EXPECT_GT(done, r.ios / 6) << h.name;  // about a third each
  }
  o.pattern = Pattern::kVerify;
  EXPECT_THAT(RunWorkload(mp_.get(), raw_workers_, Alloc(), o).status(),
              umpath::testing::StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("one head")));
}

TEST_F(WorkloadTest, BadOptionsAreClearErrors) {
  Build(IoPolicy::kNuma);
  WorkloadOptions o;
  o.seconds = 0.1;
  o.queue_depth = 0;
  EXPECT_THAT(RunWorkload(mp_.get(), raw_workers_, Alloc(), o).status().message(),
              ::testing::HasSubstr("queue depth"));
  o.queue_depth = 4;
  o.block_size = 1000;
  EXPECT_THAT(RunWorkload(mp_.get(), raw_workers_, Alloc(), o).status().message(),
              ::testing::HasSubstr("not a multiple"));
  o.block_size = 4096;
  o.head = "nguid-nothere";
  o.head_wait_seconds = 0.1;
  EXPECT_EQ(RunWorkload(mp_.get(), raw_workers_, Alloc(), o).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_THAT(ParsePattern("randrw").status().message(), ::testing::HasSubstr("verify"));
  EXPECT_OK(ParsePattern("randwrite"));
}

TEST(LatencyHistogramTest, PercentilesWithinABucket) {
  LatencyHistogram h;
  for (uint64_t i = 1; i <= 1000; ++i) h.Add(i * 1000);  // 1 us .. 1 ms
  EXPECT_EQ(h.count(), 1000u);
  EXPECT_EQ(h.max(), 1'000'000u);
  EXPECT_NEAR(static_cast<double>(h.Percentile(50)), 500'000, 500'000 * 0.07);
  EXPECT_NEAR(static_cast<double>(h.Percentile(99)), 990'000, 990'000 * 0.07);
  EXPECT_EQ(h.Percentile(100), 1'000'000u);
  LatencyHistogram other;
  other.Add(5'000'000);
  h.Merge(other);
  EXPECT_EQ(h.max(), 5'000'000u);
  EXPECT_EQ(LatencyHistogram().Percentile(99), 0u);
}

}  // namespace
}  // namespace umpath::perf
