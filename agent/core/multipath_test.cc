// End-to-end rules of the multipath core through hand-driven workers and fake queue
// pairs: path choice per policy, failover, retry, ANA, queue-or-fail, events.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agent/core/testing/core_fixture.h"
#include "agent/nvme/status.h"

namespace umpath {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::umpath::testing::CoreFixture;
using ::umpath::testing::StatusIs;
using ::umpath::testing::TestIo;
using nvme::AnaState;
namespace sc = nvme::status_code;

class MultipathTest : public CoreFixture {
 protected:
  // Two controllers of one subsystem sharing NSID 1.
  std::string TwoPaths(bool ana = false, int numa_a = -1, int numa_b = -1) {
    AddController("c0", numa_a, ana);
    AddController("c1", numa_b, ana);
    auto h0 = AddPath("c0");
    auto h1 = AddPath("c1");
    EXPECT_OK(h0);
    EXPECT_OK(h1);
    EXPECT_EQ(*h0, *h1);
    Run();
    return *h0;
  }

  // Submits n reads and runs the workers; returns how many succeeded.
  int Reads(const std::string& head, int n) {
    std::vector<TestIo> ios(n);
    for (auto& io : ios) Submit(head, io);
    Run();
    int ok = 0;
    for (auto& io : ios) ok += io.done && io.result.ok();
    return ok;
  }
};

TEST_F(MultipathTest, HeadNameComesFromIdentity) {
  nvme::NamespaceIds ids;
  EXPECT_EQ(HeadNameFor("nqn.x:s", 3, ids), "ns3.nqn.x:s");
  ids.uuid = std::array<uint8_t, 16>{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0,
                                     1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_EQ(HeadNameFor("nqn.x:s", 3, ids), "uuid-12345678-9abc-def0-0102-030405060708");
  ids.eui64 = std::array<uint8_t, 8>{0, 1, 2, 3, 4, 5, 6, 0xff};
  EXPECT_EQ(HeadNameFor("nqn.x:s", 3, ids), "eui64-00010203040506ff");
  ids.nguid = std::array<uint8_t, 16>{0xab};
  EXPECT_EQ(HeadNameFor("nqn.x:s", 3, ids), "nguid-ab000000000000000000000000000000");
}

// Head uids start where the agent says (past an earlier run's), one per head made.
TEST_F(MultipathTest, HeadUidsStartAtTheRunsFirstUid) {
  first_head_uid_ = 1'764'000'000'000'000;
  Build(1, {});
  AddController("c0");
  auto h1 = AddPath("c0", 1, 1);
  auto h2 = AddPath("c0", 2, 2);
  ASSERT_OK(h1);
  ASSERT_OK(h2);
  EXPECT_EQ(mp_->GetHead(*h1)->uid, 1'764'000'000'000'000u);
  EXPECT_EQ(mp_->GetHead(*h2)->uid, 1'764'000'000'000'001u);
}

TEST_F(MultipathTest, PathsOfOneNamespaceFormOneHead) {
  const std::string head = TwoPaths();
  ASSERT_OK_AND_ASSIGN(HeadInfo info, mp_->GetHead(head));
  EXPECT_EQ(info.paths.size(), 2u);
  EXPECT_EQ(info.live_paths, 2u);
  EXPECT_EQ(info.policy, IoPolicy::kNuma);
  EXPECT_EQ(mp_->ListHeads().size(), 1u);
  EXPECT_EQ(mp_->ListControllers().size(), 2u);
}

TEST_F(MultipathTest, PathWhoseIdentifiersDoNotMatchIsRejectedAndReported) {
  AddController("c0");
  AddController("c1");
  ASSERT_OK_AND_ASSIGN(std::string head, AddPath("c0", 1, /*tag=*/1));
  const uint64_t rev = mp_->journal().current_revision();
  EXPECT_THAT(AddPath("c1", 1, /*tag=*/2),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("namespace identifiers do not match")));
  EXPECT_THAT(TypesSince(rev), ElementsAre(EventType::kPathRejected));
  ASSERT_OK_AND_ASSIGN(HeadInfo info, mp_->GetHead(head));
  EXPECT_EQ(info.paths.size(), 1u);
}

TEST_F(MultipathTest, SameIdentifierInAnotherSubsystemIsRejected) {
  AddController("c0", -1, false, "nqn.a:s");
  AddController("c1", -1, false, "nqn.b:s");
  ASSERT_OK(AddPath("c0", 1, 7));
  EXPECT_THAT(AddPath("c1", 1, 7), StatusIs(absl::StatusCode::kFailedPrecondition,
                                            HasSubstr("already used")));
}

TEST_F(MultipathTest, PathWithOtherCapacityJoinsNotReady) {
  AddController("c0");
  AddController("c1");
  ASSERT_OK_AND_ASSIGN(std::string head, AddPath("c0"));
  NamespaceSpec ns;
  ns.controller = "c1";
  ns.nsid = 1;
  ns.ids = Nguid(1);
  ns.size_blocks = kBlocks / 2;
  ns.block_size = 512;
  ASSERT_OK(mp_->AddPath(ns));
  ASSERT_OK_AND_ASSIGN(HeadInfo info, mp_->GetHead(head));
  EXPECT_FALSE(info.paths[1].ready);
  EXPECT_FALSE(info.paths[1].selectable);
}

TEST_F(MultipathTest, BadTopologyInputIsRejected) {
  EXPECT_THAT(AddPath("nope"), StatusIs(absl::StatusCode::kNotFound));
  AddController("c0");
  EXPECT_THAT(AddPath("c0", 0), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(AddPath("c0", 0xffffffff), StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_OK(AddPath("c0", 1));
  EXPECT_THAT(AddPath("c0", 1), StatusIs(absl::StatusCode::kAlreadyExists));
  ControllerSpec dup;
  dup.name = "c0";
  std::vector<QueuePair*> qps = {&Qp("c0")};
  EXPECT_THAT(mp_->AddController(dup, nullptr, qps),
              StatusIs(absl::StatusCode::kAlreadyExists));
  ControllerSpec bad;
  bad.name = "c9";
  EXPECT_THAT(mp_->AddController(bad, nullptr, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("one per worker")));
  bad.ana_supported = true;
  EXPECT_THAT(mp_->AddController(bad, nullptr, qps),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("ANAGRPMAX")));
  EXPECT_THAT(mp_->RemovePath("c0", 5), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(mp_->SetControllerState("zz", ControllerState::kLive),
              StatusIs(absl::StatusCode::kNotFound));
}

// Acceptance 1, end to end: a worker on node 0 sees c1 at 10 and c0 at 20.
TEST_F(MultipathTest, NumaSendsAllIoToTheNearestPath) {
  Build(1, {10, 20});
  const std::string head = TwoPaths(false, /*numa_a=*/1, /*numa_b=*/0);
  EXPECT_EQ(Reads(head, 50), 50);
  EXPECT_EQ(Qp("c0").submits(), 0u);
  EXPECT_EQ(Qp("c1").submits(), 50u);
}

// Acceptance 2 with real ANA logs.
TEST_F(MultipathTest, AnaInaccessibleFallsBackAndOptimizedFailsBackOnTheNextIo) {
  AddController("c0", -1, true);
  AddController("c1", -1, true);
  ASSERT_OK(Ana("c0", {{1, AnaState::kOptimized, {1}}}));
  ASSERT_OK(Ana("c1", {{2, AnaState::kNonOptimized, {1}}}));
  ASSERT_OK_AND_ASSIGN(std::string head, AddPath("c0"));
  ASSERT_OK(AddPath("c1", 1, 1, 2));
  Run();
  EXPECT_EQ(Reads(head, 4), 4);
  EXPECT_EQ(Qp("c0").submits(), 4u);
  ASSERT_OK(Ana("c0", {{1, AnaState::kInaccessible, {1}}}));
  Run();
  EXPECT_EQ(Reads(head, 1), 1);
  EXPECT_EQ(Qp("c1").submits(), 1u);
  ASSERT_OK(Ana("c0", {{1, AnaState::kOptimized, {1}}}));
  Run();
  EXPECT_EQ(Reads(head, 1), 1);
  EXPECT_EQ(Qp("c0").submits(), 5u);
}

// A log read with RGO set lists groups without NSIDs; each path takes its group's state
// from the ANAGRPID its namespace reported.
TEST_F(MultipathTest, GroupsOnlyAnaLogAppliesThroughTheNamespacesGroup) {
  AddController("c0", -1, true);
  AddController("c1", -1, true);
  ASSERT_OK(Ana("c0", {{1, AnaState::kInaccessible, {}}}));
  ASSERT_OK(Ana("c1", {{2, AnaState::kOptimized, {}}}));
  ASSERT_OK_AND_ASSIGN(std::string head, AddPath("c0", 1, 1, /*ana_group=*/1));
  ASSERT_OK(AddPath("c1", 1, 1, /*ana_group=*/2));
  Run();
  ASSERT_OK_AND_ASSIGN(HeadInfo info, mp_->GetHead(head));
  ASSERT_EQ(info.paths.size(), 2u);
  EXPECT_EQ(info.paths[0].ana_state, AnaState::kInaccessible);
  EXPECT_EQ(info.paths[1].ana_state, AnaState::kOptimized);
  EXPECT_EQ(Reads(head, 3), 3);
  EXPECT_EQ(Qp("c1").submits(), 3u);
  EXPECT_EQ(Qp("c0").submits(), 0u);
  // A later groups-only log moves c0's group to OPTIMIZED.
  ASSERT_OK(Ana("c0", {{1, AnaState::kOptimized, {}}}));
  ASSERT_OK_AND_ASSIGN(info, mp_->GetHead(head));
  EXPECT_EQ(info.paths[0].ana_state, AnaState::kOptimized);
}

// Acceptance 3, end to end.
TEST_F(MultipathTest, RoundRobinAlternatesOptimizedPaths) {
  AddController("a", -1, true);
  AddController("b", -1, true);
  AddController("c", -1, true);
  ASSERT_OK(Ana("a", {{1, AnaState::kOptimized, {1}}}));
  ASSERT_OK(Ana("b", {{1, AnaState::kNonOptimized, {1}}}));
  ASSERT_OK(Ana("c", {{1, AnaState::kOptimized, {1}}}));
  ASSERT_OK_AND_ASSIGN(std::string head, AddPath("a"));
  ASSERT_OK(AddPath("b"));
  ASSERT_OK(AddPath("c"));
  ASSERT_OK(mp_->SetPolicy(head, "round-robin"));
  Run();
  EXPECT_EQ(Reads(head, 10), 10);
  EXPECT_EQ(Qp("a").submits(), 5u);
  EXPECT_EQ(Qp("b").submits(), 0u);
  EXPECT_EQ(Qp("c").submits(), 5u);
}

// Acceptance 4, end to end: held commands load one path; the other takes the next.
TEST_F(MultipathTest, QueueDepthBalancesAndCountersReturnToZero) {
  const std::string head = TwoPaths();
  ASSERT_OK(mp_->SetPolicy(head, "queue-depth"));
  Run();
  Qp("c0").set_hold(true);
  Qp("c1").set_hold(true);
  std::vector<TestIo> ios(10);
  for (auto& io : ios) Submit(head, io);
  EXPECT_EQ(Qp("c0").submits(), 5u);
  EXPECT_EQ(Qp("c1").submits(), 5u);
  Qp("c0").set_hold(false);
  Qp("c1").set_hold(false);
  Run();
  ASSERT_OK_AND_ASSIGN(HeadInfo info, mp_->GetHead(head));
  for (const PathInfo& p : info.paths) EXPECT_EQ(p.counters.in_flight, 0) << p.name;
  for (auto& io : ios) EXPECT_TRUE(io.result.ok());
}

// Acceptance 6.
TEST_F(MultipathTest, AnaTransitionFailsOverAndTheCallerSeesSuccess) {
  AddController("c0", -1, true);
  AddController("c1", -1, true);
  ASSERT_OK(Ana("c0", {{1, AnaState::kOptimized, {1}}}));
  ASSERT_OK(Ana("c1", {{1, AnaState::kOptimized, {1}}}));
  ASSERT_OK_AND_ASSIGN(std::string head, AddPath("c0"));
  ASSERT_OK(AddPath("c1"));
  Run();
  const int ana_reads = backends_["c0"]->ana_requests;
  Qp("c0").Script({nvme::Status::Make(sc::kAnaTransition)});
  TestIo io;
  Submit(head, io);
  Run();
  ASSERT_TRUE(io.done);
  EXPECT_TRUE(io.result.ok()) << IoErrorName(io.result.error);
  EXPECT_EQ(io.completions, 1);
  EXPECT_EQ(Qp("c0").submits(), 1u);
  EXPECT_EQ(Qp("c1").submits(), 1u);
  // ANA_PENDING set on c0's path and the log re-read requested.
  ASSERT_OK_AND_ASSIGN(HeadInfo info, mp_->GetHead(head));
  EXPECT_TRUE(info.paths[0].ana_pending);
  EXPECT_EQ(info.paths[0].counters.failovers, 1u);
  EXPECT_EQ(backends_["c0"]->ana_requests, ana_reads + 1);
  // The re-read log clears it.
  ASSERT_OK(Ana("c0", {{1, AnaState::kOptimized, {1}}}));
  ASSERT_OK_AND_ASSIGN(info, mp_->GetHead(head));
  EXPECT_FALSE(info.paths[0].ana_pending);
}

TEST_F(MultipathTest, PathErrorWithDnrGoesToTheCaller) {
  const std::string head = TwoPaths();
  Qp("c0").Script({nvme::Status::Make(sc::kAnaTransition, /*dnr=*/true)});
  Qp("c1").Script({nvme::Status::Make(sc::kAnaTransition, /*dnr=*/true)});
  TestIo io;
  Submit(head, io);
  Run();
  ASSERT_TRUE(io.done);
  EXPECT_EQ(io.result.error, IoError::kNvme);
  EXPECT_EQ(io.result.status.code(), sc::kAnaTransition);
  EXPECT_TRUE(io.result.status.dnr());
  EXPECT_EQ(Qp("c0").submits() + Qp("c1").submits(), 1u);
}

TEST_F(MultipathTest, OtherErrorsRetryOnTheSamePathThenFail) {
  const std::string head = TwoPaths();
  // Numa picks c0 (first in list order); five retries are allowed, the sixth fails.
  std::vector<nvme::Status> errs(6, nvme::Status::Make(sc::kInternalError));
  Qp("c0").Script(errs);
  TestIo io;
  Submit(head, io);
  Run();
  ASSERT_TRUE(io.done);
  EXPECT_EQ(io.result.error, IoError::kNvme);
  EXPECT_EQ(Qp("c0").submits(), 6u);
  EXPECT_EQ(Qp("c1").submits(), 0u);

  TestIo io2;
  Qp("c0").Script({nvme::Status::Make(sc::kInternalError)});
  Submit(head, io2);
  Run();
  EXPECT_TRUE(io2.result.ok());
}

TEST_F(MultipathTest, RetryWaitsForTheCommandRetryDelay) {
  AddController("c0");
  ASSERT_OK_AND_ASSIGN(std::string head, AddPath("c0"));
  Run();
  // The fixture's controllers report no CRDT, so CRD 1 means no wait: build one that does.
  ControllerSpec spec;
  spec.name = "slow";
  spec.subsys_nqn = "nqn.slow:s";
  spec.crdt = {5, 0, 0};  // 500 ms
  testing::FakeQueuePair qp;
  ASSERT_OK(mp_->AddController(spec, nullptr, {&qp}));
  NamespaceSpec ns;
  ns.controller = "slow";
  ns.nsid = 1;
  ns.ids = Nguid(9);
  ns.size_blocks = kBlocks;
  ASSERT_OK_AND_ASSIGN(std::string slow, mp_->AddPath(ns));
  Run();
  qp.Script({nvme::Status::Make(sc::kInternalError, false, /*crd=*/1)});
  TestIo io;
  Submit(slow, io);
  Run();
  EXPECT_FALSE(io.done);
  EXPECT_EQ(qp.submits(), 1u);
  clock_.Advance(499'000'000);
  Run();
  EXPECT_FALSE(io.done);
  clock_.Advance(2'000'000);
  Run();
  ASSERT_TRUE(io.done);
  EXPECT_TRUE(io.result.ok());
  EXPECT_EQ(qp.submits(), 2u);
  ASSERT_OK(mp_->RemoveController("slow"));
  Run();
}

TEST_F(MultipathTest, FullQueueDefersInsteadOfFailing) {
  AddController("c0");
  ASSERT_OK_AND_ASSIGN(std::string head, AddPath("c0"));
  Run();
  Qp("c0").set_capacity(2);
  std::vector<TestIo> ios(5);
  for (auto& io : ios) Submit(head, io);
  Run();
  for (auto& io : ios) EXPECT_TRUE(io.done && io.result.ok());
  EXPECT_EQ(Qp("c0").submits(), 5u);
}

TEST_F(MultipathTest, OneDoorbellPerBatch) {
  AddController("c0");
  ASSERT_OK_AND_ASSIGN(std::string head, AddPath("c0"));
  Run();
  const uint64_t rings = Qp("c0").rings();
  std::vector<TestIo> ios(16);
  Channel* ch = ChannelOf(head);
  for (auto& io : ios) ch->Submit(&io.req);
  workers_[0]->Flush();
  EXPECT_EQ(Qp("c0").rings(), rings + 1);
  Run();
}

// Acceptance 7.
TEST_F(MultipathTest, MalformedAnaLogChangesNothingAndIsReported) {
  AddController("c0", -1, true);
  ASSERT_OK(Ana("c0", {{1, AnaState::kOptimized, {1}}}));
  ASSERT_OK_AND_ASSIGN(std::string head, AddPath("c0"));
  ASSERT_OK_AND_ASSIGN(HeadInfo before, mp_->GetHead(head));

  nvme::AnaLog log;
  log.change_count = 99;
  log.groups.push_back({1, AnaState::kInaccessible, 99, {1}});
  log.groups.push_back({9, AnaState::kOptimized, 99, {2}});  // 9 > ANAGRPMAX 8
  std::vector<uint8_t> bad = nvme::BuildAnaLog(log);
  const uint64_t rev = mp_->journal().current_revision();
  EXPECT_THAT(mp_->OnAnaLog("c0", bad), StatusIs(absl::StatusCode::kInvalidArgument));
  std::vector<Event> ev = EventsSince(rev);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, EventType::kAnaLogRejected);
  EXPECT_FALSE(ev[0].reason.empty());

  // Truncated: the NSID list overruns the buffer.
  log.groups.pop_back();
  bad = nvme::BuildAnaLog(log);
  bad.resize(bad.size() - 2);
  EXPECT_THAT(mp_->OnAnaLog("c0", bad), StatusIs(absl::StatusCode::kInvalidArgument));

  ASSERT_OK_AND_ASSIGN(HeadInfo after, mp_->GetHead(head));
  EXPECT_EQ(after.paths[0].ana_state, AnaState::kOptimized);
  EXPECT_EQ(after.paths[0].ana_state, before.paths[0].ana_state);
  EXPECT_THAT(mp_->OnAnaLog("zz", bad), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(MultipathTest, AnaChangeStuckPastTwiceAnattResetsTheController) {
  AddController("c0", -1, true);  // ANATT 10 s
  ASSERT_OK(AddPath("c0"));
  ASSERT_OK(Ana("c0", {{1, AnaState::kChange, {1}}}));
  clock_.AdvanceSeconds(19);
  Run();
  EXPECT_EQ(backends_["c0"]->resets, 0);
  // A log without CHANGE cancels; a new CHANGE arms again from now.
  ASSERT_OK(Ana("c0", {{1, AnaState::kOptimized, {1}}}));
  ASSERT_OK(Ana("c0", {{1, AnaState::kChange, {1}}}));
  clock_.AdvanceSeconds(19);
  Run();
  EXPECT_EQ(backends_["c0"]->resets, 0);
  clock_.AdvanceSeconds(2);
  Run();
  EXPECT_EQ(backends_["c0"]->resets, 1);
}

TEST_F(MultipathTest, IoWaitsWhileAControllerIsLiveButNoPathIsSelectable) {
  AddController("c0", -1, true);
  ASSERT_OK(Ana("c0", {{1, AnaState::kChange, {1}}}));
  ASSERT_OK_AND_ASSIGN(std::string head, AddPath("c0"));
  Run();
  TestIo io;
  Submit(head, io);
  Run();
  EXPECT_FALSE(io.done);
  ASSERT_OK_AND_ASSIGN(HeadInfo info, mp_->GetHead(head));
  EXPECT_EQ(info.waiting_ios, 1u);
  ASSERT_OK(Ana("c0", {{1, AnaState::kOptimized, {1}}}));
  Run();
  ASSERT_TRUE(io.done);
  EXPECT_TRUE(io.result.ok());
}

TEST_F(MultipathTest, NoPathAndNothingToWaitForFailsAtOnce) {
  AddController("c0");
  ASSERT_OK_AND_ASSIGN(std::string head, AddPath("c0"));
  ASSERT_OK(mp_->SetControllerState("c0", ControllerState::kDead));
  Run();
  TestIo io;
  Submit(head, io);
  ASSERT_TRUE(io.done);  // before any worker loop
  EXPECT_EQ(io.result.error, IoError::kNoPath);
}

TEST_F(MultipathTest, ResettingControllerHoldsIoUntilLive) {
  const std::string head = TwoPaths();
  ASSERT_OK(mp_->SetControllerState("c0", ControllerState::kResetting));
  ASSERT_OK(mp_->SetControllerState("c1", ControllerState::kConnecting));
  Run();
  TestIo io;
  Submit(head, io);
  Run();
  EXPECT_FALSE(io.done);
  ASSERT_OK(mp_->SetControllerState("c1", ControllerState::kLive));
  Run();
  ASSERT_TRUE(io.done);
  EXPECT_TRUE(io.result.ok());
  EXPECT_EQ(Qp("c1").submits(), 1u);
}

TEST_F(MultipathTest, ControllerRemovedMidIoFailsOverWithoutError) {
  const std::string head = TwoPaths();
  Qp("c0").set_hold(true);
  std::vector<TestIo> ios(8);
  for (auto& io : ios) Submit(head, io);
  EXPECT_EQ(Qp("c0").outstanding(), 8u);
  ASSERT_OK(mp_->RemoveController("c0", "hot-removed"));
  Run();
  for (auto& io : ios) EXPECT_TRUE(io.done && io.result.ok());
  EXPECT_EQ(Qp("c0").aborted(), 8u);
  EXPECT_EQ(Qp("c1").submits(), 8u);
  EXPECT_EQ(backends_["c0"]->released, 1);
}

TEST_F(MultipathTest, QueueThatVanishesUnderASubmitFailsOverLocally) {
  const std::string head = TwoPaths();
  Qp("c0").set_gone(true);
  EXPECT_EQ(Reads(head, 4), 4);
  EXPECT_EQ(Qp("c1").submits(), 4u);
}

TEST_F(MultipathTest, PolicyChangeRulesAndEvents) {
  const std::string head = TwoPaths();
  uint64_t rev = mp_->journal().current_revision();
  ASSERT_OK(mp_->SetPolicy(head, "numa"));  // already numa
  EXPECT_EQ(mp_->journal().current_revision(), rev);
  EXPECT_THAT(mp_->SetPolicy(head, "fastest"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("round-robin")));
  EXPECT_THAT(mp_->SetPolicy("nguid-none", "numa"), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK(mp_->SetPolicy(head, "round-robin"));
  EXPECT_THAT(TypesSince(rev), ElementsAre(EventType::kPolicyChanged));
  EXPECT_EQ(mp_->GetHead(head)->policy, IoPolicy::kRoundRobin);
  Run();
  EXPECT_EQ(Reads(head, 4), 4);
  EXPECT_EQ(Qp("c0").submits(), 2u);
  EXPECT_EQ(Qp("c1").submits(), 2u);
}

TEST_F(MultipathTest, DefaultsApplyToNewHeads) {
  EXPECT_THAT(mp_->SetDefaultPolicy("bogus"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(mp_->SetDefaultDelayedRemoval(86401),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("0..86400")));
  ASSERT_OK(mp_->SetDefaultPolicy("queue-depth"));
  ASSERT_OK(mp_->SetDefaultDelayedRemoval(30));
  const uint64_t rev = mp_->journal().current_revision();
  ASSERT_OK(mp_->SetDefaultDelayedRemoval(30));
  EXPECT_EQ(mp_->journal().current_revision(), rev);
  AddController("c0");
  ASSERT_OK_AND_ASSIGN(std::string head, AddPath("c0"));
  ASSERT_OK_AND_ASSIGN(HeadInfo info, mp_->GetHead(head));
  EXPECT_EQ(info.policy, IoPolicy::kQueueDepth);
  EXPECT_EQ(info.delayed_removal_secs, 30u);
  EXPECT_EQ(mp_->GetDefaults().delayed_removal_secs, 30u);
}

TEST_F(MultipathTest, FailAndReinstateAPathForMaintenance) {
  const std::string head = TwoPaths();
  EXPECT_THAT(mp_->FailPath(head, "c7", ""), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(mp_->FailPath("x", "c0", ""), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK(mp_->FailPath(head, "c0", "firmware update"));
  const uint64_t rev = mp_->journal().current_revision();
  ASSERT_OK(mp_->FailPath(head, "c0", "again"));
  EXPECT_EQ(mp_->journal().current_revision(), rev);
  Run();
  EXPECT_EQ(Reads(head, 3), 3);
  EXPECT_EQ(Qp("c0").submits(), 0u);
  ASSERT_OK(mp_->ReinstatePath(head, "c0"));
  Run();
  EXPECT_EQ(Reads(head, 3), 3);
  EXPECT_EQ(Qp("c0").submits(), 3u);
}

TEST_F(MultipathTest, WatchStateStartsWithTheStateThenStreamsWhatFollows) {
  const std::string head = TwoPaths();
  ASSERT_OK_AND_ASSIGN(auto start, mp_->WatchState(64, nullptr));
  EXPECT_EQ(start.heads.size(), 1u);
  EXPECT_EQ(start.controllers.size(), 2u);
  EXPECT_EQ(start.revision, mp_->journal().current_revision());
  ASSERT_OK(mp_->SetDelayedRemoval(head, 5));
  ASSERT_OK_AND_ASSIGN(std::vector<Event> ev, start.subscription->Take(10));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].revision, start.revision + 1);
  EXPECT_EQ(ev[0].type, EventType::kDelayedRemovalChanged);
  EXPECT_EQ(ev[0].from, "0");
  EXPECT_EQ(ev[0].to, "5");
}

TEST_F(MultipathTest, PerPathCountersAddUp) {
  const std::string head = TwoPaths();
  ASSERT_OK(mp_->SetPolicy(head, "round-robin"));
  Run();
  EXPECT_EQ(Reads(head, 10), 10);
  ASSERT_OK_AND_ASSIGN(HeadInfo info, mp_->GetHead(head));
  uint64_t completed = 0, bytes = 0;
  for (const PathInfo& p : info.paths) {
    completed += p.counters.completed;
    bytes += p.counters.bytes;
    EXPECT_EQ(p.counters.submitted, 5u);
  }
  EXPECT_EQ(completed, 10u);
  EXPECT_EQ(bytes, 10u * 4096);
}

}  // namespace
}  // namespace umpath

namespace umpath {
namespace {

// What a head can do is what all of its paths can: the smallest largest transfer, write
// zeroes and deallocate only when every path has them, a write cache when any has one.
TEST_F(MultipathTest, HeadLimitsAreWhatEveryPathCanDo) {
  AddController("c0");
  AddController("c1");
  NamespaceSpec ns;
  ns.controller = "c0";
  ns.nsid = 1;
  ns.ids = Nguid(1);
  ns.size_blocks = kBlocks;
  ns.block_size = 512;
  ns.max_transfer_bytes = 512 * 1024;
  ns.write_zeroes = true;
  ns.deallocate = true;
  ASSERT_OK_AND_ASSIGN(std::string head, mp_->AddPath(ns));
  ASSERT_OK_AND_ASSIGN(HeadInfo h, mp_->GetHead(head));
  EXPECT_EQ(h.limits.max_transfer_bytes, 512u * 1024);
  EXPECT_TRUE(h.limits.write_zeroes);
  EXPECT_TRUE(h.limits.deallocate);
  EXPECT_FALSE(h.limits.volatile_write_cache);

  ns.controller = "c1";
  ns.max_transfer_bytes = 128 * 1024;
  ns.deallocate = false;
  ns.volatile_write_cache = true;
  ASSERT_OK(mp_->AddPath(ns));
  ASSERT_OK_AND_ASSIGN(h, mp_->GetHead(head));
  EXPECT_EQ(h.limits.max_transfer_bytes, 128u * 1024);
  EXPECT_TRUE(h.limits.write_zeroes);
  EXPECT_FALSE(h.limits.deallocate);
  EXPECT_TRUE(h.limits.volatile_write_cache);
}

// A frontend records the head's block device: reported by the head, an event each way,
// idempotent, and a stale head (another uid) is not touched. A device that outlived its
// head (the window expired) is still reported as removed.
TEST_F(MultipathTest, ExportDeviceIsRecordedOnTheHeadWithEvents) {
  const std::string head = TwoPaths();
  ASSERT_OK_AND_ASSIGN(HeadInfo h, mp_->GetHead(head));
  const uint64_t uid = h.uid;
  const uint64_t rev = mp_->journal().current_revision();
  ASSERT_OK(mp_->SetHeadExport(head, uid, "/dev/ublkb0", "exported"));
  ASSERT_OK(mp_->SetHeadExport(head, uid, "/dev/ublkb0", "exported"));  // no second event
  EXPECT_THAT(mp_->SetHeadExport(head, uid + 1, "/dev/ublkb1"),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(mp_->SetHeadExport("nguid-nothere", 1, "/dev/ublkb1"),
              StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK_AND_ASSIGN(h, mp_->GetHead(head));
  EXPECT_EQ(h.export_device, "/dev/ublkb0");
  ASSERT_OK(mp_->SetHeadExport(head, uid, "", "unexported"));
  ASSERT_OK_AND_ASSIGN(h, mp_->GetHead(head));
  EXPECT_EQ(h.export_device, "");

  // The head goes first (delay 0, both paths removed); its device's end is still news.
  ASSERT_OK(mp_->SetHeadExport(head, uid, "/dev/ublkb0", "exported"));
  ASSERT_OK(mp_->RemovePath("c0", 1));
  ASSERT_OK(mp_->RemovePath("c1", 1));
  ASSERT_THAT(mp_->GetHead(head), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK(mp_->SetHeadExport(head, uid, "", "/dev/ublkb0 removed: the head was removed"));

  std::vector<std::string> seen;
  for (const Event& e : EventsSince(rev)) {
    if (e.type == EventType::kHeadExported || e.type == EventType::kHeadUnexported ||
        e.type == EventType::kHeadRemoved) {
      seen.push_back(std::string(EventTypeName(e.type)) + " " + e.from + ">" + e.to);
    }
  }
  EXPECT_THAT(seen, ::testing::ElementsAre("head-exported >/dev/ublkb0",
                                           "head-unexported /dev/ublkb0>",
                                           "head-exported >/dev/ublkb0", "head-removed >",
                                           "head-unexported >"));
}

// The metrics' latency histogram: each successful completion lands in one bucket by
// the time from submit to reap on its path; failed ones are not counted.
TEST_F(MultipathTest, CompletionLatencyIsCountedPerPathInBuckets) {
  AddController("c0");
  ASSERT_OK_AND_ASSIGN(std::string head, AddPath("c0"));
  Run();
  Qp("c0").set_hold(true);
  const int64_t waits[] = {500'000, 5'000'000, 50'000'000};  // 0.5 ms, 5 ms, 50 ms
  for (int64_t wait : waits) {
    TestIo io;
    Submit(head, io);
    Run();
    clock_.Advance(wait);
    Qp("c0").set_hold(false);
    Run();
    ASSERT_TRUE(io.done);
    ASSERT_TRUE(io.result.ok());
    Qp("c0").set_hold(true);
  }
  Qp("c0").set_hold(false);
  Qp("c0").Script({nvme::Status::Make(sc::kInvalidField, /*dnr=*/true)});
  TestIo failed;
  Submit(head, failed);
  Run();
  ASSERT_TRUE(failed.done);
  ASSERT_OK_AND_ASSIGN(HeadInfo info, mp_->GetHead(head));
  const PathCounters& c = info.paths[0].counters;
  EXPECT_EQ(c.completed, 3u);
  EXPECT_EQ(c.latency_le_1ms, 1u);
  EXPECT_EQ(c.latency_le_10ms, 2u);  // cumulative
  EXPECT_EQ(c.latency_ns_sum, 55'500'000u);
  EXPECT_EQ(c.errors, 1u);
  EXPECT_EQ(c.last_error_status, nvme::Status::Make(sc::kInvalidField, true).ToCompletionField());
}

// A backend that polls the ANA log (the kernel's, with its multipath off) reads the same
// log again and again: one that changes nothing posts nothing to the workers.
TEST_F(MultipathTest, AnAnaLogThatChangesNothingWakesNoWorker) {
  AddController("c0", -1, /*ana=*/true);
  ASSERT_OK(Ana("c0", {{1, AnaState::kOptimized, {1}}}));
  ASSERT_OK_AND_ASSIGN(std::string head, AddPath("c0"));
  ASSERT_OK(Ana("c0", {{1, AnaState::kOptimized, {1}}}));
  Run();
  ASSERT_OK(Ana("c0", {{1, AnaState::kOptimized, {1}}}));
  EXPECT_EQ(workers_[0]->RunOnce(), 0u);
  ASSERT_OK(Ana("c0", {{1, AnaState::kNonOptimized, {1}}}));
  EXPECT_GT(workers_[0]->RunOnce(), 0u) << "a changed state is looked at";
}

}  // namespace
}  // namespace umpath
