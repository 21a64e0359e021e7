// The simulated backend under the real core and supervisor, driven by hand on a manual
// clock: its controllers come up through the agent's Identify and ANA parsers, I/O
// completes through the workers, and each fault does what it says.
#include "agent/sim/sim_backend.h"

#include <cstring>

#include "agent/control/testing/supervised_fixture.h"
#include "gmock/gmock.h"

namespace umpath::sim {
namespace {

using ::testing::HasSubstr;
using ::umpath::testing::StatusIs;
namespace sc = nvme::status_code;

class SimBackendTest : public testing::SupervisedFixture {
 protected:
  void Start(const std::string& topology) {
    SimOptions o;
    ASSERT_OK(ParseSimTopology(topology, &o));
    o.namespace_bytes = 1 << 20;
    o.clock = &clock_;
    o.wake_timers = false;
    o.io_timeout_ns = 2'000'000'000;
    o.log = [this](const std::string& line) { log_.push_back(line); };
    std::vector<Worker*> ws;
    for (auto& w : workers_) ws.push_back(w.get());
    ASSERT_OK_AND_ASSIGN(sim_, SimBackend::Create(mp_.get(), plane_.get(), sup_.get(), ws, o));
    ASSERT_OK(sim_->AttachAll());
    Pump();
  }
  void TearDown() override {
    SupervisedFixture::TearDown();  // the supervisor and its drivers go first
    sim_.reset();
  }
  HeadInfo OnlyHead() {
    std::vector<HeadInfo> heads = mp_->ListHeads();
    EXPECT_EQ(heads.size(), 1u);
    return heads.empty() ? HeadInfo{} : heads[0];
  }
  const PathInfo* PathOf(const HeadInfo& h, const std::string& controller) {
    for (const PathInfo& p : h.paths) {
      if (p.controller == controller) return &p;
    }
    return nullptr;
  }
  // One block of the head's namespace, written or read through the core.
  IoResult Io(const std::string& head, nvme::IoOpcode op, uint64_t slba, std::vector<uint8_t>& buf) {
    testing::TestIo io;
    io.req.opcode = op;
    io.req.slba = slba;
    io.req.blocks = 1;
    io.req.data = buf.data();
    io.req.data_len = static_cast<uint32_t>(buf.size());
    Submit(head, io);
    Pump();
    EXPECT_TRUE(io.done);
    return io.result;
  }
  SimFault Fault(SimFault::Kind kind) {
    SimFault f;
    f.kind = kind;
    return f;
  }

