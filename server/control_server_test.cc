// The real server on a real Unix socket, driven by a real gRPC client.
#include "server/control_server.h"
#include "server/testing/server_test.h"
#include "server/testing/test_topology.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <fstream>
#include <thread>
#include <filesystem>

#include "agent/base/status_matchers.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "umpath/v1/control.grpc.pb.h"

namespace umpath::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST_F(ServerTest, SocketIsCreatedWithItsModeAndRemovedOnShutdown) {
  Start();
  namespace fs = std::filesystem;
  const fs::path sock = server_->socket_path();
  ASSERT_TRUE(fs::is_socket(sock));
  EXPECT_EQ(fs::status(sock).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                fs::perms::group_write);
  server_->Shutdown();
  EXPECT_FALSE(fs::exists(sock));
}

TEST_F(ServerTest, RefusesToReplaceSomethingThatIsNotASocket) {
  const std::string path = dir_ + "/umpathd.sock";
  { std::ofstream(path) << "not a socket"; }
  ServerOptions o;
  o.socket_path = path;
  EXPECT_THAT(ControlServer::Create(mp_.get(), o),
              testing::StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not a socket")));
  o.socket_path = "relative.sock";
  EXPECT_THAT(ControlServer::Create(mp_.get(), o),
              testing::StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(ServerTest, AgentInfoNamesTheCallersRole) {
  Start();
  v1::GetAgentInfoResponse resp;
  ASSERT_TRUE(Call(&v1::MultipathControl::Stub::GetAgentInfo, v1::GetAgentInfoRequest(), &resp)
                  .ok());
  EXPECT_EQ(resp.agent_info().node(), "node-a");
  EXPECT_EQ(resp.agent_info().caller_role(), "admin");
  EXPECT_EQ(resp.agent_info().max_delayed_removal_secs(), 86400u);
}

TEST_F(ServerTest, GetAndListHeadsWithPagingAndFilters) {
  Start();
  v1::Head h = GetHead(head_);
  EXPECT_EQ(h.name(), head_);
  ASSERT_EQ(h.paths_size(), 2);
  EXPECT_EQ(h.paths(0).name(), head_ + "/paths/c0");
  EXPECT_EQ(h.paths(0).controller(), "controllers/c0");
  EXPECT_EQ(h.paths(0).ana_state(), v1::ANA_STATE_OPTIMIZED);
  EXPECT_EQ(h.paths(0).controller_state(), v1::CONTROLLER_STATE_LIVE);

  v1::ListHeadsRequest req;
  req.set_page_size(2);
  v1::ListHeadsResponse page1, page2;
  ASSERT_TRUE(Call(&v1::MultipathControl::Stub::ListHeads, req, &page1).ok());
  ASSERT_EQ(page1.heads_size(), 2);
  ASSERT_FALSE(page1.next_page_token().empty());
  req.set_page_token(page1.next_page_token());
  ASSERT_TRUE(Call(&v1::MultipathControl::Stub::ListHeads, req, &page2).ok());
  ASSERT_EQ(page2.heads_size(), 1);
  EXPECT_TRUE(page2.next_page_token().empty());
  EXPECT_LT(page1.heads(1).name(), page2.heads(0).name());

  v1::ListHeadsResponse none;
  req.Clear();
  req.set_filter(v1::HEAD_FILTER_REMOVAL_PENDING);
  ASSERT_TRUE(Call(&v1::MultipathControl::Stub::ListHeads, req, &none).ok());
  EXPECT_EQ(none.heads_size(), 0);

  v1::ListHeadsResponse bad;
  req.Clear();
  req.set_page_token("not-a-token");
  EXPECT_EQ(Call(&v1::MultipathControl::Stub::ListHeads, req, &bad).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  req.Clear();
  req.set_page_size(1001);
  grpc::Status s = Call(&v1::MultipathControl::Stub::ListHeads, req, &bad);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("0..1000"));
}

TEST_F(ServerTest, UnknownAndMalformedNames) {
  Start();
  v1::GetHeadRequest req;
  v1::GetHeadResponse resp;
  req.set_name("heads/nope");
  grpc::Status s = Call(&v1::MultipathControl::Stub::GetHead, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("nope"));
  for (const char* name : {"nope", "heads/", "heads/a/b", "controllers/c0", ""}) {
    req.set_name(name);
    s = Call(&v1::MultipathControl::Stub::GetHead, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << name;
    EXPECT_THAT(s.error_message(), HasSubstr("heads/{head}")) << name;
  }
  v1::GetControllerRequest creq;
  v1::GetControllerResponse cresp;
  creq.set_name("controllers/c1");
  ASSERT_TRUE(Call(&v1::MultipathControl::Stub::GetController, creq, &cresp).ok());
  EXPECT_EQ(cresp.controller().heads_size(), 3);
  creq.set_name("controllers/zz");
  EXPECT_EQ(Call(&v1::MultipathControl::Stub::GetController, creq, &cresp).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServerTest, DelayedRemovalIsBoundedIdempotentAndKeepsTheOldValueOnError) {
  Start();
  ASSERT_TRUE(SetDelay(head_, 30).ok());
  EXPECT_EQ(GetHead(head_).delayed_removal_secs(), 30u);
  const uint64_t rev = mp_->journal().current_revision();
  ASSERT_TRUE(SetDelay(head_, 30).ok());
  EXPECT_EQ(mp_->journal().current_revision(), rev);  // nothing changed, nothing emitted
  for (int64_t bad : {int64_t{86401}, int64_t{-1}, int64_t{1} << 40}) {
    grpc::Status s = SetDelay(head_, bad);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_THAT(s.error_message(), HasSubstr("0..86400")) << bad;
  }
  EXPECT_EQ(GetHead(head_).delayed_removal_secs(), 30u);
  EXPECT_EQ(SetDelay("heads/missing", 5).error_code(), grpc::StatusCode::NOT_FOUND);

  v1::SetDefaultDelayedRemovalRequest dreq;
  v1::SetDefaultDelayedRemovalResponse dresp;
  dreq.set_delayed_removal_secs(100000);
  EXPECT_EQ(Call(&v1::MultipathControl::Stub::SetDefaultDelayedRemoval, dreq, &dresp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  dreq.set_delayed_removal_secs(7);
  ASSERT_TRUE(Call(&v1::MultipathControl::Stub::SetDefaultDelayedRemoval, dreq, &dresp).ok());
  EXPECT_EQ(dresp.defaults().delayed_removal_secs(), 7u);
}

// SEMANTICS "Fast fail" through the API: bounded, NOT_FOUND for an unknown head, admin
// only, reported on the head and in the defaults.
TEST_F(ServerTest, IoFailTimeoutIsBoundedAndReportedOnTheHeadAndTheDefaults) {
  Start();
  auto set = [&](const std::string& name, int64_t secs, v1::SetIoFailTimeoutResponse* resp) {
    v1::SetIoFailTimeoutRequest req;
    req.set_name(name);
    req.set_io_fail_timeout_secs(secs);
    return Call(&v1::MultipathControl::Stub::SetIoFailTimeout, req, resp);
  };
  v1::SetIoFailTimeoutResponse resp;
  ASSERT_TRUE(set(head_, 12, &resp).ok());
  EXPECT_EQ(resp.head().io_fail_timeout_secs(), 12u);
  EXPECT_FALSE(resp.head().failing_fast());
  EXPECT_EQ(GetHead(head_).io_fail_timeout_secs(), 12u);
  for (int64_t bad : {int64_t{86401}, int64_t{-1}, int64_t{1} << 40}) {
    grpc::Status s = set(head_, bad, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_THAT(s.error_message(), HasSubstr("io_fail_timeout_secs")) << bad;
  }
  EXPECT_EQ(GetHead(head_).io_fail_timeout_secs(), 12u);
  EXPECT_EQ(set("heads/missing", 5, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(set("nothead", 5, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  v1::SetDefaultIoFailTimeoutRequest dreq;
  v1::SetDefaultIoFailTimeoutResponse dresp;
  dreq.set_io_fail_timeout_secs(86401);
  EXPECT_EQ(Call(&v1::MultipathControl::Stub::SetDefaultIoFailTimeout, dreq, &dresp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  dreq.set_io_fail_timeout_secs(9);
  ASSERT_TRUE(Call(&v1::MultipathControl::Stub::SetDefaultIoFailTimeout, dreq, &dresp).ok());
  EXPECT_EQ(dresp.defaults().io_fail_timeout_secs(), 9u);
  EXPECT_EQ(mp_->GetDefaults().io_fail_timeout_secs, 9u);
}

TEST_F(ServerTest, PolicyAndMaintenanceCalls) {
  Start();
  v1::SetIoPolicyRequest preq;
  v1::SetIoPolicyResponse presp;
  preq.set_name(head_);
  EXPECT_EQ(Call(&v1::MultipathControl::Stub::SetIoPolicy, preq, &presp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);  // UNSPECIFIED
  preq.set_io_policy(static_cast<v1::IoPolicy>(42));
  EXPECT_EQ(Call(&v1::MultipathControl::Stub::SetIoPolicy, preq, &presp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  preq.set_io_policy(v1::IO_POLICY_ROUND_ROBIN);
  ASSERT_TRUE(Call(&v1::MultipathControl::Stub::SetIoPolicy, preq, &presp).ok());
  EXPECT_EQ(presp.head().io_policy(), v1::IO_POLICY_ROUND_ROBIN);

  v1::FailPathRequest freq;
  v1::FailPathResponse fresp;
  freq.set_name(head_ + "/paths/c0");
  freq.set_reason("firmware update");
  ASSERT_TRUE(Call(&v1::MultipathControl::Stub::FailPath, freq, &fresp).ok());
  EXPECT_TRUE(fresp.head().paths(0).admin_failed());
  EXPECT_FALSE(fresp.head().paths(0).selectable());
  freq.set_name(head_ + "/paths/c9");
  EXPECT_EQ(Call(&v1::MultipathControl::Stub::FailPath, freq, &fresp).error_code(),
            grpc::StatusCode::NOT_FOUND);
  v1::ReinstatePathRequest rreq;
  v1::ReinstatePathResponse rresp;
  rreq.set_name(head_ + "/paths/c0");
  ASSERT_TRUE(Call(&v1::MultipathControl::Stub::ReinstatePath, rreq, &rresp).ok());
  EXPECT_TRUE(rresp.head().paths(0).selectable());

  v1::AttachControllerRequest areq;
  v1::AttachControllerResponse aresp;
  areq.set_transport("pcie");
  grpc::Status s = Call(&v1::MultipathControl::Stub::AttachController, areq, &aresp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("address"));
  areq.set_address("0000:01:00.0");
  s = Call(&v1::MultipathControl::Stub::AttachController, areq, &aresp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("backend"));
  v1::ResetControllerRequest rsreq;
  v1::ResetControllerResponse rsresp;
  rsreq.set_name("controllers/c0");
  s = Call(&v1::MultipathControl::Stub::ResetController, rsreq, &rsresp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("backend"));
  v1::ExportHeadRequest ereq;
  v1::ExportHeadResponse eresp;
  ereq.set_name(head_);
  s = Call(&v1::MultipathControl::Stub::ExportHead, ereq, &eresp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("ublk"));
}

// What the backends were asked, and what they answer.
// Answers from a thread of its own, as the control thread does.
struct FakeControllerOps final : ControllerOps {
  void Attach(const AttachSpec& spec, OpDone<absl::StatusOr<std::string>> done) override {
    attached.push_back(spec.transport + " " + spec.address);
    options.push_back(spec.fabrics.ToString());
    Later([a = spec.address, done = std::move(done)]() mutable {
      if (a == "0000:09:00.0") return std::move(done)(absl::NotFoundError("no PCI device 0000:09:00.0"));
      std::move(done)(std::string("c1"));
    });
  }
  void Detach(const std::string& c, OpDone<absl::Status> done) override {
    detached.push_back(c);
    Later([done = std::move(done)]() mutable { std::move(done)(absl::OkStatus()); });
  }
  void Reset(const std::string& c, OpDone<absl::Status> done) override {
    reset.push_back(c);
    Later([c, done = std::move(done)]() mutable {
      std::move(done)(c == "c1" ? absl::FailedPreconditionError("c1 is already resetting")
                                : absl::OkStatus());
    });
  }
  static void Later(absl::AnyInvocable<void() &&> fn) {
    std::thread([fn = std::move(fn)]() mutable { std::move(fn)(); }).detach();
  }
  std::vector<std::string> attached, options, detached, reset;
};

TEST_F(ServerTest, AttachDetachAndResetReachTheBackend) {
  FakeControllerOps ops;
  Start(Self(Role::kAdmin), std::chrono::milliseconds(10000), 4096,
        [&ops](ServerOptions& o) { o.service.controllers = &ops; });
  v1::AttachControllerRequest areq;
  v1::AttachControllerResponse aresp;
  areq.set_transport("pcie");
  areq.set_address("0000:02:00.0");
  ASSERT_TRUE(Call(&v1::MultipathControl::Stub::AttachController, areq, &aresp).ok());
  EXPECT_EQ(aresp.controller().name(), "controllers/c1");
  areq.set_address("0000:09:00.0");
  grpc::Status s = Call(&v1::MultipathControl::Stub::AttachController, areq, &aresp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("no PCI device 0000:09:00.0"));
  EXPECT_THAT(ops.attached, ::testing::ElementsAre("pcie 0000:02:00.0", "pcie 0000:09:00.0"));

  v1::ResetControllerRequest rreq;
  v1::ResetControllerResponse rresp;
  rreq.set_name("controllers/c0");
  ASSERT_TRUE(Call(&v1::MultipathControl::Stub::ResetController, rreq, &rresp).ok());
  EXPECT_EQ(rresp.controller().name(), "controllers/c0");
  rreq.set_name("controllers/c1");
  EXPECT_EQ(Call(&v1::MultipathControl::Stub::ResetController, rreq, &rresp).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  rreq.set_name("controllers/nothere");
  EXPECT_EQ(Call(&v1::MultipathControl::Stub::ResetController, rreq, &rresp).error_code(),
            grpc::StatusCode::NOT_FOUND);
  rreq.set_name("heads/c0");
  EXPECT_EQ(Call(&v1::MultipathControl::Stub::ResetController, rreq, &rresp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(ops.reset, ::testing::ElementsAre("c0", "c1")) << "unknown names never reach it";

  v1::DetachControllerRequest dreq;
  v1::DetachControllerResponse dresp;
  dreq.set_name("controllers/c0");
  ASSERT_TRUE(Call(&v1::MultipathControl::Stub::DetachController, dreq, &dresp).ok());
  EXPECT_THAT(ops.detached, ::testing::ElementsAre("c0"));
}

// Fabrics options are checked before the backend is asked: a connect never starts with
// a value the kernel would refuse or take differently, nor a key file that is not one.
TEST_F(ServerTest, AttachWithBadFabricsOptionsIsInvalidBeforeAnyConnect) {
  FakeControllerOps ops;
  Start(Self(Role::kAdmin), std::chrono::milliseconds(10000), 4096,
        [&ops](ServerOptions& o) { o.service.controllers = &ops; });
  const std::string open_key = dir_ + "/open.key";
  std::ofstream(open_key) << "DHHC-1:00:" << std::string(44, 'Q') << "Zz0=:\n";
  chmod(open_key.c_str(), 0644);
  auto tcp = [] {
    v1::AttachControllerRequest r;
    r.set_transport("tcp");
    r.set_address("10.77.0.1");
    r.set_service("4422");
    r.set_subsystem_nqn("nqn.2026-01.io.umpath:tcp");
    return r;
  };
  struct Case {
    std::function<void(v1::AttachControllerRequest&)> set;
    grpc::StatusCode code;
    const char* says;
  } cases[] = {
      {[](auto& r) { r.set_ctrl_loss_tmo_secs(-2); }, grpc::StatusCode::INVALID_ARGUMENT,
       "ctrl_loss_tmo_secs -2 is out of range (-1 to reconnect forever"},
      {[](auto& r) { r.set_reconnect_delay_secs(0); }, grpc::StatusCode::INVALID_ARGUMENT,
       "reconnect_delay_secs 0 is out of range (1..86400 seconds)"},
      {[](auto& r) { r.set_keep_alive_tmo_secs(0); }, grpc::StatusCode::INVALID_ARGUMENT,
       "keep_alive_tmo_secs 0 is out of range"},
      {[](auto& r) { r.set_host_traddr("10.77.0.1,ctrl_loss_tmo=0"); }, grpc::StatusCode::INVALID_ARGUMENT,
       "is not an IPv4 or IPv6 address"},
      {[](auto& r) { r.set_host_iface(std::string(300, 'e')); }, grpc::StatusCode::INVALID_ARGUMENT,
       "host_iface"},
      {[&open_key](auto& r) { r.set_dhchap_secret_file(open_key); }, grpc::StatusCode::INVALID_ARGUMENT,
       "readable by everyone"},
      {[](auto& r) {
         r.set_transport("pcie");
         r.set_address("0000:02:00.0");
         r.set_ctrl_loss_tmo_secs(30);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "transport \"pcie\" takes none"},
      {[](auto& r) {
         r.set_transport("kernel");
         r.set_address("nvme3");
         r.set_host_traddr("10.77.0.1");
       },
       grpc::StatusCode::INVALID_ARGUMENT, "transport \"kernel\" takes none"},
  };
  for (const Case& c : cases) {
    v1::AttachControllerRequest req = tcp();
    c.set(req);
    v1::AttachControllerResponse resp;
    grpc::Status s = Call(&v1::MultipathControl::Stub::AttachController, req, &resp);
    EXPECT_EQ(s.error_code(), c.code) << c.says;
    EXPECT_THAT(s.error_message(), HasSubstr(c.says));
    EXPECT_THAT(s.error_message(), Not(HasSubstr("QQQQ"))) << "a key is never quoted";
  }
  EXPECT_THAT(ops.attached, ::testing::IsEmpty()) << "nothing reached the backend";

  // Good options reach it, as given.
  v1::AttachControllerRequest req = tcp();
  req.set_host_traddr("10.77.0.1");
  req.set_ctrl_loss_tmo_secs(-1);
  req.set_reconnect_delay_secs(3);
  req.set_keep_alive_tmo_secs(7);
  v1::AttachControllerResponse resp;
  ASSERT_TRUE(Call(&v1::MultipathControl::Stub::AttachController, req, &resp).ok());
  EXPECT_THAT(ops.options, ::testing::ElementsAre("ctrl_loss_tmo=-1 reconnect_delay=3 keep_alive_tmo=7 "
                                                  "host_traddr=10.77.0.1"));
}

// The ublk frontend as the service sees it.
struct FakeExportOps final : ExportOps {
  void Export(const std::string& head, OpDone<absl::StatusOr<ExportedDevice>> done) override {
    exported.push_back(head);
    if (head == "nothere") return std::move(done)(absl::NotFoundError("head nothere not found"));
    std::move(done)(ExportedDevice{"/dev/ublkb0", {259, 3, 42, "/dev/disk/by-id/umpath-" + head}});
  }
  void Unexport(const std::string& head, OpDone<absl::Status> done) override {
    unexported.push_back(head);
    std::move(done)(absl::FailedPreconditionError(
        "/dev/ublkb0 of head " + head + " is in use (pid 812 (fio)); close or unmount it first"));
  }
  std::vector<std::string> exported, unexported;
};

TEST_F(ServerTest, ExportAndUnexportReachTheFrontend) {
  FakeExportOps ops;
  Start(Self(Role::kAdmin), std::chrono::milliseconds(10000), 4096,
        [&ops](ServerOptions& o) { o.service.exports = &ops; });
  v1::ExportHeadRequest ereq;
  v1::ExportHeadResponse eresp;
  ereq.set_name(head_);
  ASSERT_TRUE(Call(&v1::MultipathControl::Stub::ExportHead, ereq, &eresp).ok());
  EXPECT_EQ(eresp.device(), "/dev/ublkb0");
  // The stable handles reach the caller (issue 19 item 6).
  EXPECT_EQ(eresp.major(), 259u);
  EXPECT_EQ(eresp.minor(), 3u);
  EXPECT_EQ(eresp.diskseq(), 42u);
  EXPECT_EQ(eresp.by_id_link(), "/dev/disk/by-id/umpath-" + ops.exported.back());
  ereq.set_name("heads/nothere");
  grpc::Status s = Call(&v1::MultipathControl::Stub::ExportHead, ereq, &eresp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  ereq.set_name("controllers/c0");
  EXPECT_EQ(Call(&v1::MultipathControl::Stub::ExportHead, ereq, &eresp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::UnexportHeadRequest ureq;
  v1::UnexportHeadResponse uresp;
  ureq.set_name(head_);
  s = Call(&v1::MultipathControl::Stub::UnexportHead, ureq, &uresp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("in use (pid 812 (fio))"));
  const std::string bare = head_.substr(std::string("heads/").size());
  EXPECT_THAT(ops.exported, ::testing::ElementsAre(bare, "nothere")) << "malformed names never reach it";
  EXPECT_THAT(ops.unexported, ::testing::ElementsAre(bare));
}

// The agent's stop as the service sees it.
struct FakeStopOps final : StopOps {
  void Stop(const Request& r, OpDone<absl::Status> done) override {
    asked.push_back(std::string(r.remove ? "remove" : "hand-over") + (r.force ? " forced" : ""));
    caller = r.caller;
    std::move(done)(absl::OkStatus());
  }
  std::vector<std::string> asked;
  std::string caller;
};

TEST_F(ServerTest, StopAgentTakesAModeAndNeedsAnAdminAndAStopper) {
  FakeStopOps ops;
  v1::StopAgentRequest req;
  v1::StopAgentResponse resp;
  Start();  // no stopper: this agent stops by signal only
  req.set_mode(v1::STOP_MODE_HAND_OVER);
  grpc::Status s = Call(&v1::MultipathControl::Stub::StopAgent, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("stops by signal only"));
  server_.reset();
  Start(Self(Role::kAdmin), std::chrono::milliseconds(10000), 4096,
        [&ops](ServerOptions& o) { o.service.stop = &ops; });
  for (int bad : {0, 3, 42}) {
    req.set_mode(static_cast<v1::StopMode>(bad));
    s = Call(&v1::MultipathControl::Stub::StopAgent, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_THAT(s.error_message(), HasSubstr("mode must be STOP_MODE_HAND_OVER or STOP_MODE_REMOVE"));
  }
  req.set_mode(v1::STOP_MODE_REMOVE);
  req.set_force(true);
  ASSERT_TRUE(Call(&v1::MultipathControl::Stub::StopAgent, req, &resp).ok());
  req.set_mode(v1::STOP_MODE_HAND_OVER);
  req.set_force(false);
  ASSERT_TRUE(Call(&v1::MultipathControl::Stub::StopAgent, req, &resp).ok());
  EXPECT_THAT(ops.asked, ::testing::ElementsAre("remove forced", "hand-over"));
  EXPECT_THAT(ops.caller, HasSubstr("uid " + std::to_string(getuid())));
  // A viewer may not: refused before it reaches the agent.
  server_.reset();
  Start(Self(Role::kViewer), std::chrono::milliseconds(10000), 4096,
        [&ops](ServerOptions& o) { o.service.stop = &ops; });
  s = Call(&v1::MultipathControl::Stub::StopAgent, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("needs admin"));
  EXPECT_EQ(ops.asked.size(), 2u);
}

TEST_F(ServerTest, ViewerReadsButMayNotChangeAnything) {
  Start(Self(Role::kViewer));
  v1::GetAgentInfoResponse info;
  ASSERT_TRUE(Call(&v1::MultipathControl::Stub::GetAgentInfo, v1::GetAgentInfoRequest(), &info)
                  .ok());
  EXPECT_EQ(info.agent_info().caller_role(), "viewer");
  EXPECT_EQ(GetHead(head_).name(), head_);
  grpc::Status s = SetDelay(head_, 5);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("needs admin"));
  EXPECT_EQ(GetHead(head_).delayed_removal_secs(), 0u);
  v1::SetIoFailTimeoutRequest req;
  req.set_name(head_);
  req.set_io_fail_timeout_secs(5);
  v1::SetIoFailTimeoutResponse resp;
  EXPECT_EQ(Call(&v1::MultipathControl::Stub::SetIoFailTimeout, req, &resp).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(GetHead(head_).io_fail_timeout_secs(), 0u);
}

TEST_F(ServerTest, UnknownCallerGetsNothing) {
  Start(Self(Role::kNone));
  v1::GetHeadRequest req;
  req.set_name(head_);
  v1::GetHeadResponse resp;
  grpc::Status s = Call(&v1::MultipathControl::Stub::GetHead, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("uid " + std::to_string(getuid())));
  grpc::ClientContext ctx;
  auto reader = stub_->WatchEvents(&ctx, v1::WatchEventsRequest());
  v1::WatchEventsResponse msg;
  EXPECT_FALSE(reader->Read(&msg));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

// --- WatchEvents. ---

TEST_F(ServerTest, WatchStartsWithASnapshotThenStreamsEventsInOrder) {
  Start();
  grpc::ClientContext ctx;
  auto reader = stub_->WatchEvents(&ctx, v1::WatchEventsRequest());
  v1::WatchEventsResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  ASSERT_TRUE(msg.has_snapshot());
  EXPECT_EQ(msg.snapshot().heads_size(), 3);
  EXPECT_EQ(msg.snapshot().controllers_size(), 2);
  const uint64_t base = msg.snapshot().revision();
  EXPECT_EQ(base, mp_->journal().current_revision());

  ASSERT_TRUE(SetDelay(head_, 10).ok());
  ASSERT_OK(mp_->FailPath(head_.substr(6), "c1", "test"));
  ASSERT_TRUE(reader->Read(&msg));
  ASSERT_TRUE(msg.has_event());
  EXPECT_EQ(msg.event().revision(), base + 1);
  EXPECT_EQ(msg.event().type(), v1::EVENT_TYPE_DELAYED_REMOVAL_CHANGED);
  EXPECT_EQ(msg.event().head(), head_);
  EXPECT_EQ(msg.event().to(), "10");
  ASSERT_TRUE(reader->Read(&msg));
  EXPECT_EQ(msg.event().revision(), base + 2);
  EXPECT_EQ(msg.event().type(), v1::EVENT_TYPE_PATH_STATE_CHANGED);
  EXPECT_EQ(msg.event().path(), head_ + "/paths/c1");
  ctx.TryCancel();
  while (reader->Read(&msg)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(ServerTest, WatchResumesAfterARetainedRevisionAndFiltersHeadsAndTypes) {
  Start();
  const uint64_t from = mp_->journal().current_revision();
  ASSERT_TRUE(SetDelay(head_, 10).ok());
  ASSERT_TRUE(SetDelay("heads/nguid-ab000000000000000000000000000002", 10).ok());
  ASSERT_OK(mp_->FailPath(head_.substr(6), "c1", "test"));
  grpc::ClientContext ctx;
  v1::WatchEventsRequest req;
  req.set_since_revision(from);
  req.add_heads(head_);
  req.add_types(v1::EVENT_TYPE_PATH_STATE_CHANGED);
  auto reader = stub_->WatchEvents(&ctx, req);
  v1::WatchEventsResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  ASSERT_TRUE(msg.has_event());
  EXPECT_EQ(msg.event().revision(), from + 3);
  EXPECT_EQ(msg.event().type(), v1::EVENT_TYPE_PATH_STATE_CHANGED);
  ctx.TryCancel();
  while (reader->Read(&msg)) {
  }
  reader->Finish();
}

TEST_F(ServerTest, WatchRejectsBadRequests) {
  Start();
  for (int i = 0; i < 70; ++i) ASSERT_TRUE(SetDelay(head_, i % 2 ? 5 : 6).ok());
  auto watch_status = [&](const v1::WatchEventsRequest& req) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    auto reader = stub_->WatchEvents(&ctx, req);
    v1::WatchEventsResponse msg;
    while (reader->Read(&msg)) {
    }
    return reader->Finish();
  };
  v1::WatchEventsRequest req;
  req.set_since_revision(1);  // the journal holds 64 events
  grpc::Status s = watch_status(req);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_THAT(s.error_message(), HasSubstr("oldest retained revision"));
  req.set_since_revision(1'000'000);
  EXPECT_EQ(watch_status(req).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  req.Clear();
  req.add_heads("bogus");
  EXPECT_EQ(watch_status(req).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  req.Clear();
  req.add_types(static_cast<v1::EventType>(99));
  EXPECT_EQ(watch_status(req).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// Every response names the agent's run; a resume naming another run is refused.
TEST_F(ServerTest, WatchNamesTheIncarnationAndRefusesAnotherOnesRevisions) {
  Start();
  {
    grpc::ClientContext ctx;
    v1::GetAgentInfoResponse info;
    ASSERT_TRUE(stub_->GetAgentInfo(&ctx, v1::GetAgentInfoRequest(), &info).ok());
    EXPECT_EQ(info.agent_info().incarnation(), "00000000000000aa");
  }
  auto first_message = [&](const v1::WatchEventsRequest& req, v1::WatchEventsResponse* msg) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    auto reader = stub_->WatchEvents(&ctx, req);
    if (!reader->Read(msg)) return reader->Finish();
    ctx.TryCancel();
    v1::WatchEventsResponse rest;
    while (reader->Read(&rest)) {
    }
    reader->Finish();
    return grpc::Status::OK;
  };
  v1::WatchEventsResponse msg;
  ASSERT_TRUE(first_message(v1::WatchEventsRequest(), &msg).ok());
  ASSERT_TRUE(msg.has_snapshot());
  EXPECT_EQ(msg.incarnation(), "00000000000000aa");
  v1::WatchEventsRequest req;
  req.set_since_revision(msg.snapshot().revision());
  req.set_incarnation("00000000000000aa");  // this run's: served
  ASSERT_TRUE(SetDelay(head_, 10).ok());
  ASSERT_TRUE(first_message(req, &msg).ok());
  EXPECT_TRUE(msg.has_event());
  EXPECT_EQ(msg.incarnation(), "00000000000000aa");
  req.set_incarnation("0000000000000099");  // an earlier run's: refused, whatever the revision
  grpc::Status s = first_message(req, &msg);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_THAT(s.error_message(), HasSubstr("is of incarnation 0000000000000099; this agent is "
                                           "incarnation 00000000000000aa (it restarted)"));
}

TEST_F(ServerTest, IdleWatchGetsProgressMarkers) {
  Start(Self(Role::kAdmin), std::chrono::milliseconds(50));
  grpc::ClientContext ctx;
  auto reader = stub_->WatchEvents(&ctx, v1::WatchEventsRequest());
  v1::WatchEventsResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  ASSERT_TRUE(msg.has_snapshot());
  ASSERT_TRUE(reader->Read(&msg));
  ASSERT_TRUE(msg.has_progress());
  EXPECT_EQ(msg.progress().revision(), mp_->journal().current_revision());
  ctx.TryCancel();
  while (reader->Read(&msg)) {
  }
  reader->Finish();
}

TEST_F(ServerTest, SlowWatcherIsEndedNeverSkipped) {
  Start(Self(Role::kAdmin), std::chrono::milliseconds(10000), /*queue_limit=*/8);
  grpc::ClientContext ctx;
  auto reader = stub_->WatchEvents(&ctx, v1::WatchEventsRequest());
  v1::WatchEventsResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  uint64_t expect = msg.snapshot().revision() + 1;
  // Far more events than the watcher may fall behind by (and than the HTTP/2 windows
  // hold), made in-process, before it reads any.
  for (int i = 0; i < 5000; ++i) ASSERT_OK(mp_->SetDelayedRemoval(head_.substr(6), 1 + i % 2));
  while (reader->Read(&msg)) {
    ASSERT_TRUE(msg.has_event());
    ASSERT_EQ(msg.event().revision(), expect);  // in order, no gap
    ++expect;
  }
  grpc::Status s = reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("last revision sent was " + std::to_string(expect - 1)));
}

TEST_F(ServerTest, ShutdownEndsWatchersWithAResumePointAndDoesNotHang) {
  Start();
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::WatchEventsResponse>>> readers;
  for (int i = 0; i < 5; ++i) {
    ctxs.push_back(std::make_unique<grpc::ClientContext>());
    readers.push_back(stub_->WatchEvents(ctxs.back().get(), v1::WatchEventsRequest()));
    v1::WatchEventsResponse msg;
    ASSERT_TRUE(readers.back()->Read(&msg));
  }
  EXPECT_EQ(server_->service().watchers(), 5u);
  server_->Shutdown();
  for (auto& r : readers) {
    v1::WatchEventsResponse msg;
    while (r->Read(&msg)) {
    }
    grpc::Status s = r->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_THAT(s.error_message(), HasSubstr("resume with since_revision"));
  }
}

// Item 12: a watcher that stops reading is ended, counted and its slot freed. Before,
// nothing woke it once its write waited on the client (the journal notified only a
// subscription drained since its last notice, and the hub's tick skipped streams with a
// write in flight): 20,000 events later it still held its slot.
TEST_F(ServerTest, AWatcherThatStopsReadingIsEndedAndItsSlotFreed) {
  Start(Self(Role::kAdmin), std::chrono::milliseconds(10000), 4096,
        [](ServerOptions& o) { o.service.watch.max_watchers_per_caller = 1; });
  // A client whose HTTP/2 window is smaller than the snapshot: the server's first write
  // waits on it, and it never reads.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 1);
  auto stalled = v1::MultipathControl::NewStub(grpc::CreateCustomChannel(
      "unix:" + server_->socket_path(), grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));  // if not ended
  auto reader = stalled->WatchEvents(&ctx, v1::WatchEventsRequest());
  // The headers go with the snapshot's write: from here the stream is subscribed and has
  // a write in flight.
  reader->WaitForInitialMetadata();
  v1::WatchEventsResponse msg;
  for (int i = 0; i < 20000; ++i) ASSERT_OK(mp_->SetDelayedRemoval(head_.substr(6), 1 + i % 2));
  // The reader never reads again; the server ends it on its own.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (server_->service().watchers() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(server_->service().watchers(), 0u);
  EXPECT_EQ(server_->service().watcher_ends()[static_cast<size_t>(WatchEnd::kFellBehind)], 1u);
  EXPECT_EQ(mp_->journal().subscriber_count(), 0u);
  // Its slot is free: the same caller watches again.
  grpc::ClientContext again;
  again.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto next = stub_->WatchEvents(&again, v1::WatchEventsRequest());
  EXPECT_TRUE(next->Read(&msg) && msg.has_snapshot());
  again.TryCancel();
  while (next->Read(&msg)) {
  }
  next->Finish();
  while (reader->Read(&msg)) {
  }
  EXPECT_FALSE(reader->Finish().ok());
}

TEST_F(ServerTest, ClientsThatVanishMidStreamAreCleanedUp) {
  Start();
  for (int i = 0; i < 3; ++i) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    auto reader = stub_->WatchEvents(ctx.get(), v1::WatchEventsRequest());
    v1::WatchEventsResponse msg;
    ASSERT_TRUE(reader->Read(&msg));
    ctx->TryCancel();
  }
  // A whole channel that goes away with a stream open.
  {
    auto ch = grpc::CreateChannel("unix:" + server_->socket_path(),
                                  grpc::InsecureChannelCredentials());
    auto stub = v1::MultipathControl::NewStub(ch);
    grpc::ClientContext ctx;
    auto reader = stub->WatchEvents(&ctx, v1::WatchEventsRequest());
    v1::WatchEventsResponse msg;
    ASSERT_TRUE(reader->Read(&msg));
    ctx.TryCancel();
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (server_->service().watchers() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(server_->service().watchers(), 0u);
  EXPECT_EQ(mp_->journal().subscriber_count(), 0u);
  EXPECT_EQ(GetHead(head_).name(), head_);  // and the server still serves
}

}  // namespace
}  // namespace umpath::server

namespace umpath::server {
namespace {

TEST_F(ServerTest, HealthWatchReportsServingThenNotServingOnShutdown) {
  Start();
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext ctx;
  auto reader = health->Watch(&ctx, grpc::health::v1::HealthCheckRequest());
  grpc::health::v1::HealthCheckResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  EXPECT_EQ(msg.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  std::thread stopper([&] { server_->Shutdown(); });
  ASSERT_TRUE(reader->Read(&msg));
  EXPECT_EQ(msg.status(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  EXPECT_FALSE(reader->Read(&msg));
  EXPECT_TRUE(reader->Finish().ok());
  stopper.join();
}

TEST_F(ServerTest, HealthCheckOfAnUnknownServiceIsNotFound) {
  Start();
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext ctx;
  grpc::health::v1::HealthCheckRequest req;
  req.set_service("nope.v1.Nothing");
  grpc::health::v1::HealthCheckResponse resp;
  EXPECT_EQ(health->Check(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServerTest, OversizedMessagesAreRefusedAndChangeNothing) {
  Start();
  v1::FailPathRequest req;
  req.set_name(head_ + "/paths/c0");
  req.set_reason(std::string(5 << 20, 'x'));  // over the 4 MiB limit
  v1::FailPathResponse resp;
  EXPECT_EQ(Call(&v1::MultipathControl::Stub::FailPath, req, &resp).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  req.set_reason(std::string(2000, 'x'));  // within gRPC's limit, over ours
  grpc::Status s = Call(&v1::MultipathControl::Stub::FailPath, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("1024"));
  EXPECT_FALSE(GetHead(head_).paths(0).admin_failed());
}

TEST_F(ServerTest, WatcherLimitsPerCallerAndInTotal) {
  Start(Self(Role::kAdmin), std::chrono::milliseconds(10000), 4096,
        [](ServerOptions& o) { o.service.watch.max_watchers_per_caller = 2; });
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::WatchEventsResponse>>> readers;
  v1::WatchEventsResponse msg;
  for (int i = 0; i < 3; ++i) {  // one after the other: which one is third is then known
    ctxs.push_back(std::make_unique<grpc::ClientContext>());
    readers.push_back(stub_->WatchEvents(ctxs.back().get(), v1::WatchEventsRequest()));
    if (i < 2) {
      ASSERT_TRUE(readers.back()->Read(&msg)) << i;
    }
  }
  EXPECT_FALSE(readers[2]->Read(&msg));
  grpc::Status s = readers[2]->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("at most 2 watchers per caller"));
  // A watcher that leaves makes room.
  ctxs[0]->TryCancel();
  while (readers[0]->Read(&msg)) {
  }
  readers[0]->Finish();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (server_->service().watchers() > 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  grpc::ClientContext again;
  auto reader = stub_->WatchEvents(&again, v1::WatchEventsRequest());
  EXPECT_TRUE(reader->Read(&msg));
  again.TryCancel();
  ctxs[1]->TryCancel();
  while (reader->Read(&msg)) {
  }
  reader->Finish();
  while (readers[1]->Read(&msg)) {
  }
  readers[1]->Finish();
}

}  // namespace
}  // namespace umpath::server
