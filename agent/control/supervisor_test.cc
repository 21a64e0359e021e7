// The controller state machine over the real core and hand-driven workers, with fake
// drivers: reset, recovery that fails, detach during a reset, hot-unplug, a reset the
// layer below does, health checks and the one shutdown path, without a VM.
#include "agent/control/supervisor.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agent/control/testing/supervised_fixture.h"

namespace umpath {
namespace {

using ::testing::HasSubstr;
using ::umpath::testing::SupervisedFixture;
using ::umpath::testing::StatusIs;
using ::umpath::testing::CountDone;
using ::umpath::testing::TestIo;
using S = SupervisedState;

// How one controller's driver behaves, and what the supervisor asked of it. Owned by
// the test: the driver itself goes with its controller.
struct Played {
  ResetKind kind = ResetKind::kFenceAndRecover;
  std::string refuse;
  bool release_on_fence = false;
  absl::Status recover_result;
  HealthCheck health;
  std::function<void()> on_fence, on_recover;

  int fences = 0, recoveries = 0, ana_reads = 0, detaches = 0;
  std::atomic<int> below_resets{0};
  bool detached_gone = false;
  FenceAsk last_ask;
};

struct FakeDriver final : ControllerDriver {
  explicit FakeDriver(std::shared_ptr<Played> p) : p(std::move(p)) {}
  ResetKind reset_kind() const override { return p->kind; }
  std::string ResetRefused() const override { return p->refuse; }
  FenceResult Fence(const FenceAsk& ask) override {
    ++p->fences;
    p->last_ask = ask;
    if (p->on_fence) p->on_fence();
    return {.released = p->release_on_fence || ask.release, .detail = "fake fence"};
  }
  absl::Status Recover() override {
    ++p->recoveries;
    if (p->on_recover && p->recover_result.ok()) p->on_recover();
    return p->recover_result;
  }
  absl::AnyInvocable<absl::Status() &&> ResetBelow() override {
    return [p = p] {
      ++p->below_resets;
      return absl::OkStatus();
    };
  }
  void ReadAnaLog() override { ++p->ana_reads; }
  HealthCheck CheckHealth() override { return p->health; }
  void OnDetach(bool gone) override {
    ++p->detaches;
    p->detached_gone = gone;
  }
  std::shared_ptr<Played> p;
};

class SupervisorTest : public SupervisedFixture {
 protected:
  // c0 (preferred: first) and c1 behind one head, through the supervisor.
  std::string TwoPaths(uint16_t c0_cqt_ms = 0) {
    for (const char* name : {"c0", "c1"}) {
      drivers_[name] = std::make_shared<Played>();
      Supervise(name, std::make_unique<FakeDriver>(drivers_[name]),
                name == std::string("c0") ? c0_cqt_ms : 0);
    }
    auto h0 = AddPath("c0");
    EXPECT_OK(AddPath("c1"));
    Pump();
    Qp("c0").set_hold(true);
    return *h0;
  }
  static int Done(const std::vector<TestIo>& ios) { return CountDone(ios); }
  // c0 detached with a command the layer below still holds: retired, fenced, and not
  // gone until the test lets the command back.
  void DetachC0WhileTheLayerBelowHolds(TestIo& held) {
    const std::string head = TwoPaths();
    Qp("c0").set_lower_layer_owns(true);
    drivers_["c0"]->kind = ResetKind::kBelow;
    Submit(head, held);
    ASSERT_OK(sup_->Detach("c0", "detached"));
    Pump();
    ASSERT_EQ(State("c0"), S::kRetiredFenced);
  }

