#include "agent/sim/sim_queue_pair.h"

#include <poll.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <cstring>
#include <vector>

#include "agent/base/status_matchers.h"
#include "gtest/gtest.h"

namespace umpath::sim {
namespace {

namespace sc = nvme::status_code;

struct Sink final : CompletionSink {
  void OnCompletion(IoRequest* req, nvme::Status status) override { done.push_back({req, status}); }
  std::vector<std::pair<IoRequest*, nvme::Status>> done;
};

class SimQueuePairTest : public ::testing::Test {
 protected:
  void Make(bool memory = true, bool timer = false) {
    ASSERT_OK_AND_ASSIGN(media_, SimMedia::Create(2, 1024, 4096, memory));
    SimQueueOptions o;
    o.depth = 4;
    o.timeout_ns = 1'000'000'000;
    o.clock = &clock_;
    o.media = media_;
    o.faults = faults_;
    o.link = link_;
    o.wake_timer = timer;
    o.on_timeout = [this] { ++timeouts_; };
    ASSERT_OK_AND_ASSIGN(qp_, SimQueuePair::Create(std::move(o)));
  }
  IoRequest Io(nvme::IoOpcode op, uint64_t slba, void* data, uint32_t nsid = 1) {
    IoRequest r;
    r.opcode = op;
    r.nsid = nsid;
    r.slba = slba;
    r.blocks = 1;
    r.data = data;
    r.data_len = data != nullptr ? 4096 : 0;
    return r;
  }
  nvme::Status SubmitAndPoll(IoRequest* r) {
    EXPECT_EQ(qp_->Submit(r), SubmitResult::kOk);
    qp_->Ring();
    sink_.done.clear();
    EXPECT_EQ(qp_->Poll(sink_, 16), 1u);
    return sink_.done.empty() ? nvme::Status::Make(0x7ff) : sink_.done[0].second;
  }

