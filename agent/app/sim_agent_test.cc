// umpathd on the simulated backend (issue 18): a real Agent with --sim and its gRPC
// server on a Unix socket, no VM. Heads come up from the simulator; each fault injected
// through umpath.v1alpha.SimulatorControl (and `umpathctl sim`) shows in the paths'
// state and the event stream of umpath.v1.
#include <unistd.h>

#include <filesystem>
#include <sstream>

#include "agent/app/agent.h"
#include "agent/base/status_matchers.h"
#include "client/ctl.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace umpath::app {
namespace {

using ::testing::HasSubstr;
namespace v1alpha = ::umpath::v1alpha;

class SimAgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/umpath-sim-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    if (watch_ctx_) watch_ctx_->TryCancel();
    watch_.reset();
    agent_.reset();
    std::filesystem::remove_all(dir_);
  }
  // The agent as umpathd --sim=TOPOLOGY makes it, its caller (this test) in `role`.
  void Start(const std::string& topology, server::Role role = server::Role::kAdmin) {
    AgentConfig c;
    c.server.socket_path = dir_ + "/umpathd.sock";
    c.server.access.admin_uids.clear();
    (role == server::Role::kAdmin ? c.server.access.admin_uids : c.server.access.viewer_uids)
        .push_back(getuid());
    c.state_file = dir_ + "/heads";
    c.handover_socket = "";
    if (!topology.empty()) {
      sim::SimOptions so;
      ASSERT_OK(sim::ParseSimTopology(topology, &so));
      so.namespace_bytes = 1 << 20;
      so.io_timeout_ns = 300'000'000;
      so.log = [](const std::string&) {};
      c.sim = so;
    }
    ASSERT_OK_AND_ASSIGN(agent_, Agent::Create(std::move(c)));
    auto channel = grpc::CreateChannel("unix:" + dir_ + "/umpathd.sock", grpc::InsecureChannelCredentials());
    stub_ = v1::MultipathControl::NewStub(channel);
    sim_ = v1alpha::SimulatorControl::NewStub(channel);
  }
  // From a snapshot on: every event after it arrives through Next.
  void Watch() {
    watch_ctx_ = std::make_unique<grpc::ClientContext>();
    watch_ctx_->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    watch_ = stub_->WatchEvents(watch_ctx_.get(), v1::WatchEventsRequest());
    v1::WatchEventsResponse r;
    ASSERT_TRUE(watch_->Read(&r));
    ASSERT_TRUE(r.has_snapshot());
  }
  // The next event that `match` accepts; fails the test when the stream ends first.
  template <typename Pred>
  v1::Event WaitFor(Pred match) {
    v1::WatchEventsResponse r;
    while (watch_->Read(&r)) {
      if (r.has_event() && match(r.event())) return r.event();
    }
    ADD_FAILURE() << "the event stream ended first: " << watch_->Finish().error_message();
    return {};
  }
  static auto Is(v1::EventType type, const std::string& controller, const std::string& to = "") {
    return [=](const v1::Event& e) {
      return e.type() == type && e.controller() == "controllers/" + controller && (to.empty() || e.to() == to);
    };
  }
  grpc::Status Inject(v1alpha::InjectFaultRequest req, v1alpha::InjectFaultResponse* resp = nullptr) {
    grpc::ClientContext ctx;
    v1alpha::InjectFaultResponse ignored;
    return sim_->InjectFault(&ctx, req, resp ? resp : &ignored);
  }
  static v1alpha::InjectFaultRequest Fault(const std::string& controller) {
    v1alpha::InjectFaultRequest req;
    req.set_controller(controller);
    return req;
  }
  std::vector<v1::Head> Heads() {
    grpc::ClientContext ctx;
    v1::ListHeadsRequest req;
    v1::ListHeadsResponse resp;
    EXPECT_TRUE(stub_->ListHeads(&ctx, req, &resp).ok());
    return {resp.heads().begin(), resp.heads().end()};
  }
  const v1::Path* PathOf(const v1::Head& h, const std::string& controller) {
    for (const v1::Path& p : h.paths()) {
      if (p.controller() == "controllers/" + controller) return &p;
    }
    return nullptr;
  }
  // One 4 KiB I/O through the agent's core, submitted on its worker as the block
  // devices submit.
  struct Pending {
    IoRequest req;
    IoResult result;
    Notification done;
  };
  std::unique_ptr<Pending> SubmitIo(const std::string& head_id, nvme::IoOpcode op, std::vector<uint8_t>& buf) {
    const uint64_t uid = agent_->core().GetHead(head_id).value().uid;
    auto p = std::make_unique<Pending>();
    p->req.opcode = op;
    p->req.blocks = 1;
    p->req.data = buf.data();
    p->req.data_len = static_cast<uint32_t>(buf.size());
    p->req.user = p.get();
    p->req.on_complete = [](IoRequest* r, IoResult res) {
      auto* pending = static_cast<Pending*>(r->user);
      pending->result = res;
      pending->done.Notify();
    };
    Worker* w = agent_->workers()[0];
    w->Post([w, uid, req = &p->req] {
      w->FindChannel(uid)->Submit(req);
      w->Flush();
    });
    return p;
  }
  IoResult Io(const std::string& head_id, nvme::IoOpcode op, std::vector<uint8_t>& buf) {
    std::unique_ptr<Pending> p = SubmitIo(head_id, op, buf);
    EXPECT_TRUE(p->done.WaitFor(std::chrono::seconds(60)));
    return p->result;
  }
  int Ctl(std::vector<std::string> args) {
    out_.str("");
    err_.str("");
    client::CtlOptions o;
    o.simulator = sim_.get();
    return client::RunCommand(stub_.get(), args, o, out_, err_);
  }

  std::string dir_;
  std::unique_ptr<Agent> agent_;
  std::unique_ptr<v1::MultipathControl::Stub> stub_;
  std::unique_ptr<v1alpha::SimulatorControl::Stub> sim_;
  std::unique_ptr<grpc::ClientContext> watch_ctx_;
  std::unique_ptr<grpc::ClientReader<v1::WatchEventsResponse>> watch_;
  std::ostringstream out_, err_;
};