  std::map<std::string, std::shared_ptr<Played>> drivers_;
};

TEST(SupervisorTableTest, EveryStateAnswersOnlyItsEvents) {
  const ResetKind k = ResetKind::kFenceAndRecover;
  EXPECT_EQ(NextState(S::kLive, SupervisorEvent::kResetRequested, k), S::kResetQuiescing);
  EXPECT_EQ(NextState(S::kLive, SupervisorEvent::kResetRequested, ResetKind::kBelow), S::kResetBelow);
  EXPECT_EQ(NextState(S::kResetQuiescing, SupervisorEvent::kQuiesced, k), S::kResetFencing);
  EXPECT_EQ(NextState(S::kResetFencing, SupervisorEvent::kFenceReleased, k), S::kRetiredFenced);
  EXPECT_EQ(NextState(S::kResetFenced, SupervisorEvent::kDeviceGone, k), S::kRetiredFenced);
  EXPECT_EQ(NextState(S::kRetiring, SupervisorEvent::kQuiesced, k), S::kRetiredFencing);
  EXPECT_EQ(NextState(S::kRetiredFenced, SupervisorEvent::kQueuePairsReleased, k), S::kGone);
  // Nothing leaves the core's hands early: no hand-back, release or resume out of turn.
  EXPECT_EQ(NextState(S::kRetiring, SupervisorEvent::kQueuePairsReleased, k), std::nullopt);
  EXPECT_EQ(NextState(S::kResetQuiescing, SupervisorEvent::kHandedBack, k), std::nullopt);
  EXPECT_EQ(NextState(S::kLive, SupervisorEvent::kQuiesced, k), std::nullopt);
  EXPECT_EQ(NextState(S::kResetFenced, SupervisorEvent::kResetRequested, k), std::nullopt);
  EXPECT_EQ(NextState(S::kGone, SupervisorEvent::kDetachRequested, k), std::nullopt);
}

// RDY-stays-1 and CQT are the vfio driver's and the core's (fence_test); here: the
// driver is asked to fence only once nothing runs on the queue pairs, nothing is handed
// back before it has, and the controller serves again after recovery.
TEST_F(SupervisorTest, ResetQuiescesFencesHandsBackRecoversAndServes) {
  const std::string head = TwoPaths(/*c0_cqt_ms=*/2000);
  std::vector<TestIo> held(3);
  for (auto& io : held) Submit(head, io);
  int done_at_fence = -1;
  drivers_["c0"]->on_fence = [&] { done_at_fence = Done(held); };
  ASSERT_OK(sup_->Reset("c0", "test"));
  EXPECT_THAT(sup_->Reset("c0", "again"), StatusIs(absl::StatusCode::kFailedPrecondition));
  Pump();
  EXPECT_EQ(drivers_["c0"]->fences, 1);
  EXPECT_EQ(done_at_fence, 0) << "commands handed back before the fence";
  EXPECT_EQ(State("c0"), S::kResetFenced);
  EXPECT_EQ(Done(held), 0) << "handed back before CQT";
  ASSERT_OK_AND_ASSIGN(ControllerInfo info, mp_->GetController("c0"));
  EXPECT_EQ(info.state, ControllerState::kResetting);

  drivers_["c0"]->on_recover = [this] {  // brought up again: its queue takes commands
    Qp("c0").set_hold(false);
    Qp("c0").set_gone(false);
  };
  clock_.Advance(2'000'000'000);
  Pump();
  EXPECT_EQ(Done(held), 3);
  EXPECT_EQ(Qp("c1").submits(), 3u);
  EXPECT_EQ(drivers_["c0"]->recoveries, 1);
  EXPECT_EQ(State("c0"), S::kLive);
  EXPECT_EQ(drivers_["c0"]->ana_reads, 1);
  ASSERT_OK_AND_ASSIGN(info, mp_->GetController("c0"));
  EXPECT_EQ(info.state, ControllerState::kLive);
  TestIo io;
  Submit(head, io);
  Pump();
  EXPECT_TRUE(io.done && io.result.ok());
  EXPECT_EQ(Qp("c0").completions(), 1u) << "c0 did not serve again after its reset";
  EXPECT_TRUE(Logged("c0: reset-fenced -> recovering on handed-back"));
}

TEST_F(SupervisorTest, ARecoveryThatFailsRemovesTheController) {
  const std::string head = TwoPaths();
  std::vector<TestIo> held(2);
  for (auto& io : held) Submit(head, io);
  drivers_["c0"]->recover_result = absl::UnavailableError("enable: CSTS.RDY never came");
  ASSERT_OK(sup_->Reset("c0", "test"));
  Pump();
  EXPECT_EQ(Done(held), 2);
  for (const auto& io : held) EXPECT_TRUE(io.result.ok());
  EXPECT_EQ(State("c0"), S::kGone);
  EXPECT_THAT(mp_->GetController("c0"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(drivers_.count("c0"), 1u);  // (the driver itself is destroyed)
  EXPECT_TRUE(Logged("reset failed: enable: CSTS.RDY never came"));
}

TEST_F(SupervisorTest, DetachDuringAResetFencesOnceAndLetsGo) {
  const std::string head = TwoPaths();
  std::vector<TestIo> held(2);
  for (auto& io : held) Submit(head, io);
  Played* d = drivers_["c0"].get();
  int fences_seen = 0;
  d->on_fence = [&] { fences_seen = d->fences; };
  ASSERT_OK(sup_->Reset("c0", "test"));
  // Before the workers have quiesced it, the detach comes.
  ASSERT_OK(sup_->Detach("c0", "detached through the API"));
  EXPECT_EQ(State("c0"), S::kRetiring);
  EXPECT_THAT(sup_->Detach("c0", "again"), StatusIs(absl::StatusCode::kNotFound));
  Pump();
  EXPECT_EQ(fences_seen, 1);
  EXPECT_EQ(Done(held), 2);
  EXPECT_EQ(State("c0"), S::kGone);
  EXPECT_FALSE(sup_->Known("c0"));
}

TEST_F(SupervisorTest, HotUnplugFencesByReleasingBeforeAnythingIsHandedBack) {
  const std::string head = TwoPaths();
  std::vector<TestIo> held(2);
  for (auto& io : held) Submit(head, io);
  Played* d = drivers_["c0"].get();
  int done_at_fence = -1;
  d->on_fence = [&] { done_at_fence = Done(held); };
  ASSERT_OK(sup_->Detach("c0", "hot-unplug", /*device_gone=*/true));
  EXPECT_EQ(d->detaches, 1);
  EXPECT_TRUE(d->detached_gone);
  Pump();
  EXPECT_TRUE(d->last_ask.release);
  EXPECT_FALSE(d->last_ask.shutdown_notify);
  EXPECT_EQ(done_at_fence, 0);
  EXPECT_EQ(Done(held), 2);
  EXPECT_EQ(State("c0"), S::kGone);
}

TEST_F(SupervisorTest, AFenceThatHadToReleaseTheDeviceEndsTheReset) {
  TwoPaths();
  drivers_["c0"]->release_on_fence = true;
  ASSERT_OK(sup_->Reset("c0", "controller fatal status"));
  Pump();
  EXPECT_EQ(drivers_["c0"]->recoveries, 0);
  EXPECT_EQ(State("c0"), S::kGone);
  EXPECT_THAT(mp_->GetController("c0"), StatusIs(absl::StatusCode::kNotFound));
}

// A kernel controller: the kernel resets it (off the control thread), and what the
// kernel holds is never completed by the agent (SEMANTICS "Fencing").
TEST_F(SupervisorTest, AResetBelowRunsOffTheControlThread) {
  const std::string head = TwoPaths();
  Played* d = drivers_["c0"].get();
  d->kind = ResetKind::kBelow;
  ASSERT_OK(sup_->Reset("c0", "requested"));
  EXPECT_EQ(State("c0"), S::kResetBelow);
  ASSERT_OK_AND_ASSIGN(ControllerInfo info, mp_->GetController("c0"));
  EXPECT_EQ(info.state, ControllerState::kResetting);
  for (int i = 0; i < 3000 && State("c0") != S::kLive; ++i) {
    Pump();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(State("c0"), S::kLive);
  EXPECT_EQ(d->below_resets.load(), 1);
  EXPECT_EQ(d->fences, 0);
  d->refuse = "c0 is connecting; the kernel is already recovering it";
  EXPECT_THAT(sup_->Reset("c0", "again"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("connecting")));
}

TEST_F(SupervisorTest, KernelHeldCommandsKeepADetachedControllerUntilReturned) {
  const std::string head = TwoPaths();
  Qp("c0").set_lower_layer_owns(true);
  drivers_["c0"]->kind = ResetKind::kBelow;
  std::vector<TestIo> held(3);
  for (auto& io : held) Submit(head, io);
  ASSERT_OK(sup_->Detach("c0", "detached"));
  Pump();
  clock_.Advance(10'000'000'000);
  Pump();
  EXPECT_EQ(Done(held), 0);
  EXPECT_EQ(State("c0"), S::kRetiredFenced) << "let go while the kernel holds commands";
  Qp("c0").set_hold(false);
  Pump();
  EXPECT_EQ(Done(held), 3);
  EXPECT_EQ(State("c0"), S::kGone);
}

// What an attach of the same name, just after a detach, waits for: the removal event
// comes before the workers let go (a sim return that came first got UNAVAILABLE).
TEST_F(SupervisorTest, WhenGoneAnswersOnceTheLastControllerOfThatNameHasGone) {
  TestIo held;
  DetachC0WhileTheLayerBelowHolds(held);
  std::vector<std::pair<std::string, bool>> answers;
  auto note = [&answers](std::string who) { return [&answers, who](bool gone) { answers.emplace_back(who, gone); }; };
  sup_->WhenGone("c0", 60'000'000'000, note("waits"));
  sup_->WhenGone("c0", 1'000'000'000, note("gives up"));
  sup_->WhenGone("c9", 1'000'000'000, note("never known"));
  EXPECT_TRUE(answers.empty()) << "never from inside the call";
  Pump();
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(answers[0], std::make_pair(std::string("never known"), true));
  clock_.Advance(2'000'000'000);
  Pump();
  ASSERT_EQ(answers.size(), 2u);
  EXPECT_EQ(answers[1], std::make_pair(std::string("gives up"), false)) << "past its timeout, still held";
  // The layer below gives the command back: the workers let go, and the name is free.
  Qp("c0").set_hold(false);
  Pump();
  EXPECT_EQ(State("c0"), S::kGone);
  ASSERT_EQ(answers.size(), 3u);
  EXPECT_EQ(answers[2], std::make_pair(std::string("waits"), true));
  clock_.Advance(120'000'000'000);
  Pump();
  EXPECT_EQ(answers.size(), 3u) << "each answered once";
}

TEST_F(SupervisorTest, WhenGoneAnswersFalseWhenTheSupervisorGoesFirst) {
  TestIo held;
  DetachC0WhileTheLayerBelowHolds(held);
  std::optional<bool> answer;
  sup_->WhenGone("c0", 60'000'000'000, [&answer](bool gone) { answer = gone; });
  Pump();
  EXPECT_FALSE(answer.has_value());
  // The agent's order: the core goes, then the supervisor, the controller still held.
  mp_->Shutdown();
  Run();
  mp_.reset();
  sup_.reset();
  EXPECT_EQ(answer, std::optional<bool>(false));
}

TEST_F(SupervisorTest, HealthChecksResetAFatalControllerAndDetachAGoneOne) {
  TwoPaths();
  drivers_["c0"]->health = {HealthCheck::kFatal, "controller fatal status (CSTS.CFS)"};
  drivers_["c1"]->health = {HealthCheck::kGone, "registers read all ones"};
  Pump();
  EXPECT_EQ(State("c0"), S::kLive);  // not yet: once a second
  clock_.Advance(1'000'000'000);
  Pump();
  // Reset all the way (CQT 0), and served again.
  EXPECT_EQ(drivers_["c0"]->fences, 1);
  EXPECT_EQ(drivers_["c0"]->recoveries, 1);
  EXPECT_EQ(State("c0"), S::kLive);
  EXPECT_TRUE(Logged("c0: live -> reset-quiescing on reset-requested: controller fatal status"));
  EXPECT_EQ(State("c1"), S::kGone);
}

TEST_F(SupervisorTest, StopAllDetachesEveryControllerWithAShutdownFirst) {
  TwoPaths();
  Qp("c0").set_hold(false);
  std::optional<size_t> left;
  sup_->StopAll(10'000'000'000, [&](size_t n) { left = n; });
  Pump();
  ASSERT_TRUE(left.has_value());
  EXPECT_EQ(*left, 0u);
  EXPECT_TRUE(drivers_["c0"]->last_ask.shutdown_notify);
  EXPECT_THAT(sup_->Add(std::make_unique<FakeDriver>(std::make_shared<Played>()), ControllerSpec{.name = "c2"}, {}),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(SupervisorTest, StopAllGivesUpOnAControllerTheKernelDoesNotLetGo) {
  const std::string head = TwoPaths();
  Qp("c0").set_lower_layer_owns(true);
  TestIo io;
  Submit(head, io);
  std::optional<size_t> left;
  sup_->StopAll(10'000'000'000, [&](size_t n) { left = n; });
  Pump();
  EXPECT_FALSE(left.has_value());
  clock_.Advance(10'000'000'000);
  Pump();
  ASSERT_TRUE(left.has_value());
  EXPECT_EQ(*left, 1u);
  EXPECT_FALSE(io.done);
  Qp("c0").set_hold(false);  // (the kernel returns it after all; the core still takes it)
  Pump();
}

}  // namespace
}  // namespace umpath
