#include "agent/nvme/status.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace umpath::nvme {
namespace {

namespace sc = status_code;

TEST(StatusTest, DecodesEveryFieldOfTheCompletionStatus) {
  // CQE status word: P(0) SC(8:1) SCT(11:9) CRD(13:12) M(14) DNR(15).
  CompletionEntry cqe;
  cqe.status = static_cast<uint16_t>(1 | 0x03 << 1 | 0x3 << 9 | 2 << 12 | 1 << 14 | 1 << 15);
  EXPECT_TRUE(cqe.phase());
  const Status s = Status::FromCqe(cqe);
  EXPECT_EQ(s.sct(), 3);
  EXPECT_EQ(s.sc(), 0x03);
  EXPECT_EQ(s.code(), sc::kAnaTransition);
  EXPECT_EQ(s.crd(), 2);
  EXPECT_TRUE(s.more());
  EXPECT_TRUE(s.dnr());
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.ToCompletionField(), cqe.status >> 1);
}

TEST(StatusTest, FieldRoundTripsForEveryValue) {
  for (uint32_t field = 0; field < 0x8000; ++field) {
    const Status s = Status::FromCompletionField(static_cast<uint16_t>(field));
    ASSERT_EQ(s.ToCompletionField(), field) << field;
  }
}

TEST(StatusTest, SuccessIsTheDefault) {
  EXPECT_TRUE(Status{}.ok());
  EXPECT_TRUE(Status::FromCompletionField(0).ok());
  CompletionEntry cqe;
  cqe.status = 1;  // phase only
  EXPECT_TRUE(Status::FromCqe(cqe).ok());
}

// SEMANTICS.md "Completion disposition", in its order.
TEST(DispositionTest, SuccessCompletes) {
  EXPECT_EQ(Decide(Status{}, false), Disposition::kComplete);
  EXPECT_EQ(Decide(Status{}, true), Disposition::kComplete);
}

TEST(DispositionTest, DnrOrSpentBudgetGoesToTheCaller) {
  EXPECT_EQ(Decide(Status::Make(sc::kInternalError, /*dnr=*/true), false),
            Disposition::kFailToCaller);
  EXPECT_EQ(Decide(Status::Make(sc::kInternalError), /*retry_budget_spent=*/true),
            Disposition::kFailToCaller);
  // A path error with DNR set goes to the caller too.
  EXPECT_EQ(Decide(Status::Make(sc::kAnaTransition, true), false), Disposition::kFailToCaller);
}

TEST(DispositionTest, EveryPathErrorFailsOver) {
  for (uint16_t code : {sc::kInternalPathError, sc::kAnaPersistentLoss, sc::kAnaInaccessible,
                        sc::kAnaTransition, sc::kControllerPathError, sc::kHostPathError,
                        sc::kHostAbortedCommand}) {
    EXPECT_EQ(Decide(Status::Make(code), false), Disposition::kFailover) << std::hex << code;
    EXPECT_TRUE(IsPathError(Status::Make(code)));
  }
}

TEST(DispositionTest, AnythingElseRetries) {
  for (uint16_t code : {sc::kInternalError, sc::kDataTransferError, sc::kNamespaceNotReady,
                        sc::kUnrecoveredReadError, uint16_t{0x1ff}, uint16_t{0x7ff}}) {
    EXPECT_EQ(Decide(Status::Make(code), false), Disposition::kRetry) << std::hex << code;
  }
}

TEST(DispositionTest, OnlyAnaCodesAskForAnAnaRead) {
  EXPECT_TRUE(IsAnaError(Status::Make(sc::kAnaPersistentLoss)));
  EXPECT_TRUE(IsAnaError(Status::Make(sc::kAnaInaccessible)));
  EXPECT_TRUE(IsAnaError(Status::Make(sc::kAnaTransition)));
  EXPECT_FALSE(IsAnaError(Status::Make(sc::kInternalPathError)));
  EXPECT_FALSE(IsAnaError(Status::Make(sc::kHostAbortedCommand)));
  EXPECT_FALSE(IsAnaError(Status::Make(0x103)));  // SCT 1, same SC
}

TEST(RetryDelayTest, FollowsCrdIntoTheControllersTable) {
  const std::array<uint16_t, 3> crdt{1, 5, 30};
  EXPECT_EQ(RetryDelayNanos(Status::Make(sc::kInternalError), crdt), 0);
  EXPECT_EQ(RetryDelayNanos(Status::Make(sc::kInternalError, false, 1), crdt), 100'000'000);
  EXPECT_EQ(RetryDelayNanos(Status::Make(sc::kInternalError, false, 2), crdt), 500'000'000);
  EXPECT_EQ(RetryDelayNanos(Status::Make(sc::kInternalError, false, 3), crdt), 3'000'000'000);
  const std::array<uint16_t, 3> max{0xffff, 0, 0};
  EXPECT_EQ(RetryDelayNanos(Status::Make(sc::kInternalError, false, 1), max),
            int64_t{0xffff} * 100'000'000);  // no 32-bit overflow
}

TEST(StatusToStringTest, NamesTheCodeAndFlags) {
  EXPECT_EQ(StatusToString(Status::Make(sc::kAnaTransition, true)),
            "0x303 (path: ANA transition), dnr");
  EXPECT_EQ(StatusToString(Status::Make(0x1c4)), "0x1c4");
  EXPECT_EQ(StatusToString(Status::Make(sc::kInternalError, false, 2)),
            "0x006 (internal error), crd 2");
  EXPECT_EQ(AnaStateName(AnaState::kChange), "change");
  EXPECT_EQ(AnaStateName(AnaState(7)), "reserved");
  EXPECT_EQ(DispositionName(Disposition::kFailover), "failover");
}

}  // namespace
}  // namespace umpath::nvme
