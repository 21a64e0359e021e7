// SEMANTICS acceptance 13 and the vfio fence sequence, against the real core with a
// device that is played by the test.
#include "agent/vfio/fence.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "agent/core/testing/core_fixture.h"

namespace umpath::vfio {
namespace {

using ::testing::ElementsAre;
using ::umpath::testing::CoreFixture;
using ::umpath::testing::TestIo;

// A controller as the test wants it: RDY may stay 1 after CC.EN=0, the reset may fail,
// the registers may read all ones. Each call is recorded with how many I/Os of the
// test had completed at that moment.
class PlayedController final : public FenceOps {
 public:
  bool rdy_stuck = false;
  bool gone = false;
  bool reset_fails = false;
  std::vector<std::string> calls;
  std::vector<int> done_at_call;
  std::function<int()> done_now = [] { return 0; };

  bool Gone() override { return gone; }
  bool Fatal() override { return false; }
  absl::Status DeleteIoQueues() override {
    Note("delete-queues");
    return absl::DeadlineExceededError("admin opcode 0x00 got no completion");
  }
  absl::Status ShutdownNotify() override {
    Note("shutdown-notify");
    return absl::OkStatus();
  }
  absl::Status Disable() override {
    Note("disable");
    if (rdy_stuck) return absl::DeadlineExceededError("CSTS.RDY did not become 0 within CAP.TO");
    return absl::OkStatus();
  }
  absl::Status ClearBusMaster() override {
    Note("clear-bus-master");
    return absl::OkStatus();
  }
  absl::Status ResetFunction() override {
    Note("reset-function");
    return reset_fails ? absl::InternalError("VFIO_DEVICE_RESET: Inappropriate ioctl") : absl::OkStatus();
  }
  void Release() override { Note("release"); }

 private:
  void Note(std::string what) {
    calls.push_back(std::move(what));
    done_at_call.push_back(done_now());
  }
};

class VfioFenceTest : public CoreFixture {
 protected:
  std::string TwoPaths(uint16_t c0_cqt_ms) {
    AddController("c0", -1, false, "nqn.2026-01.io.umpath:subsys0", c0_cqt_ms);
    AddController("c1");
    auto h0 = AddPath("c0");
    EXPECT_OK(h0);
    EXPECT_OK(AddPath("c1"));
    Run();
    backends_["c0"]->auto_fence = false;  // the vfio backend fences: FenceAndReport
    Qp("c0").set_hold(true);              // c0 stops answering
    ios_.resize(4);
    for (auto& io : ios_) {
      io.req.opcode = nvme::IoOpcode::kWrite;
      Submit(*h0, io);
    }
    dev_.done_now = [this] { return Done(); };
    return *h0;
  }
  int Done() const {
    int n = 0;
    for (const auto& io : ios_) n += io.done;
    return n;
  }
  // As VfioManager::StartReset: RESETTING, queue pairs out of service.
  void StartReset() {
    ASSERT_OK(mp_->SetControllerState("c0", ControllerState::kResetting, "I/O command timeout"));
    ASSERT_OK(mp_->QuiesceController("c0"));
    Run();
    ASSERT_EQ(backends_["c0"]->quiesced, 1);
  }
  std::vector<TestIo> ios_;
  PlayedController dev_;
};

// Acceptance 13: a controller that ignores CC.EN=0 (RDY stays 1): none of its commands is
// resubmitted before Bus Master is cleared and the function reset, and then CQT passed.
TEST_F(VfioFenceTest, Acceptance13ControllerThatIgnoresDisableIsResetBeforeFailover) {
  TwoPaths(/*c0_cqt_ms=*/500);
  StartReset();
  dev_.rdy_stuck = true;
  std::string detail;
  EXPECT_EQ(FenceAndReport(*mp_, "c0", dev_, FenceRequest{}, &detail),
            FenceOutcome::kFunctionReset);
  EXPECT_THAT(dev_.calls,
              ElementsAre("delete-queues", "disable", "clear-bus-master", "reset-function"));
  EXPECT_THAT(dev_.done_at_call, ElementsAre(0, 0, 0, 0));
  EXPECT_EQ(Qp("c1").submits(), 0u);
  Run();
  clock_.Advance(499'000'000);
  Run();
  EXPECT_EQ(Done(), 0) << "resubmitted before CQT passed";
  EXPECT_EQ(Qp("c1").submits(), 0u);
  clock_.Advance(1'000'000);
  Run();
  EXPECT_EQ(Done(), 4);
  for (const auto& io : ios_) EXPECT_TRUE(io.result.ok());
  EXPECT_EQ(Qp("c1").submits(), 4u);
  EXPECT_EQ(backends_["c0"]->handed_back, 1);
  ASSERT_OK_AND_ASSIGN(ControllerInfo info, mp_->GetController("c0"));
  EXPECT_EQ(info.fenced_ios, 4u);
}

TEST_F(VfioFenceTest, ADisableThatTakesIsTheFence) {
  TwoPaths(0);
  StartReset();
  std::string detail;
  EXPECT_EQ(FenceAndReport(*mp_, "c0", dev_, FenceRequest{}, &detail), FenceOutcome::kDisabled);
  EXPECT_THAT(dev_.calls, ElementsAre("delete-queues", "disable"));
  Run();
  EXPECT_EQ(Done(), 4);
}

TEST_F(VfioFenceTest, AFunctionThatCannotBeResetIsReleasedFirst) {
  TwoPaths(0);
  StartReset();
  dev_.rdy_stuck = true;
  dev_.reset_fails = true;
  std::string detail;
  EXPECT_EQ(FenceAndReport(*mp_, "c0", dev_, FenceRequest{}, &detail), FenceOutcome::kReleased);
  EXPECT_THAT(dev_.calls, ElementsAre("delete-queues", "disable", "clear-bus-master",
                                      "reset-function", "release"));
  EXPECT_THAT(dev_.done_at_call, ElementsAre(0, 0, 0, 0, 0));
  Run();
  EXPECT_EQ(Done(), 4);
}

TEST_F(VfioFenceTest, AGoneDeviceIsReleasedBeforeAnythingIsHandedBack) {
  TwoPaths(0);
  ASSERT_OK(mp_->RemoveController("c0", "the device is gone (registers read all ones)"));
  Run();
  dev_.gone = true;
  std::string detail;
  EXPECT_EQ(FenceAndReport(*mp_, "c0", dev_, FenceRequest{}, &detail), FenceOutcome::kReleased);
  EXPECT_THAT(dev_.calls, ElementsAre("release"));
  EXPECT_THAT(dev_.done_at_call, ElementsAre(0));
  Run();
  EXPECT_EQ(Done(), 4);
  EXPECT_EQ(backends_["c0"]->released, 1);
}

TEST_F(VfioFenceTest, HotUnplugDisablesThenReleasesThenHandsBack) {
  TwoPaths(0);
  ASSERT_OK(mp_->RemoveController("c0", "hot-unplug"));
  Run();
  FenceRequest r;
  r.release = true;
  r.shutdown_notify = true;
  std::string detail;
  EXPECT_EQ(FenceAndReport(*mp_, "c0", dev_, r, &detail), FenceOutcome::kDisabled);
  EXPECT_THAT(dev_.calls, ElementsAre("delete-queues", "shutdown-notify", "disable", "release"));
  EXPECT_THAT(dev_.done_at_call, ElementsAre(0, 0, 0, 0));
  Run();
  EXPECT_EQ(Done(), 4);
}

}  // namespace
}  // namespace umpath::vfio