  ManualClock clock_;
  std::shared_ptr<SimMedia> media_;
  std::shared_ptr<SimFaults> faults_ = std::make_shared<SimFaults>();
  std::shared_ptr<SimLink> link_ = std::make_shared<SimLink>();
  std::unique_ptr<SimQueuePair> qp_;
  Sink sink_;
  int timeouts_ = 0;
};

TEST_F(SimQueuePairTest, WhatIsWrittenReadsBackOnEveryNamespaceAlone) {
  Make();
  std::vector<uint8_t> out(4096, 0x5a), in(4096, 0);
  IoRequest w = Io(nvme::IoOpcode::kWrite, 7, out.data());
  EXPECT_TRUE(SubmitAndPoll(&w).ok());
  IoRequest r = Io(nvme::IoOpcode::kRead, 7, in.data());
  EXPECT_TRUE(SubmitAndPoll(&r).ok());
  EXPECT_EQ(in, out);
  // Another namespace, and another block, were not touched.
  IoRequest other = Io(nvme::IoOpcode::kRead, 7, in.data(), 2);
  EXPECT_TRUE(SubmitAndPoll(&other).ok());
  EXPECT_EQ(in, std::vector<uint8_t>(4096, 0));
  IoRequest z = Io(nvme::IoOpcode::kWriteZeroes, 7, nullptr);
  EXPECT_TRUE(SubmitAndPoll(&z).ok());
  std::fill(in.begin(), in.end(), 1);
  EXPECT_TRUE(SubmitAndPoll(&r).ok());
  EXPECT_EQ(in, std::vector<uint8_t>(4096, 0));
}

TEST_F(SimQueuePairTest, ANullNamespaceReadsZerosAndDropsWrites) {
  Make(/*memory=*/false);
  std::vector<uint8_t> out(4096, 0x5a), in(4096, 1);
  IoRequest w = Io(nvme::IoOpcode::kWrite, 7, out.data());
  EXPECT_TRUE(SubmitAndPoll(&w).ok());
  IoRequest r = Io(nvme::IoOpcode::kRead, 7, in.data());
  EXPECT_TRUE(SubmitAndPoll(&r).ok());
  EXPECT_EQ(in, std::vector<uint8_t>(4096, 0));
}

TEST_F(SimQueuePairTest, BadCommandsFailAsADeviceFailsThem) {
  Make();
  std::vector<uint8_t> buf(4096);
  IoRequest past = Io(nvme::IoOpcode::kRead, 1024, buf.data());
  EXPECT_EQ(SubmitAndPoll(&past).code(), sc::kLbaOutOfRange);
  IoRequest no_ns = Io(nvme::IoOpcode::kRead, 0, buf.data(), 3);
  EXPECT_EQ(SubmitAndPoll(&no_ns).code(), sc::kInvalidNamespace);
  IoRequest no_buf = Io(nvme::IoOpcode::kRead, 0, nullptr);
  EXPECT_EQ(SubmitAndPoll(&no_buf).code(), sc::kInvalidField);
}

TEST_F(SimQueuePairTest, ACompletionIsDueAfterTheLatency) {
  faults_->latency_ns = 5000;
  Make();
  IoRequest f = Io(nvme::IoOpcode::kFlush, 0, nullptr);
  ASSERT_EQ(qp_->Submit(&f), SubmitResult::kOk);
  qp_->Ring();
  EXPECT_EQ(qp_->Poll(sink_, 16), 0u);
  clock_.Advance(4999);
  EXPECT_EQ(qp_->Poll(sink_, 16), 0u);
  clock_.Advance(1);
  EXPECT_EQ(qp_->Poll(sink_, 16), 1u);
  EXPECT_EQ(qp_->outstanding(), 0u);
}

TEST_F(SimQueuePairTest, APathErrorFailsTheNextNCommandsOfItsNamespace) {
  Make();
  faults_->error_nsid = 2;
  faults_->error_status = nvme::Status::Make(sc::kInternalPathError).ToCompletionField();
  faults_->errors_left = 2;
  IoRequest one = Io(nvme::IoOpcode::kFlush, 0, nullptr, 1);
  IoRequest two = Io(nvme::IoOpcode::kFlush, 0, nullptr, 2);
  EXPECT_TRUE(SubmitAndPoll(&one).ok()) << "another namespace";
  EXPECT_EQ(SubmitAndPoll(&two).code(), sc::kInternalPathError);
  EXPECT_EQ(SubmitAndPoll(&two).code(), sc::kInternalPathError);
  EXPECT_TRUE(SubmitAndPoll(&two).ok()) << "two were asked for";
  EXPECT_EQ(faults_->errors_injected, 2u);
}

TEST_F(SimQueuePairTest, AnErrorUntilClearedFailsEveryCommandAndMovesNoData) {
  Make();
  faults_->error_status = nvme::Status::Make(sc::kAnaInaccessible).ToCompletionField();
  faults_->errors_left = -1;
  std::vector<uint8_t> out(4096, 0x5a), in(4096, 1);
  IoRequest w = Io(nvme::IoOpcode::kWrite, 3, out.data());
  for (int i = 0; i < 5; ++i) EXPECT_EQ(SubmitAndPoll(&w).code(), sc::kAnaInaccessible);
  faults_->Clear();
  IoRequest r = Io(nvme::IoOpcode::kRead, 3, in.data());
  EXPECT_TRUE(SubmitAndPoll(&r).ok());
  EXPECT_EQ(in, std::vector<uint8_t>(4096, 0)) << "a failed write wrote nothing";
}

TEST_F(SimQueuePairTest, StuckCommandsTimeOutOnceAndCompleteWhenCleared) {
  Make();
  faults_->stuck = true;
  IoRequest a = Io(nvme::IoOpcode::kFlush, 0, nullptr), b = a;
  ASSERT_EQ(qp_->Submit(&a), SubmitResult::kOk);
  ASSERT_EQ(qp_->Submit(&b), SubmitResult::kOk);
  qp_->Ring();
  EXPECT_EQ(qp_->Poll(sink_, 16), 0u);
  clock_.Advance(1'000'000'000);
  EXPECT_EQ(qp_->Poll(sink_, 16), 0u);
  EXPECT_EQ(timeouts_, 0) << "not past the deadline yet";
  clock_.Advance(1);
  EXPECT_EQ(qp_->Poll(sink_, 16), 0u);
  EXPECT_EQ(qp_->Poll(sink_, 16), 0u);
  EXPECT_EQ(timeouts_, 1);
  EXPECT_TRUE(qp_->timed_out());
  faults_->Clear();
  EXPECT_EQ(qp_->Poll(sink_, 16), 2u);
  EXPECT_TRUE(sink_.done[0].second.ok());
}

TEST_F(SimQueuePairTest, AbortAllHandsEverythingBackUnexecuted) {
  Make();
  std::vector<uint8_t> out(4096, 0x5a), in(4096, 1);
  IoRequest w = Io(nvme::IoOpcode::kWrite, 9, out.data());
  faults_->stuck = true;
  IoRequest s = Io(nvme::IoOpcode::kFlush, 0, nullptr);
  ASSERT_EQ(qp_->Submit(&w), SubmitResult::kOk);
  ASSERT_EQ(qp_->Submit(&s), SubmitResult::kOk);
  qp_->AbortAll(sink_);
  ASSERT_EQ(sink_.done.size(), 2u);
  for (const auto& [req, st] : sink_.done) EXPECT_EQ(st.code(), sc::kHostAbortedCommand);
  EXPECT_EQ(qp_->outstanding(), 0u);
  faults_->Clear();
  IoRequest r = Io(nvme::IoOpcode::kRead, 9, in.data());
  EXPECT_TRUE(SubmitAndPoll(&r).ok());
  EXPECT_EQ(in, std::vector<uint8_t>(4096, 0)) << "an aborted write wrote nothing";
}

TEST_F(SimQueuePairTest, AFullQueueIsBusyAndAGoneOneRefuses) {
  Make();
  std::vector<IoRequest> reqs(5, Io(nvme::IoOpcode::kFlush, 0, nullptr));
  for (int i = 0; i < 4; ++i) EXPECT_EQ(qp_->Submit(&reqs[i]), SubmitResult::kOk);
  EXPECT_EQ(qp_->Submit(&reqs[4]), SubmitResult::kBusy);
  EXPECT_EQ(qp_->Poll(sink_, 2), 2u) << "at most what was asked";
  EXPECT_EQ(qp_->Poll(sink_, 16), 2u);
  link_->gone = true;
  EXPECT_EQ(qp_->Submit(&reqs[4]), SubmitResult::kGone);
}

// The control thread sets and clears faults while a worker submits and polls: atomics
// only (TSan checks there is no race), and every command completes once cleared.
TEST_F(SimQueuePairTest, FaultsReachAWorkingWorkerWithoutALock) {
  Make();
  std::atomic<bool> stop{false};
  std::atomic<int> completed{0}, failed{0};
  std::thread worker([&] {
    std::vector<IoRequest> reqs(4, Io(nvme::IoOpcode::kFlush, 0, nullptr));
    Sink sink;
    size_t next = 0;
    while (!stop.load() || qp_->outstanding() > 0) {
      if (!stop.load() && qp_->Submit(&reqs[next % reqs.size()]) == SubmitResult::kOk) ++next;
      qp_->Poll(sink, 16);
      for (const auto& [req, st] : sink.done) (st.ok() ? completed : failed).fetch_add(1);
      sink.done.clear();
    }
  });
  // Each change is seen by commands the worker completes after it.
  auto progress = [&] {
    const int from = completed.load() + failed.load();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (completed.load() + failed.load() == from && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
  };
  for (int i = 0; i < 100; ++i) {
    faults_->error_status = nvme::Status::Make(sc::kInternalPathError).ToCompletionField();
    faults_->errors_left = 3;
    progress();
    faults_->stuck = true;
    faults_->Clear();
    progress();
  }
  stop = true;
  worker.join();
  EXPECT_GE(completed.load() + failed.load(), 200);
  EXPECT_EQ(static_cast<uint64_t>(failed.load()), faults_->errors_injected.load());
}

TEST_F(SimQueuePairTest, ItsWakeFdBecomesReadableWhenACompletionIsDue) {
  Make(/*memory=*/true, /*timer=*/true);
  ASSERT_GE(qp_->wake_fd(), 0);
  IoRequest f = Io(nvme::IoOpcode::kFlush, 0, nullptr);
  ASSERT_EQ(qp_->Submit(&f), SubmitResult::kOk);
  qp_->Ring();
  pollfd p{qp_->wake_fd(), POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 10'000), 1);
  EXPECT_EQ(qp_->Poll(sink_, 16), 1u);
  p.revents = 0;
  EXPECT_EQ(poll(&p, 1, 0), 0) << "Poll reset it";
}

}  // namespace
}  // namespace umpath::sim