  std::unique_ptr<SimBackend> sim_;
};

TEST_F(SimBackendTest, ItsControllersComeUpAsPathsOfSharedNamespaces) {
  Start("2:3:2");
  const std::vector<HeadInfo> heads = mp_->ListHeads();
  ASSERT_EQ(heads.size(), 6u);
  for (const HeadInfo& h : heads) {
    EXPECT_THAT(h.name, ::testing::StartsWith("nguid-756d707301"));
    EXPECT_FALSE(h.uuid.empty());
    EXPECT_EQ(h.block_size, 4096u);
    EXPECT_EQ(h.size_blocks, 256u);
    ASSERT_EQ(h.paths.size(), 2u);
    for (const PathInfo& p : h.paths) {
      EXPECT_TRUE(p.selectable) << p.name;
      EXPECT_EQ(p.ana_state, nvme::AnaState::kOptimized);
      EXPECT_FALSE(p.ana_pending);
      EXPECT_EQ(p.ana_group_id, p.nsid);
    }
  }
  ASSERT_OK_AND_ASSIGN(ControllerInfo c, mp_->GetController("sim-1-1"));
  EXPECT_EQ(c.subsys_nqn, "nqn.2026-01.io.umpath:sim-1");
  EXPECT_EQ(c.transport, "sim");
  EXPECT_TRUE(c.ana_supported);
}

TEST_F(SimBackendTest, WhatIsWrittenThroughOnePathReadsBackThroughTheOther) {
  Start("1:1:2");
  const std::string head = OnlyHead().name;
  std::vector<uint8_t> out(4096), in(4096);
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(i * 7);
  ASSERT_TRUE(Io(head, nvme::IoOpcode::kWrite, 5, out).ok());
  // Every path but sim-0-1 failed: the read goes there.
  ASSERT_OK(mp_->FailPath(head, "sim-0-0", "test"));
  ASSERT_TRUE(Io(head, nvme::IoOpcode::kRead, 5, in).ok());
  EXPECT_EQ(in, out);
  EXPECT_EQ(PathOf(OnlyHead(), "sim-0-1")->counters.completed, 1u);
}

TEST_F(SimBackendTest, APathErrorFailsOverAndIsCounted) {
  Start("1:1:2");
  const std::string head = OnlyHead().name;
  SimFault f = Fault(SimFault::Kind::kPathError);
  f.status_code = sc::kInternalPathError;
  f.count = 1;
  for (const char* c : {"sim-0-0", "sim-0-1"}) ASSERT_OK(sim_->Inject(c, f));
  std::vector<uint8_t> buf(4096);
  EXPECT_TRUE(Io(head, nvme::IoOpcode::kRead, 0, buf).ok()) << "retried on the other path";
  int64_t injected = 0;
  for (const SimControllerInfo& c : sim_->DescribeAll()) injected += c.errors_injected;
  EXPECT_EQ(injected, 1);
}

TEST_F(SimBackendTest, AnErrorOnEveryPathUntilClearedReachesTheCaller) {
  Start("1:1:1");
  const std::string head = OnlyHead().name;
  SimFault f = Fault(SimFault::Kind::kPathError);
  f.status_code = sc::kUnrecoveredReadError;
  f.dnr = true;
  ASSERT_OK(sim_->Inject("sim-0-0", f));
  std::vector<uint8_t> buf(4096);
  IoResult r = Io(head, nvme::IoOpcode::kRead, 0, buf);
  EXPECT_EQ(r.error, IoError::kNvme);
  EXPECT_EQ(r.status.code(), sc::kUnrecoveredReadError);
  ASSERT_OK(sim_->ClearFaults("sim-0-0"));
  EXPECT_TRUE(Io(head, nvme::IoOpcode::kRead, 0, buf).ok());
}

TEST_F(SimBackendTest, AnAnaTransitionIsReadLikeAnAsynchronousEvent) {
  Start("1:2:2");
  const uint64_t rev = mp_->journal().current_revision();
  SimFault f = Fault(SimFault::Kind::kAnaState);
  f.ana_group = 2;
  f.ana_state = nvme::AnaState::kInaccessible;
  ASSERT_OK(sim_->Inject("sim-0-1", f));
  Pump();
  for (const HeadInfo& h : mp_->ListHeads()) {
    const PathInfo* p = PathOf(h, "sim-0-1");
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(p->ana_state, p->nsid == 2 ? nvme::AnaState::kInaccessible : nvme::AnaState::kOptimized);
    EXPECT_EQ(PathOf(h, "sim-0-0")->ana_state, nvme::AnaState::kOptimized);
  }
  EXPECT_THAT(TypesSince(rev), ::testing::Contains(EventType::kPathStateChanged));
  ASSERT_OK_AND_ASSIGN(SimControllerInfo info, sim_->Describe("sim-0-1"));
  EXPECT_EQ(info.ana[1], nvme::AnaState::kInaccessible);
}

TEST_F(SimBackendTest, ALostControllerLeavesAndReturnsLikeAHotplug) {
  Start("1:2:2");
  ASSERT_OK(sim_->Inject("sim-0-0", Fault(SimFault::Kind::kLoss)));
  Pump();
  EXPECT_EQ(State("sim-0-0"), SupervisedState::kGone);
  for (const HeadInfo& h : mp_->ListHeads()) {
    ASSERT_EQ(h.paths.size(), 1u);
    EXPECT_EQ(h.paths[0].controller, "sim-0-1");
  }
  EXPECT_THAT(sim_->Inject("sim-0-0", Fault(SimFault::Kind::kLoss)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not attached")));
  ASSERT_OK(sim_->Inject("sim-0-0", Fault(SimFault::Kind::kReturn)));
  Pump();
  for (const HeadInfo& h : mp_->ListHeads()) {
    ASSERT_EQ(h.paths.size(), 2u);
    for (const PathInfo& p : h.paths) EXPECT_TRUE(p.selectable) << p.name;
  }
  EXPECT_THAT(sim_->Inject("sim-0-0", Fault(SimFault::Kind::kReturn)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("is attached")));
}

TEST_F(SimBackendTest, ANamespaceLostFromOneControllerTakesOnlyThatPath) {
  Start("1:2:2");
  SimFault lose = Fault(SimFault::Kind::kNamespaceLoss);
  lose.nsid = 2;
  ASSERT_OK(sim_->Inject("sim-0-1", lose));
  Pump();
  for (const HeadInfo& h : mp_->ListHeads()) {
    EXPECT_EQ(h.paths.size(), h.nsid == 2 ? 1u : 2u) << h.name;
  }
  EXPECT_THAT(sim_->Inject("sim-0-1", lose), StatusIs(absl::StatusCode::kFailedPrecondition));
  // A controller that returns does not show it either, until it is attached again.
  ASSERT_OK(sim_->Inject("sim-0-1", Fault(SimFault::Kind::kLoss)));
  Pump();
  ASSERT_OK(sim_->Inject("sim-0-1", Fault(SimFault::Kind::kReturn)));
  Pump();
  for (const HeadInfo& h : mp_->ListHeads()) EXPECT_EQ(h.paths.size(), h.nsid == 2 ? 1u : 2u) << h.name;
  SimFault back = Fault(SimFault::Kind::kNamespaceReturn);
  back.nsid = 2;
  ASSERT_OK(sim_->Inject("sim-0-1", back));
  Pump();
  for (const HeadInfo& h : mp_->ListHeads()) {
    ASSERT_EQ(h.paths.size(), 2u) << h.name;
    for (const PathInfo& p : h.paths) EXPECT_TRUE(p.selectable) << p.name;
  }
  back.nsid = 3;
  EXPECT_THAT(sim_->Inject("sim-0-1", back), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("nsid 3")));
}

TEST_F(SimBackendTest, StuckCommandsTimeOutResetTheControllerAndCompleteOnceCleared) {
  Start("1:1:1");
  const std::string head = OnlyHead().name;
  ASSERT_OK(sim_->Inject("sim-0-0", Fault(SimFault::Kind::kStuck)));
  std::vector<uint8_t> out(4096, 0x33), in(4096);
  testing::TestIo io;
  io.req.opcode = nvme::IoOpcode::kWrite;
  io.req.blocks = 1;
  io.req.data = out.data();
  io.req.data_len = 4096;
  Submit(head, io);
  Pump();
  EXPECT_FALSE(io.done);
  clock_.AdvanceSeconds(3);  // past --io_timeout_ms
  Pump();
  EXPECT_TRUE(Logged("I/O command timeout")) << ::testing::PrintToString(log_);
  EXPECT_TRUE(Logged("sim-0-0: recovering -> live"));
  EXPECT_FALSE(io.done) << "requeued after the reset, stuck again";
  ASSERT_OK(sim_->ClearFaults("sim-0-0"));
  Pump();
  ASSERT_TRUE(io.done);
  EXPECT_TRUE(io.result.ok());
  ASSERT_TRUE(Io(head, nvme::IoOpcode::kRead, 0, in).ok());
  EXPECT_EQ(in, out);
}

TEST_F(SimBackendTest, BadFaultsAreRefusedWithAReason) {
  Start("1:2:1");
  EXPECT_THAT(sim_->Inject("sim-9-9", Fault(SimFault::Kind::kStuck)),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no simulated controller")));
  EXPECT_THAT(sim_->ClearFaults("nvme0"), StatusIs(absl::StatusCode::kNotFound));
  SimFault pe = Fault(SimFault::Kind::kPathError);
  EXPECT_THAT(sim_->Inject("sim-0-0", pe), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not success")));
  pe.status_code = 0x800;
  EXPECT_THAT(sim_->Inject("sim-0-0", pe), StatusIs(absl::StatusCode::kInvalidArgument));
  pe.status_code = sc::kInternalPathError;
  pe.nsid = 3;
  EXPECT_THAT(sim_->Inject("sim-0-0", pe), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("nsid 3")));
  pe.nsid = 0;
  pe.count = -1;
  EXPECT_THAT(sim_->Inject("sim-0-0", pe), StatusIs(absl::StatusCode::kInvalidArgument));
  SimFault ana = Fault(SimFault::Kind::kAnaState);
  ana.ana_group = 3;
  EXPECT_THAT(sim_->Inject("sim-0-0", ana), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("ANA group 3")));
  ana.ana_group = 1;
  ana.ana_state = static_cast<nvme::AnaState>(7);
  EXPECT_THAT(sim_->Inject("sim-0-0", ana), StatusIs(absl::StatusCode::kInvalidArgument));
  SimFault lat = Fault(SimFault::Kind::kLatency);
  lat.latency_ns = -1;
  EXPECT_THAT(sim_->Inject("sim-0-0", lat), StatusIs(absl::StatusCode::kInvalidArgument));
  SimOptions o;
  EXPECT_THAT(ParseSimTopology("2:4", &o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2:4:2")));
  EXPECT_THAT(ParseSimTopology("0:4:2", &o), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace umpath::sim
