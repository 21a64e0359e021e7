// SEMANTICS acceptance 13 and the vfio fence sequence, against the real core with a
// device that is played by the test.
#include "agent/vfio/fence.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "agent/control/testing/supervised_fixture.h"

namespace umpath::vfio {
namespace {

using ::testing::ElementsAre;
using ::umpath::testing::SupervisedFixture;
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

// c0 as the vfio backend drives it, below the real supervisor.
class PlayedDriver final : public ControllerDriver {
 public:
  explicit PlayedDriver(PlayedController* dev) : dev_(dev) {}
  ResetKind reset_kind() const override { return ResetKind::kFenceAndRecover; }
  FenceResult Fence(const FenceAsk& ask) override { return FenceForSupervisor(*dev_, ask); }
  absl::Status Recover() override { return absl::UnavailableError("the test does not bring it up"); }
  void ReadAnaLog() override {}

 private:
  PlayedController* dev_;
};

class VfioFenceTest : public SupervisedFixture {
 protected:
  std::string TwoPaths(uint16_t c0_cqt_ms) {
    Supervise("c0", std::make_unique<PlayedDriver>(&dev_), c0_cqt_ms);
    AddController("c1");
    auto h0 = AddPath("c0");
    EXPECT_OK(h0);
    EXPECT_OK(AddPath("c1"));
    Pump();
    Qp("c0").set_hold(true);  // c0 stops answering
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
  SupervisedState State() { return SupervisedFixture::State("c0"); }
  std::vector<TestIo> ios_;
  PlayedController dev_;
};

// Acceptance 13: a controller that ignores CC.EN=0 (RDY stays 1): none of its commands is
// resubmitted before Bus Master is cleared and the function reset, and then CQT passed.
TEST_F(VfioFenceTest, Acceptance13ControllerThatIgnoresDisableIsResetBeforeFailover) {
  TwoPaths(/*c0_cqt_ms=*/500);
  dev_.rdy_stuck = true;
  ASSERT_OK(sup_->Reset("c0", "I/O command timeout"));
  Pump();
  EXPECT_THAT(dev_.calls,
              ElementsAre("delete-queues", "disable", "clear-bus-master", "reset-function"));
  EXPECT_THAT(dev_.done_at_call, ElementsAre(0, 0, 0, 0));
  EXPECT_EQ(State(), SupervisedState::kResetFenced);
  EXPECT_EQ(Qp("c1").submits(), 0u);
  clock_.Advance(499'000'000);
  Pump();
  EXPECT_EQ(Done(), 0) << "resubmitted before CQT passed";
  EXPECT_EQ(Qp("c1").submits(), 0u);
  clock_.Advance(1'000'000);
  Pump();
  EXPECT_EQ(Done(), 4);
  for (const auto& io : ios_) EXPECT_TRUE(io.result.ok());
  EXPECT_EQ(Qp("c1").submits(), 4u);
  // (the test's controller does not come up again: it is removed)
  EXPECT_EQ(State(), SupervisedState::kGone);
}

TEST_F(VfioFenceTest, ADisableThatTakesIsTheFence) {
  TwoPaths(0);
  ASSERT_OK(sup_->Reset("c0", "I/O command timeout"));
  Pump();
  EXPECT_THAT(dev_.calls, ElementsAre("delete-queues", "disable"));
  EXPECT_EQ(Done(), 4);
}

TEST_F(VfioFenceTest, AFunctionThatCannotBeResetIsReleasedFirst) {
  TwoPaths(0);
  dev_.rdy_stuck = true;
  dev_.reset_fails = true;
  ASSERT_OK(sup_->Reset("c0", "I/O command timeout"));
  Pump();
  EXPECT_THAT(dev_.calls, ElementsAre("delete-queues", "disable", "clear-bus-master",
                                      "reset-function", "release"));
  EXPECT_THAT(dev_.done_at_call, ElementsAre(0, 0, 0, 0, 0));
  EXPECT_EQ(Done(), 4);
  EXPECT_EQ(State(), SupervisedState::kGone);
}

TEST_F(VfioFenceTest, AGoneDeviceIsReleasedBeforeAnythingIsHandedBack) {
  TwoPaths(0);
  dev_.gone = true;
  ASSERT_OK(sup_->Detach("c0", "the device is gone (registers read all ones)", true));
  Pump();
  EXPECT_THAT(dev_.calls, ElementsAre("release"));
  EXPECT_THAT(dev_.done_at_call, ElementsAre(0));
  EXPECT_EQ(Done(), 4);
  EXPECT_EQ(State(), SupervisedState::kGone);
}

TEST_F(VfioFenceTest, HotUnplugDisablesThenReleasesThenHandsBack) {
  TwoPaths(0);
  ASSERT_OK(sup_->Detach("c0", "hot-unplug", /*device_gone=*/true));
  Pump();
  EXPECT_THAT(dev_.calls, ElementsAre("delete-queues", "disable", "release"));
  EXPECT_THAT(dev_.done_at_call, ElementsAre(0, 0, 0));
  EXPECT_EQ(Done(), 4);
}

TEST_F(VfioFenceTest, StoppingShutsDownCleanlyFirst) {
  TwoPaths(0);
  std::optional<size_t> left;
  sup_->StopAll(10'000'000'000, [&](size_t n) { left = n; });
  Pump();
  EXPECT_THAT(dev_.calls, ElementsAre("delete-queues", "shutdown-notify", "disable"));
  EXPECT_THAT(dev_.done_at_call, ElementsAre(0, 0, 0));
  EXPECT_EQ(Done(), 4);
  EXPECT_EQ(left, std::optional<size_t>(0));
}

}  // namespace
}  // namespace umpath::vfio
