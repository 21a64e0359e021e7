// SEMANTICS.md "Delayed removal" and acceptance statements 8-12, with a manual clock.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agent/core/testing/core_fixture.h"

namespace umpath {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::umpath::testing::CoreFixture;
using ::umpath::testing::StatusIs;
using ::umpath::testing::TestIo;

class DelayedRemovalTest : public CoreFixture {
 protected:
  // c0 and c1 share one namespace; returns the head's name.
  std::string Head(uint32_t delayed_removal_secs) {
    AddController("c0");
    AddController("c1");
    auto h = AddPath("c0");
    EXPECT_OK(AddPath("c1"));
    EXPECT_OK(mp_->SetDelayedRemoval(*h, delayed_removal_secs));
    Run();
    return *h;
  }
  void LoseBothPaths() {
    ASSERT_OK(mp_->RemovePath("c0", 1, "test"));
    ASSERT_OK(mp_->RemovePath("c1", 1, "test"));
    Run();
  }
};

// Acceptance 8.
TEST_F(DelayedRemovalTest, ZeroRemovesTheHeadAtOnceAndWaitingIoFails) {
  const std::string head = Head(0);
  // I/O waits while both controllers reset ...
  ASSERT_OK(mp_->SetControllerState("c0", ControllerState::kResetting));
  ASSERT_OK(mp_->SetControllerState("c1", ControllerState::kResetting));
  Run();
  TestIo io;
  Submit(head, io);
  Run();
  EXPECT_FALSE(io.done);
  // ... and fails when the last path goes, with the head.
  const uint64_t rev = mp_->journal().current_revision();
  ASSERT_OK(mp_->RemoveController("c0"));
  ASSERT_OK(mp_->RemoveController("c1"));
  Run();
  ASSERT_TRUE(io.done);
  EXPECT_EQ(io.result.error, IoError::kHeadRemoved);
  EXPECT_THAT(mp_->GetHead(head), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(TypesSince(rev),
              ElementsAre(EventType::kPathRemoved, EventType::kControllerRemoved,
                          EventType::kPathRemoved, EventType::kHeadRemoved,
                          EventType::kControllerRemoved));
}

// Acceptance 9.
TEST_F(DelayedRemovalTest, PathBackWithinTheWindowKeepsTheHeadAndIoSucceeds) {
  const std::string head = Head(10);
  const uint64_t uid = mp_->GetHead(head)->uid;
  const uint64_t rev = mp_->journal().current_revision();
  LoseBothPaths();
  ASSERT_OK_AND_ASSIGN(HeadInfo during, mp_->GetHead(head));
  EXPECT_TRUE(during.removal_pending);
  EXPECT_EQ(during.removal_deadline_wall_nanos, clock_.WallNanos() + 10 * kNanosPerSecond);
  std::vector<TestIo> gap(4);
  for (auto& io : gap) Submit(head, io);
  clock_.AdvanceSeconds(3);
  Run();
  for (auto& io : gap) EXPECT_FALSE(io.done);
  EXPECT_EQ(mp_->GetHead(head)->waiting_ios, 4u);

  ASSERT_OK_AND_ASSIGN(std::string again, AddPath("c1"));
  Run();
  EXPECT_EQ(again, head);
  for (auto& io : gap) {
    ASSERT_TRUE(io.done);
    EXPECT_TRUE(io.result.ok());
  }
  ASSERT_OK_AND_ASSIGN(HeadInfo after, mp_->GetHead(head));
  EXPECT_EQ(after.uid, uid);
  EXPECT_FALSE(after.removal_pending);
  EXPECT_EQ(after.waiting_ios, 0u);
  // Well past the old deadline, nothing happens.
  clock_.AdvanceSeconds(60);
  Run();
  EXPECT_OK(mp_->GetHead(head));
  EXPECT_THAT(TypesSince(rev),
              ElementsAre(EventType::kPathRemoved, EventType::kPathRemoved,
                          EventType::kRemovalScheduled, EventType::kPathAdded,
                          EventType::kRemovalCancelled));
}

// Acceptance 10.
TEST_F(DelayedRemovalTest, NoPathWithinTheWindowRemovesTheHeadAndFailsWaitingIo) {
  const std::string head = Head(2);
  const uint64_t uid = mp_->GetHead(head)->uid;
  LoseBothPaths();
  std::vector<TestIo> gap(3);
  for (auto& io : gap) Submit(head, io);
  clock_.Advance(2 * kNanosPerSecond - 1);
  Run();
  for (auto& io : gap) EXPECT_FALSE(io.done);
  const uint64_t rev = mp_->journal().current_revision();
  clock_.Advance(1);
  Run();
  for (auto& io : gap) {
    ASSERT_TRUE(io.done);
    EXPECT_EQ(io.result.error, IoError::kHeadRemoved);
  }
  EXPECT_THAT(mp_->GetHead(head), StatusIs(absl::StatusCode::kNotFound));
  std::vector<Event> ev = EventsSince(rev);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, EventType::kHeadRemoved);
  EXPECT_THAT(ev[0].reason, HasSubstr("expired"));

  ASSERT_OK_AND_ASSIGN(std::string later, AddPath("c0"));
  Run();
  ASSERT_OK_AND_ASSIGN(HeadInfo fresh, mp_->GetHead(later));
  EXPECT_NE(fresh.uid, uid);
  EXPECT_THAT(TypesSince(rev),
              ElementsAre(EventType::kHeadRemoved, EventType::kHeadCreated,
                          EventType::kPathAdded));
  TestIo io;
  Submit(later, io);
  Run();
  EXPECT_TRUE(io.result.ok());
}

// Acceptance 11.
TEST_F(DelayedRemovalTest, OutOfRangeValuesAreRejectedAndTheOldValueStays) {
  const std::string head = Head(42);
  const uint64_t rev = mp_->journal().current_revision();
  for (int64_t bad : {int64_t{-1}, int64_t{86401}, int64_t{1} << 32, INT64_MAX}) {
    EXPECT_THAT(mp_->SetDelayedRemoval(head, bad),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("0..86400")));
  }
  EXPECT_EQ(mp_->GetHead(head)->delayed_removal_secs, 42u);
  EXPECT_THAT(mp_->SetDelayedRemoval("nguid-unknown", 5),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nguid-unknown")));
  ASSERT_OK(mp_->SetDelayedRemoval(head, 42));  // idempotent: no event
  EXPECT_EQ(mp_->journal().current_revision(), rev);
  ASSERT_OK(mp_->SetDelayedRemoval(head, 86400));
  EXPECT_EQ(mp_->GetHead(head)->delayed_removal_secs, 86400u);
}

// Acceptance 12.
TEST_F(DelayedRemovalTest, RaisingTheValueDuringARemovalExtendsTheDeadline) {
  const std::string head = Head(5);
  LoseBothPaths();
  const int64_t lost_wall = clock_.WallNanos();
  clock_.AdvanceSeconds(3);
  const uint64_t rev = mp_->journal().current_revision();
  ASSERT_OK(mp_->SetDelayedRemoval(head, 20));
  std::vector<Event> ev = EventsSince(rev);
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].type, EventType::kDelayedRemovalChanged);
  EXPECT_EQ(ev[1].type, EventType::kRemovalRescheduled);
  EXPECT_EQ(ev[1].deadline_wall_nanos, lost_wall + 20 * kNanosPerSecond);
  clock_.AdvanceSeconds(16);  // 19 s after the loss: past the old deadline
  Run();
  ASSERT_OK_AND_ASSIGN(HeadInfo info, mp_->GetHead(head));
  EXPECT_TRUE(info.removal_pending);
  clock_.AdvanceSeconds(1);
  Run();
  EXPECT_THAT(mp_->GetHead(head), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(DelayedRemovalTest, SettingZeroDuringARemovalRemovesNow) {
  const std::string head = Head(30);
  LoseBothPaths();
  TestIo io;
  Submit(head, io);
  Run();
  EXPECT_FALSE(io.done);
  ASSERT_OK(mp_->SetDelayedRemoval(head, 0));
  Run();
  EXPECT_THAT(mp_->GetHead(head), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_TRUE(io.done);
  EXPECT_EQ(io.result.error, IoError::kHeadRemoved);
}

TEST_F(DelayedRemovalTest, LoweringBelowTheTimeAlreadyWaitedRemovesNow) {
  const std::string head = Head(30);
  LoseBothPaths();
  clock_.AdvanceSeconds(10);
  ASSERT_OK(mp_->SetDelayedRemoval(head, 5));
  EXPECT_THAT(mp_->GetHead(head), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(DelayedRemovalTest, ArmedOnceAndCancelledOncePerOutage) {
  const std::string head = Head(10);
  const uint64_t rev = mp_->journal().current_revision();
  LoseBothPaths();
  // A controller dying after its path already left does not arm again.
  ASSERT_OK(mp_->SetControllerState("c0", ControllerState::kDead));
  ASSERT_OK(mp_->RemoveController("c0"));
  Run();
  ASSERT_OK(AddPath("c1"));
  ASSERT_OK(mp_->RemovePath("c1", 1));
  ASSERT_OK(AddPath("c1"));
  Run();
  int scheduled = 0, cancelled = 0;
  for (EventType t : TypesSince(rev)) {
    scheduled += t == EventType::kRemovalScheduled;
    cancelled += t == EventType::kRemovalCancelled;
  }
  EXPECT_EQ(scheduled, 2);  // one per outage
  EXPECT_EQ(cancelled, 2);
  EXPECT_FALSE(mp_->GetHead(head)->removal_pending);
}

TEST_F(DelayedRemovalTest, QueueIfNoPathKeepsIoWaitingWhileControllersAreDead) {
  const std::string head = Head(10);
  ASSERT_OK(mp_->SetControllerState("c0", ControllerState::kDead));
  ASSERT_OK(mp_->SetControllerState("c1", ControllerState::kDead));
  Run();
  TestIo io;
  Submit(head, io);
  Run();
  EXPECT_FALSE(io.done);
  // Turning queueing off re-examines what waits: nothing to wait for now.
  ASSERT_OK(mp_->SetDelayedRemoval(head, 0));
  Run();
  ASSERT_TRUE(io.done);
  EXPECT_EQ(io.result.error, IoError::kNoPath);
}

TEST_F(DelayedRemovalTest, ShutdownWithARemovalPendingLeavesNothingWaiting) {
  const std::string head = Head(600);
  LoseBothPaths();
  TestIo io;
  Submit(head, io);
  Run();
  EXPECT_FALSE(io.done);
  mp_->Shutdown();
  Run();
  ASSERT_TRUE(io.done);
  EXPECT_EQ(io.result.error, IoError::kShutdown);
  mp_->Shutdown();  // idempotent
}

// SEMANTICS "Fast fail", acceptance 15: io_fail_timeout_secs=F < delayed_removal_secs=N,
// every path gone: waiting I/O fails at F, the head stays, new I/O fails at once, and a
// path back before N serves new I/O on the same head.
TEST_F(DelayedRemovalTest, FastFailFailsWaitingIoAtItsTimeoutAndTheHeadStays) {
  const std::string head = Head(30);
  ASSERT_OK(mp_->SetIoFailTimeout(head, 5));
  const uint64_t uid = mp_->GetHead(head)->uid;
  const uint64_t rev = mp_->journal().current_revision();
  LoseBothPaths();
  std::vector<TestIo> waiting(3);
  for (auto& io : waiting) Submit(head, io);
  clock_.AdvanceSeconds(4);
  Run();
  for (auto& io : waiting) EXPECT_FALSE(io.done);
  EXPECT_FALSE(mp_->GetHead(head)->failing_fast);
  clock_.AdvanceSeconds(1);
  Run();
  for (auto& io : waiting) {
    ASSERT_TRUE(io.done);
    EXPECT_EQ(io.result.error, IoError::kFastFail);
  }
  ASSERT_OK_AND_ASSIGN(HeadInfo during, mp_->GetHead(head));
  EXPECT_TRUE(during.failing_fast);
  EXPECT_TRUE(during.removal_pending);
  EXPECT_EQ(during.uid, uid);
  // New I/O fails at once, without waiting.
  TestIo late;
  Submit(head, late);
  Run();
  ASSERT_TRUE(late.done);
  EXPECT_EQ(late.result.error, IoError::kFastFail);
  // A path back before the removal deadline: the same head serves new I/O again.
  clock_.AdvanceSeconds(10);
  ASSERT_OK(AddPath("c1"));
  Run();
  ASSERT_OK_AND_ASSIGN(HeadInfo after, mp_->GetHead(head));
  EXPECT_EQ(after.uid, uid);
  EXPECT_FALSE(after.failing_fast);
  TestIo back;
  Submit(head, back);
  Run();
  ASSERT_TRUE(back.done);
  EXPECT_TRUE(back.result.ok()) << IoErrorName(back.result.error);
  EXPECT_THAT(TypesSince(rev),
              ElementsAre(EventType::kPathRemoved, EventType::kPathRemoved, EventType::kRemovalScheduled,
                          EventType::kFastFailStarted, EventType::kPathAdded, EventType::kFastFailEnded,
                          EventType::kRemovalCancelled));
}

// Fast fail bounds the wait for controllers that reset or reconnect too (paths present,
// none usable), not only for paths that are gone; and each failed I/O fails once.
TEST_F(DelayedRemovalTest, FastFailAlsoEndsTheWaitForResettingControllers) {
  const std::string head = Head(0);
  ASSERT_OK(mp_->SetIoFailTimeout(head, 2));
  ASSERT_OK(mp_->SetControllerState("c0", ControllerState::kResetting));
  ASSERT_OK(mp_->SetControllerState("c1", ControllerState::kConnecting));
  Run();
  TestIo io;
  Submit(head, io);
  clock_.AdvanceSeconds(1);
  Run();
  EXPECT_FALSE(io.done);
  clock_.AdvanceSeconds(1);
  Run();
  ASSERT_TRUE(io.done);
  EXPECT_EQ(io.result.error, IoError::kFastFail);
  ASSERT_OK(mp_->SetControllerState("c0", ControllerState::kLive));
  Run();
  EXPECT_EQ(io.completions, 1);
  EXPECT_FALSE(mp_->GetHead(head)->failing_fast);
  TestIo next;
  Submit(head, next);
  Run();
  ASSERT_TRUE(next.done);
  EXPECT_TRUE(next.result.ok());
}

// 0 means no limit of its own: I/O waits for the removal deadline, as before; setting 0
// during a fast fail ends it, and raising F during an outage moves its deadline.
TEST_F(DelayedRemovalTest, FastFailTimeoutChangesFollowTheOutage) {
  const std::string head = Head(60);
  LoseBothPaths();
  TestIo io;
  Submit(head, io);
  clock_.AdvanceSeconds(20);
  Run();
  EXPECT_FALSE(io.done);  // no fast fail configured
  // Set during the outage: measured from when the last usable path went (20 s ago).
  ASSERT_OK(mp_->SetIoFailTimeout(head, 30));
  clock_.AdvanceSeconds(9);
  Run();
  EXPECT_FALSE(io.done);
  clock_.AdvanceSeconds(1);
  Run();
  ASSERT_TRUE(io.done);
  EXPECT_EQ(io.result.error, IoError::kFastFail);
  EXPECT_THAT(mp_->SetIoFailTimeout(head, 86401),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("io_fail_timeout_secs 86401 is out of range")));
  EXPECT_EQ(mp_->GetHead(head)->io_fail_timeout_secs, 30u);
  ASSERT_OK(mp_->SetIoFailTimeout(head, 0));
  EXPECT_FALSE(mp_->GetHead(head)->failing_fast);
  TestIo again;
  Submit(head, again);
  Run();
  EXPECT_FALSE(again.done);  // waits again, for the removal
  clock_.AdvanceSeconds(31);
  Run();
  ASSERT_TRUE(again.done);
  EXPECT_EQ(again.result.error, IoError::kHeadRemoved);
  EXPECT_THAT(mp_->SetIoFailTimeout("nguid-nothere", 5), StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace umpath