TEST_F(SimAgentTest, HeadsComeUpFromTheSimulatorWithoutAVm) {
  Start("2:4:2");
  const std::vector<v1::Head> heads = Heads();
  ASSERT_EQ(heads.size(), 8u);
  for (const v1::Head& h : heads) {
    ASSERT_EQ(h.paths_size(), 2) << h.name();
    for (const v1::Path& p : h.paths()) {
      EXPECT_TRUE(p.selectable()) << p.name();
      EXPECT_EQ(p.ana_state(), v1::ANA_STATE_OPTIMIZED);
    }
  }
  EXPECT_EQ(Ctl({"info"}), 0) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("sim"));
  EXPECT_EQ(Ctl({"sim"}), 0) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("sim-1-1"));
  // Memory-backed: what is written reads back.
  std::vector<uint8_t> out(4096, 0xa5), in(4096);
  const std::string head = heads[3].name().substr(strlen("heads/"));
  ASSERT_TRUE(Io(head, nvme::IoOpcode::kWrite, out).ok());
  ASSERT_TRUE(Io(head, nvme::IoOpcode::kRead, in).ok());
  EXPECT_EQ(in, out);
}

TEST_F(SimAgentTest, AnAnaChangeIsSeenInThePathAndTheEventStream) {
  Start("1:2:2");
  Watch();
  EXPECT_EQ(Ctl({"sim", "ana", "sim-0-1", "2", "inaccessible"}), 0) << err_.str();
  const v1::Event e = WaitFor(Is(v1::EVENT_TYPE_PATH_STATE_CHANGED, "sim-0-1", "inaccessible"));
  grpc::ClientContext ctx;
  v1::GetHeadRequest req;
  req.set_name(e.head());
  v1::GetHeadResponse resp;
  ASSERT_TRUE(stub_->GetHead(&ctx, req, &resp).ok());
  EXPECT_EQ(PathOf(resp.head(), "sim-0-1")->ana_state(), v1::ANA_STATE_INACCESSIBLE);
  EXPECT_EQ(PathOf(resp.head(), "sim-0-0")->ana_state(), v1::ANA_STATE_OPTIMIZED);
  EXPECT_EQ(PathOf(resp.head(), "sim-0-0")->nsid(), 2u);
}

