// SEMANTICS "Fencing": a command given to a controller goes back to its head (failover)
// only when its completion arrived, or the controller was fenced and its CQT passed.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agent/core/testing/core_fixture.h"

namespace umpath {
namespace {

using ::umpath::testing::CoreFixture;
using ::umpath::testing::StatusIs;
using ::umpath::testing::CountDone;
using ::umpath::testing::TestIo;

class FenceTest : public CoreFixture {
 protected:
  // c0 (the preferred path: numa, first) and c1 behind one head; c0 holds what it gets.
  std::string TwoPaths(uint16_t c0_cqt_ms = 0) {
    AddController("c0", -1, false, "nqn.2026-01.io.umpath:subsys0", c0_cqt_ms);
    AddController("c1");
    auto h0 = AddPath("c0");
    auto h1 = AddPath("c1");
    EXPECT_OK(h0);
    EXPECT_OK(h1);
    Run();
    backends_["c0"]->auto_fence = false;  // each test fences c0 by hand
    Qp("c0").set_hold(true);
    return *h0;
  }
  static int Done(const std::vector<TestIo>& ios) { return CountDone(ios); }
};

TEST_F(FenceTest, RemovedControllerHandsBackNothingUntilFenced) {
  const std::string head = TwoPaths();
  std::vector<TestIo> ios(4);
  for (auto& io : ios) Submit(head, io);
  ASSERT_EQ(Qp("c0").outstanding(), 4u);
  ASSERT_OK(mp_->RemoveController("c0", "hot-removed"));
  Run();
  EXPECT_EQ(backends_["c0"]->quiesced, 1);
  clock_.Advance(3600'000'000'000);  // no amount of time fences a controller
  Run();
  EXPECT_EQ(Done(ios), 0);
  EXPECT_EQ(Qp("c0").abort_calls(), 0u);
  EXPECT_EQ(Qp("c1").submits(), 0u);
  EXPECT_EQ(backends_["c0"]->released, 0);

  ASSERT_OK(mp_->ControllerFenced("c0"));
  Run();
  EXPECT_EQ(Done(ios), 4);
  for (const auto& io : ios) EXPECT_TRUE(io.result.ok());
  EXPECT_EQ(Qp("c0").aborted(), 4u);
  EXPECT_EQ(Qp("c1").submits(), 4u);
  EXPECT_EQ(backends_["c0"]->released, 1);
  EXPECT_EQ(mp_->fenced_ios_total(), 4u);
}

TEST_F(FenceTest, FencingAControllerThatIsNotQuiescedIsRefused) {
  TwoPaths();
  EXPECT_THAT(mp_->ControllerFenced("c0"), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(mp_->ControllerFenced("nope"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(mp_->ResumeController("c0"), StatusIs(absl::StatusCode::kFailedPrecondition));
}

// The case: CQT of 2 s reported: failover waits 2 s, I/O on other paths does not.
TEST_F(FenceTest, CommandQuiesceTimeDelaysOnlyTheFencedControllersCommands) {
  const std::string head = TwoPaths(/*c0_cqt_ms=*/2000);
  std::vector<TestIo> held(3);
  for (auto& io : held) Submit(head, io);
  ASSERT_OK(mp_->RemoveController("c0", "controller lost"));
  Run();
  ASSERT_OK(mp_->ControllerFenced("c0"));
  Run();
  // New I/O meanwhile goes to c1 at once.
  std::vector<TestIo> fresh(5);
  for (auto& io : fresh) Submit(head, io);
  Run();
  EXPECT_EQ(Done(fresh), 5);
  EXPECT_EQ(Done(held), 0);
  clock_.Advance(1'999'000'000);
  Run();
  EXPECT_EQ(Done(held), 0) << "handed back before CQT passed";
  EXPECT_EQ(Qp("c0").abort_calls(), 0u);
  clock_.Advance(1'000'000);
  Run();
  EXPECT_EQ(Done(held), 3);
  for (const auto& io : held) EXPECT_TRUE(io.result.ok());
  EXPECT_EQ(Qp("c1").submits(), 8u);
}

TEST_F(FenceTest, ResetQuiescesFencesHandsBackAndResumes) {
  const std::string head = TwoPaths(/*c0_cqt_ms=*/100);
  std::vector<TestIo> held(2);
  for (auto& io : held) Submit(head, io);
  ASSERT_OK(mp_->SetControllerState("c0", ControllerState::kResetting, "test"));
  ASSERT_OK(mp_->QuiesceController("c0"));
  EXPECT_THAT(mp_->QuiesceController("c0"), StatusIs(absl::StatusCode::kFailedPrecondition));
  Run();
  EXPECT_EQ(backends_["c0"]->quiesced, 1);
  EXPECT_EQ(Done(held), 0);
  ASSERT_OK(mp_->ControllerFenced("c0"));
  clock_.Advance(100'000'000);
  Run();
  EXPECT_EQ(Done(held), 2);
  EXPECT_EQ(backends_["c0"]->handed_back, 1);
  EXPECT_EQ(backends_["c0"]->released, 0);
  ASSERT_OK_AND_ASSIGN(ControllerInfo info, mp_->GetController("c0"));
  EXPECT_EQ(info.fenced_ios, 2u);
  EXPECT_EQ(info.cqt_ms, 100u);

  // Back in service: c0 takes I/O again once it is LIVE.
  Qp("c0").set_hold(false);
  Qp("c0").set_gone(false);
  ASSERT_OK(mp_->ResumeController("c0"));
  ASSERT_OK(mp_->SetControllerState("c0", ControllerState::kLive, "reset done"));
  Run();
  const uint64_t before = Qp("c0").submits();
  TestIo io;
  Submit(head, io);
  Run();
  EXPECT_TRUE(io.done && io.result.ok());
  EXPECT_EQ(Qp("c0").submits(), before + 1);
}

TEST_F(FenceTest, RemovalDuringAResetEndsWithTheQueuePairsGone) {
  const std::string head = TwoPaths();
  std::vector<TestIo> held(2);
  for (auto& io : held) Submit(head, io);
  ASSERT_OK(mp_->SetControllerState("c0", ControllerState::kResetting, "test"));
  ASSERT_OK(mp_->QuiesceController("c0"));
  Run();
  // The reset fails before the controller is fenced: it is removed instead.
  ASSERT_OK(mp_->RemoveController("c0", "reset failed"));
  Run();
  EXPECT_EQ(Done(held), 0);
  ASSERT_OK(mp_->ControllerFenced("c0"));
  Run();
  EXPECT_EQ(Done(held), 2);
  EXPECT_EQ(backends_["c0"]->released, 1);
  EXPECT_EQ(backends_["c0"]->handed_back, 0);
}

TEST_F(FenceTest, RemovalAfterAResetHandedBackReleasesTheQueuePairs) {
  TwoPaths();
  ASSERT_OK(mp_->QuiesceController("c0"));
  Run();
  ASSERT_OK(mp_->ControllerFenced("c0"));
  Run();
  EXPECT_EQ(backends_["c0"]->handed_back, 1);
  ASSERT_OK(mp_->RemoveController("c0", "reset failed"));
  Run();
  EXPECT_EQ(backends_["c0"]->released, 1);
}

// The case: a kernel command held 10 s: detach does not complete it early.
TEST_F(FenceTest, CommandsTheKernelHoldsAreNeverCompletedByTheAgent) {
  const std::string head = TwoPaths();
  Qp("c0").set_lower_layer_owns(true);
  backends_["c0"]->auto_fence = true;  // as the kernel backend: nothing to fence
  std::vector<TestIo> held(3);
  for (auto& io : held) Submit(head, io);
  ASSERT_OK(mp_->RemoveController("c0", "detached"));
  Run();
  clock_.Advance(10'000'000'000);
  Run();
  EXPECT_EQ(Done(held), 0);
  EXPECT_EQ(Qp("c0").outstanding(), 3u);
  EXPECT_EQ(backends_["c0"]->released, 0) << "released while the kernel holds commands";
  // The kernel returns them (completed, or failed by its own timeout): they complete
  // with what the kernel said, and only then is the queue pair let go.
  Qp("c0").Script({nvme::Status{}, nvme::Status{},
                   nvme::Status::Make(nvme::status_code::kHostPathError)});
  Qp("c0").set_hold(false);
  Run();
  EXPECT_EQ(Done(held), 3);
  for (const auto& io : held) EXPECT_TRUE(io.result.ok());  // the path error failed over
  EXPECT_EQ(Qp("c1").submits(), 1u);
  EXPECT_EQ(Qp("c0").aborted(), 0u);
  EXPECT_EQ(backends_["c0"]->released, 1);
}

TEST_F(FenceTest, ANameInUseAgainWhileTheOldControllerIsFenced) {
  const std::string head = TwoPaths();
  TestIo held;
  Submit(head, held);
  ASSERT_OK(mp_->RemoveController("c0", "gone"));
  Run();
  backends_["c0-old"] = std::move(backends_["c0"]);  // the core still calls it
  AddController("c0");  // the same name, a new controller
  ASSERT_OK(AddPath("c0"));
  Run();
  ASSERT_OK(mp_->ControllerFenced("c0"));  // the old one: the new one is in service
  Run();
  EXPECT_TRUE(held.done && held.result.ok());
  ASSERT_OK_AND_ASSIGN(ControllerInfo info, mp_->GetController("c0"));
  EXPECT_EQ(info.state, ControllerState::kLive);
}

}  // namespace
}  // namespace umpath
