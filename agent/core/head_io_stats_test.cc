// Issue 20: what the application saw of a head (HeadInfo::io, no_path_nanos), through
// hand-driven workers, fake queue pairs and a manual clock.
#include "agent/core/head_io_stats.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

#include "agent/core/testing/core_fixture.h"
#include "agent/nvme/status.h"

namespace umpath {
namespace {

using ::umpath::testing::CoreFixture;
using ::umpath::testing::TestIo;
namespace sc = nvme::status_code;

constexpr size_t kRead = static_cast<size_t>(HeadOp::kRead);
constexpr size_t kWrite = static_cast<size_t>(HeadOp::kWrite);
constexpr size_t kFlush = static_cast<size_t>(HeadOp::kFlush);
constexpr size_t kDiscard = static_cast<size_t>(HeadOp::kDiscard);
size_t Reason(IoError e) { return static_cast<size_t>(e); }

class HeadIoStatsTest : public CoreFixture {
 protected:
  // c0 and c1 share one namespace (512-byte blocks); returns the head's name.
  std::string TwoPaths() {
    AddController("c0");
    AddController("c1");
    auto h = AddPath("c0");
    EXPECT_OK(AddPath("c1"));
    Run();
    return *h;
  }
  // Both controllers in state `s`, and the workers told.
  void BothControllers(ControllerState s) {
    ASSERT_OK(mp_->SetControllerState("c0", s));
    ASSERT_OK(mp_->SetControllerState("c1", s));
    Run();
  }
  // Every path gone, and `n` I/Os submitted that wait for one.
  std::vector<TestIo> LoseBothPathsWith(const std::string& head, size_t n) {
    EXPECT_OK(mp_->RemovePath("c0", 1, "test"));
    EXPECT_OK(mp_->RemovePath("c1", 1, "test"));
    Run();
    std::vector<TestIo> waiting(n);
    for (TestIo& io : waiting) Submit(head, io);
    Run();
    return waiting;
  }
  HeadIoCounters Io(const std::string& head) {
    absl::StatusOr<HeadInfo> info = mp_->GetHead(head);
    EXPECT_OK(info);
    return info.ok() ? info->io : HeadIoCounters{};
  }
  // The counters of a head summed from what a worker's channel holds: readable after
  // the head is gone from the control side.
  static HeadIoCounters Sum(const HeadShared& shared, size_t workers) {
    HeadIoCounters out;
    for (size_t w = 0; w < workers; ++w) out.AddWorker(shared.counters[w]);
    return out;
  }
  static uint64_t Errors(const HeadIoCounters& io) {
    uint64_t n = 0;
    for (uint64_t e : io.errors) n += e;
    return n;
  }
};

TEST(HeadLatencyBucketTest, BoundsAreInclusiveAndBeyondTheLastIsInf) {
  EXPECT_EQ(HeadLatencyBucket(0), 0u);
  EXPECT_EQ(HeadLatencyBucket(50'000), 0u);  // le="5e-05"
  EXPECT_EQ(HeadLatencyBucket(50'001), 1u);
  EXPECT_EQ(HeadLatencyBucket(2'000'000), 5u);  // 2 ms: le="0.0025"
  EXPECT_EQ(HeadLatencyBucket(2'000'000'000), 14u);  // a 2 s stall: le="2.5"
  EXPECT_EQ(HeadLatencyBucket(30'000'000'000), 17u);  // le="30"
  EXPECT_EQ(HeadLatencyBucket(30'000'000'001), 18u);  // +Inf
  for (size_t i = 0; i < kHeadLatencyBoundsNs.size(); ++i) {
    EXPECT_EQ(HeadLatencyBucket(kHeadLatencyBoundsNs[i]), i);
    EXPECT_EQ(HeadLatencyBucket(kHeadLatencyBoundsNs[i] + 1), i + 1);
  }
}

TEST_F(HeadIoStatsTest, CountsEachOperationOnceWithItsBytes) {
  const std::string head = TwoPaths();
  TestIo read, write, zeroes, flush, discard;
  write.req.opcode = nvme::IoOpcode::kWrite;
  write.req.data_len = 8192;
  zeroes.req.opcode = nvme::IoOpcode::kWriteZeroes;
  zeroes.req.blocks = 4;
  zeroes.req.data_len = 0;
  flush.req.opcode = nvme::IoOpcode::kFlush;
  flush.req.data_len = 0;
  // Two ranges of 8 and 24 blocks: 32 blocks released.
  uint8_t ranges[32] = {};
  const uint32_t lengths[2] = {8, 24};
  std::memcpy(ranges + 4, &lengths[0], 4);
  std::memcpy(ranges + 16 + 4, &lengths[1], 4);
  discard.req.opcode = nvme::IoOpcode::kDatasetManagement;
  discard.req.blocks = 2;
  discard.req.data = ranges;
  discard.req.data_len = sizeof(ranges);
  for (TestIo* io : {&read, &write, &zeroes, &flush, &discard}) Submit(head, *io);
  Run();
  for (TestIo* io : {&read, &write, &zeroes, &flush, &discard}) ASSERT_TRUE(io->result.ok());

  const HeadIoCounters io = Io(head);
  EXPECT_EQ(io.ios[kRead], 1u);
  EXPECT_EQ(io.ios[kWrite], 2u);  // a write of zeroes is a write
  EXPECT_EQ(io.ios[kFlush], 1u);
  EXPECT_EQ(io.ios[kDiscard], 1u);
  EXPECT_EQ(io.bytes[kRead], 4096u);
  EXPECT_EQ(io.bytes[kWrite], 8192u + 4 * 512);
  EXPECT_EQ(io.bytes[kFlush], 0u);
  EXPECT_EQ(io.bytes[kDiscard], 32u * 512);
  EXPECT_EQ(Errors(io), 0u);
  EXPECT_EQ(io.requeued, 0u);
  EXPECT_EQ(io.answered(), 5u);
}

// A path error moves the I/O to the other path: the application issued one I/O and saw
// one answer, with no error; the requeue is counted, and the paths count what they did.
TEST_F(HeadIoStatsTest, FailedOverIoCountsOnceForTheApplicationAndAsRequeued) {
  const std::string head = TwoPaths();
  Qp("c0").Script({nvme::Status::Make(sc::kHostPathError)});
  TestIo io;
  Submit(head, io);
  Run();
  ASSERT_EQ(io.completions, 1);
  ASSERT_EQ(io.result.error, IoError::kNone);
  ASSERT_OK_AND_ASSIGN(HeadInfo info, mp_->GetHead(head));
  EXPECT_EQ(info.paths[0].counters.failovers, 1u);
  EXPECT_EQ(info.paths[0].counters.submitted + info.paths[1].counters.submitted, 2u);
  EXPECT_EQ(info.io.ios[kRead], 1u);
  EXPECT_EQ(info.io.bytes[kRead], 4096u);
  EXPECT_EQ(info.io.answered(), 1u);
  EXPECT_EQ(info.io.requeued, 1u);
  EXPECT_EQ(Errors(info.io), 0u);
}

// I/O waiting for a path is requeued once per wait, however often a kick re-examines it;
// and the counters go on across the path tables (epochs) a topology change makes.
TEST_F(HeadIoStatsTest, WaitingIoIsRequeuedOncePerWaitAcrossPathTables) {
  const std::string head = TwoPaths();
  BothControllers(ControllerState::kResetting);
  TestIo io;
  Submit(head, io);
  // Kicks and new path tables while it waits.
  ASSERT_OK(mp_->SetPolicy(head, "round-robin"));
  ASSERT_OK(mp_->SetDelayedRemoval(head, 30));
  Run();
  ASSERT_FALSE(io.done);
  EXPECT_EQ(Io(head).requeued, 1u);
  ASSERT_OK(mp_->SetControllerState("c1", ControllerState::kLive));
  Run();
  ASSERT_TRUE(io.done);
  EXPECT_TRUE(io.result.ok());
  const HeadIoCounters counted = Io(head);
  EXPECT_EQ(counted.requeued, 1u);
  EXPECT_EQ(counted.ios[kRead], 1u);
}

TEST_F(HeadIoStatsTest, ErrorsAreCountedByReason) {
  const std::string head = TwoPaths();
  // The device's own error (DNR): kNvme.
  Qp("c0").Script({nvme::Status::Make(sc::kInternalError, /*dnr=*/true)});
  TestIo nvme_error;
  Submit(head, nvme_error);
  Run();
  ASSERT_EQ(nvme_error.result.error, IoError::kNvme);
  // No path and nothing to wait for: kNoPath.
  BothControllers(ControllerState::kDead);
  TestIo no_path;
  Submit(head, no_path);
  ASSERT_EQ(no_path.result.error, IoError::kNoPath);

  const HeadIoCounters io = Io(head);
  EXPECT_EQ(io.errors[Reason(IoError::kNvme)], 1u);
  EXPECT_EQ(io.errors[Reason(IoError::kNoPath)], 1u);
  EXPECT_EQ(Errors(io), 2u);
  EXPECT_EQ(io.ios[kRead], 2u);  // every answer counts, errors too
  EXPECT_EQ(io.bytes[kRead], 0u);  // an error moved nothing
}

TEST_F(HeadIoStatsTest, FastFailIsCountedWhileTheHeadStays) {
  const std::string head = TwoPaths();
  ASSERT_OK(mp_->SetDelayedRemoval(head, 30));
  ASSERT_OK(mp_->SetIoFailTimeout(head, 5));
  std::vector<TestIo> waiting = LoseBothPathsWith(head, 2);
  EXPECT_EQ(Io(head).requeued, 2u);
  clock_.AdvanceSeconds(5);
  Run();
  for (TestIo& io : waiting) ASSERT_EQ(io.result.error, IoError::kFastFail);
  TestIo late;  // fails at once now
  Submit(head, late);
  ASSERT_EQ(late.result.error, IoError::kFastFail);
  const HeadIoCounters io = Io(head);
  EXPECT_EQ(io.errors[Reason(IoError::kFastFail)], 3u);
  EXPECT_EQ(Errors(io), 3u);
}

// The last I/Os of a head fail with kHeadRemoved after the control side let the head go:
// they are still counted, in the head's counters the channel holds (no use after free
// under ASan either).
TEST_F(HeadIoStatsTest, IoFailingAsTheHeadIsRemovedIsCounted) {
  const std::string head = TwoPaths();
  ASSERT_OK(mp_->SetDelayedRemoval(head, 10));
  Run();
  Channel* ch = ChannelOf(head);
  ASSERT_NE(ch, nullptr);
  const std::shared_ptr<HeadShared> shared = ch->head_shared();
  ASSERT_NE(shared, nullptr);
  std::vector<TestIo> waiting = LoseBothPathsWith(head, 3);
  clock_.AdvanceSeconds(10);
  Run();
  for (TestIo& io : waiting) ASSERT_EQ(io.result.error, IoError::kHeadRemoved);
  ASSERT_FALSE(mp_->GetHead(head).ok());
  const HeadIoCounters io = Sum(*shared, workers_.size());
  EXPECT_EQ(io.errors[Reason(IoError::kHeadRemoved)], 3u);
  EXPECT_EQ(io.ios[kRead], 3u);
  EXPECT_EQ(io.answered(), 3u);
}

// The latency runs from the arrival at the channel to the answer: an I/O a queue pair
// holds for 3 ms lands in le=5ms, not le=2.5ms; one that waits 1.5 s for a path and then
// takes one lands in le=2.5s.
TEST_F(HeadIoStatsTest, LatencyFromArrivalToAnswerLandsInItsBucket) {
  const std::string head = TwoPaths();
  Qp("c0").set_hold(true);
  TestIo held;
  Submit(head, held);
  clock_.Advance(3'000'000);
  Run();
  ASSERT_FALSE(held.done);
  Qp("c0").set_hold(false);
  Run();
  ASSERT_TRUE(held.result.ok());
  HeadIoCounters io = Io(head);
  EXPECT_EQ(io.latency[4], 0u);  // le=1ms
  EXPECT_EQ(io.latency[5], 0u);  // le=2.5ms
  EXPECT_EQ(io.latency[6], 1u);  // le=5ms
  EXPECT_EQ(io.answered(), 1u);
  EXPECT_EQ(io.latency_ns_sum, 3'000'000u);

  BothControllers(ControllerState::kResetting);
  TestIo stalled;
  Submit(head, stalled);
  Run();
  clock_.Advance(1'500'000'000);
  ASSERT_OK(mp_->SetControllerState("c1", ControllerState::kLive));
  Run();
  ASSERT_TRUE(stalled.result.ok());
  io = Io(head);
  EXPECT_EQ(io.latency[13], 1u);  // le=1s: only the first
  EXPECT_EQ(io.latency[14], 2u);  // le=2.5s
  EXPECT_EQ(io.latency_ns_sum, 1'503'000'000u);
}

// Only while no path is selectable, on the monotonic clock; the outage under way counts
// when read.
TEST_F(HeadIoStatsTest, NoPathSecondsGrowOnlyWhileNoPathIsSelectable) {
  const std::string head = TwoPaths();
  auto seconds = [&] {
    absl::StatusOr<HeadInfo> info = mp_->GetHead(head);
    EXPECT_OK(info);
    return info.ok() ? info->no_path_nanos / 1'000'000'000.0 : -1.0;
  };
  clock_.AdvanceSeconds(7);
  EXPECT_EQ(seconds(), 0.0);
  ASSERT_OK(mp_->FailPath(head, "c0", "test"));
  clock_.AdvanceSeconds(7);
  EXPECT_EQ(seconds(), 0.0);  // c1 still selectable
  ASSERT_OK(mp_->FailPath(head, "c1", "test"));
  clock_.AdvanceSeconds(3);
  EXPECT_EQ(seconds(), 3.0);  // open interval
  clock_.AdvanceSeconds(1);
  EXPECT_EQ(seconds(), 4.0);
  ASSERT_OK(mp_->ReinstatePath(head, "c1"));
  clock_.AdvanceSeconds(20);
  EXPECT_EQ(seconds(), 4.0);  // closed at the transition
  ASSERT_OK(mp_->SetControllerState("c1", ControllerState::kResetting));
  clock_.AdvanceSeconds(2);
  ASSERT_OK(mp_->SetControllerState("c1", ControllerState::kLive));
  clock_.AdvanceSeconds(5);
  EXPECT_EQ(seconds(), 6.0);
}

}  // namespace
}  // namespace umpath