TEST_F(SimAgentTest, ALostControllerFailsOverAndComesBack) {
  Start("1:2:2");
  Watch();
  v1alpha::InjectFaultRequest lose = Fault("sim-0-0");
  lose.mutable_loss();
  ASSERT_TRUE(Inject(lose).ok());
  WaitFor(Is(v1::EVENT_TYPE_CONTROLLER_REMOVED, "sim-0-0"));
  for (const v1::Head& h : Heads()) {
    ASSERT_EQ(h.paths_size(), 1) << h.name();
    EXPECT_TRUE(h.paths(0).selectable());
  }
  std::vector<uint8_t> buf(4096);
  EXPECT_TRUE(Io(Heads()[0].name().substr(strlen("heads/")), nvme::IoOpcode::kRead, buf).ok());
  v1alpha::InjectFaultRequest back = Fault("sim-0-0");
  back.mutable_controller_return();
  ASSERT_TRUE(Inject(back).ok());
  WaitFor(Is(v1::EVENT_TYPE_CONTROLLER_ADDED, "sim-0-0"));
  for (const v1::Head& h : Heads()) EXPECT_EQ(h.paths_size(), 2) << h.name();
}

TEST_F(SimAgentTest, ANamespaceLostFromOneControllerTakesOnePathAndReturns) {
  Start("1:2:2");
  Watch();
  EXPECT_EQ(Ctl({"sim", "lose-ns", "sim-0-1", "2"}), 0) << err_.str();
  const v1::Event gone = WaitFor(Is(v1::EVENT_TYPE_PATH_REMOVED, "sim-0-1"));
  for (const v1::Head& h : Heads()) EXPECT_EQ(h.paths_size(), h.name() == gone.head() ? 1 : 2) << h.name();
  EXPECT_EQ(Ctl({"sim", "return-ns", "sim-0-1", "2"}), 0) << err_.str();
  EXPECT_EQ(WaitFor(Is(v1::EVENT_TYPE_PATH_ADDED, "sim-0-1")).head(), gone.head());
}

TEST_F(SimAgentTest, TheControlApiResetsAndDetachesSimulatedControllersAsAnyOther) {
  Start("1:1:2");
  Watch();
  EXPECT_EQ(Ctl({"reset", "sim-0-0"}), 0) << err_.str();
  WaitFor(Is(v1::EVENT_TYPE_CONTROLLER_STATE_CHANGED, "sim-0-0", "resetting"));
  WaitFor(Is(v1::EVENT_TYPE_CONTROLLER_STATE_CHANGED, "sim-0-0", "live"));
  EXPECT_EQ(Ctl({"detach", "sim-0-0"}), 0) << err_.str();
  WaitFor(Is(v1::EVENT_TYPE_CONTROLLER_REMOVED, "sim-0-0"));
  EXPECT_EQ(Ctl({"sim", "lose", "sim-0-0"}), 9) << "FAILED_PRECONDITION: not attached";
  // A detached controller comes back as a lost one does.
  EXPECT_EQ(Ctl({"sim", "return", "sim-0-0"}), 0) << err_.str();
  WaitFor(Is(v1::EVENT_TYPE_CONTROLLER_ADDED, "sim-0-0"));
  EXPECT_EQ(Heads()[0].paths_size(), 2);
}

// Issue 19 item 5, against the real agent: removing what is gone is done (CSI's
// idempotency), and an error says why as a reason a script can switch on.
TEST_F(SimAgentTest, RemovingWhatIsGoneSucceedsAndErrorsCarryTheirReason) {
  Start("1:1:2");
  Watch();
  EXPECT_EQ(Ctl({"detach", "sim-0-0"}), 0) << err_.str();
  WaitFor(Is(v1::EVENT_TYPE_CONTROLLER_REMOVED, "sim-0-0"));
  EXPECT_EQ(Ctl({"detach", "sim-0-0"}), 0) << "detached already: " << err_.str();
  EXPECT_EQ(Ctl({"detach", "never-attached"}), 0) << err_.str();
  const std::string head = Heads()[0].name();
  // This agent has no ublk frontend: nothing of it is exported, so unexporting is done.
  EXPECT_EQ(Ctl({"unexport", head}), 0) << err_.str();
  EXPECT_EQ(Ctl({"unexport", "heads/nguid-00000000000000000000000000000bad"}), 0) << err_.str();
  EXPECT_EQ(Ctl({"export", head}), 9);
  EXPECT_THAT(err_.str(), HasSubstr("[BACKEND_MISSING]"));
  EXPECT_EQ(Ctl({"head", "heads/nguid-00000000000000000000000000000bad"}), 5);
  EXPECT_THAT(err_.str(), HasSubstr("[HEAD_NOT_FOUND]"));
  EXPECT_EQ(Ctl({"reset", "never-attached"}), 5) << "a reset needs the controller";
  EXPECT_THAT(err_.str(), HasSubstr("[CONTROLLER_NOT_FOUND]"));
  EXPECT_EQ(Ctl({"set-delayed-removal", head, "99999999"}), 3);
  EXPECT_THAT(err_.str(), HasSubstr("[VALUE_OUT_OF_RANGE]"));
}

TEST_F(SimAgentTest, APathErrorIsCountedAndTheIoFailsOver) {
  Start("1:1:2");
  v1alpha::InjectFaultRequest err = Fault("sim-0-0");
  err.mutable_path_error()->set_sct(3);  // internal path error
  err.mutable_path_error()->set_count(1);
  ASSERT_TRUE(Inject(err).ok());
  err.set_controller("sim-0-1");
  ASSERT_TRUE(Inject(err).ok());
  std::vector<uint8_t> buf(4096);
  const std::string head = Heads()[0].name().substr(strlen("heads/"));
  EXPECT_TRUE(Io(head, nvme::IoOpcode::kRead, buf).ok());
  uint64_t errors = 0;
  const std::vector<v1::Head> heads = Heads();
  for (const v1::Path& p : heads[0].paths()) errors += p.counters().errors();
  EXPECT_EQ(errors, 1u);
  EXPECT_EQ(Ctl({"sim"}), 0);
  EXPECT_THAT(out_.str(), HasSubstr("300 x1")) << "the other controller's error is still armed";
}

TEST_F(SimAgentTest, StuckCommandsResetTheControllerAndCompleteOnceCleared) {
  Start("1:1:2");
  Watch();
  const std::string head = Heads()[0].name().substr(strlen("heads/"));
  EXPECT_EQ(Ctl({"fail-path", head, "sim-0-1"}), 0) << err_.str();
  EXPECT_EQ(Ctl({"sim", "stick", "sim-0-0"}), 0) << err_.str();
  std::vector<uint8_t> buf(4096);
  std::unique_ptr<Pending> p = SubmitIo(head, nvme::IoOpcode::kRead, buf);
  // Past --io_timeout_ms the controller is reset, as a vfio one is.
  WaitFor(Is(v1::EVENT_TYPE_CONTROLLER_STATE_CHANGED, "sim-0-0", "resetting"));
  WaitFor(Is(v1::EVENT_TYPE_CONTROLLER_STATE_CHANGED, "sim-0-0", "live"));
  EXPECT_EQ(Ctl({"sim", "clear", "sim-0-0"}), 0) << err_.str();
  ASSERT_TRUE(p->done.WaitFor(std::chrono::seconds(60)));
  EXPECT_TRUE(p->result.ok());
}

TEST_F(SimAgentTest, BadFaultsAreRefusedWithAClearStatus) {
  Start("1:2:1");
  EXPECT_EQ(Inject(Fault("sim-7-0")).error_code(), grpc::StatusCode::INVALID_ARGUMENT) << "no fault";
  v1alpha::InjectFaultRequest stuck = Fault("sim-7-0");
  stuck.mutable_stuck();
  grpc::Status s = Inject(stuck);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("no simulated controller"));
  v1alpha::InjectFaultRequest ana = Fault("controllers/sim-0-0");
  ana.mutable_ana_change()->set_group(3);
  ana.mutable_ana_change()->set_state(v1::ANA_STATE_CHANGE);
  s = Inject(ana);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("ANA group 3"));
  ana.mutable_ana_change()->set_group(1);
  ana.mutable_ana_change()->set_state(v1::ANA_STATE_UNSPECIFIED);
  EXPECT_EQ(Inject(ana).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1alpha::InjectFaultRequest pe = Fault("sim-0-0");
  pe.mutable_path_error()->set_sct(8);
  EXPECT_EQ(Inject(pe).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1alpha::InjectFaultRequest back = Fault("sim-0-0");
  back.mutable_controller_return();
  EXPECT_EQ(Inject(back).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Ctl({"sim", "ana", "sim-0-0", "1", "sideways"}), 2);
}

TEST_F(SimAgentTest, AViewerMayListButNotInject) {
  Start("1:1:1", server::Role::kViewer);
  EXPECT_EQ(Ctl({"sim"}), 0) << err_.str();
  v1alpha::InjectFaultRequest stuck = Fault("sim-0-0");
  stuck.mutable_stuck();
  grpc::Status s = Inject(stuck);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("this call needs admin"));
}

TEST_F(SimAgentTest, WithoutSimTheSimulatorIsNotServed) {
  Start("");
  v1alpha::InjectFaultRequest stuck = Fault("sim-0-0");
  stuck.mutable_stuck();
  EXPECT_EQ(Inject(stuck).error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

}  // namespace
}  // namespace umpath::app
