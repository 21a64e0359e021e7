// `umpathctl stop` against the real server, the agent's stop (AgentStopOps, StopChoice)
// and the exporter on a fake ublk driver: who may stop the agent, the removing stop
// refused while a device is mounted (nothing changes, the agent runs on), and a stop
// that is answered and then stops the agent.
#include <unistd.h>

#include <filesystem>
#include <sstream>
#include <thread>

#include "agent/app/ops.h"
#include "agent/core/testing/core_fixture.h"
#include "agent/export/testing/fake_ublk.h"
#include "client/ctl.h"
#include "grpcpp/grpcpp.h"
#include "server/control_server.h"

namespace umpath::app {
namespace {

using ::testing::HasSubstr;

class AgentStopTest : public testing::CoreFixture {
 protected:
  void SetUp() override {
    CoreFixture::SetUp();
    char tmpl[] = "/tmp/umpath-stop-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ASSERT_OK_AND_ASSIGN(plane_, ControlPlane::Create(&clock_));
    plane_->Start();
    ublk::ExporterOptions eo;
    for (auto& w : workers_) eo.workers.push_back(w.get());
    eo.queue_depth = 8;
    eo.max_io_bytes = 65536;
    eo.state_dir = dir_ + "/ublk";
    auto driver = std::make_unique<ublk::FakeUblk>();
    ublk_ = driver.get();
    ublk_->record_dir = eo.state_dir;
    ASSERT_OK_AND_ASSIGN(exporter_, ublk::Exporter::CreateWithDriver(mp_.get(), plane_.get(), eo,
                                                                     std::move(driver)));
    exporter_->Start();
    exports_.Set(exporter_.get());
    AddController("c0");
    ASSERT_OK_AND_ASSIGN(head_, AddPath("c0"));
    Notification exported;
    exporter_->Export(head_, [&](absl::StatusOr<ExportedDevice> dev) {
      EXPECT_EQ(dev.value_or(ExportedDevice{}).path, "/dev/ublkb0");
      exported.Notify();
    });
    ASSERT_TRUE(exported.WaitFor(std::chrono::seconds(10)));
  }
  void TearDown() override {
    if (stopper_.joinable()) stopper_.join();
    server_.reset();
    plane_->Stop();
    exporter_->Shutdown();
    exporter_.reset();
    CoreFixture::TearDown();
    std::filesystem::remove_all(dir_);
  }

  // The server as the agent has it, with the caller (this test's uid) in `role`.
  void StartServer(server::Role role) {
    server::ServerOptions o;
    o.socket_path = dir_ + "/umpathd.sock";
    o.access.admin_uids.clear();
    (role == server::Role::kAdmin ? o.access.admin_uids : o.access.viewer_uids).push_back(getuid());
    o.service.exports = &exports_;
    o.service.stop = &ops_;
    ASSERT_OK_AND_ASSIGN(server_, server::ControlServer::Create(mp_.get(), o));
    stub_ = v1::MultipathControl::NewStub(
        grpc::CreateChannel("unix:" + o.socket_path, grpc::InsecureChannelCredentials()));
  }
  // As umpathd's main does once woken: decides the stop, and the agent goes (its server
  // first, at once).
  void StopWhenWoken() {
    stopper_ = std::thread([this] {
      if (!woken_.WaitFor(std::chrono::seconds(30))) return;
      decided_ = choice_.Decide("signal 0");
      server_->Shutdown();
    });
  }
  int Ctl(std::vector<std::string> args) {
    out_.str("");
    err_.str("");
    return client::RunCommand(stub_.get(), args, {}, out_, err_);
  }

  std::string dir_;
  std::unique_ptr<ControlPlane> plane_;
  ublk::FakeUblk* ublk_ = nullptr;
  std::unique_ptr<ublk::Exporter> exporter_;
  UblkExportOps exports_{"not yet"};
  StopChoice choice_{ublk::StopMode::kHandOver};  // --stop=handover
  Notification woken_;
  AgentStopOps ops_{&choice_, &exports_, [this] { woken_.Notify(); }};
  StopChoice::Decided decided_;
  std::thread stopper_;
  std::string head_;
  std::unique_ptr<server::ControlServer> server_;
  std::unique_ptr<v1::MultipathControl::Stub> stub_;
  std::ostringstream out_, err_;
};

TEST_F(AgentStopTest, AViewerMayNotStopTheAgent) {
  StartServer(server::Role::kViewer);
  EXPECT_EQ(Ctl({"stop"}), 7);  // PERMISSION_DENIED
  EXPECT_THAT(err_.str(), HasSubstr("PERMISSION_DENIED"));
  EXPECT_THAT(err_.str(), HasSubstr("has role viewer; this call needs admin"));
  EXPECT_FALSE(woken_.HasBeenNotified());
  EXPECT_FALSE(choice_.decided());
}

TEST_F(AgentStopTest, ARemovingStopIsRefusedWhileADeviceIsMountedAndTheAgentRunsOn) {
  StartServer(server::Role::kAdmin);
  ublk_->SetUsers(0, {"mounted at /mnt"});
  const std::string calls = ublk_->Calls();
  EXPECT_EQ(Ctl({"stop", "--remove"}), 9);  // FAILED_PRECONDITION
  EXPECT_THAT(err_.str(), HasSubstr("FAILED_PRECONDITION: block devices in use: /dev/ublkb0 of head " +
                                    head_ + " (mounted at /mnt); a removing stop would pull them "
                                            "from under their users"));
  EXPECT_FALSE(woken_.HasBeenNotified());
  EXPECT_FALSE(choice_.decided());
  EXPECT_EQ(ublk_->Calls(), calls);
  // The agent goes on: the device is still exported, and can be asked for again.
  EXPECT_EQ(Ctl({"export", head_}), 0) << err_.str();
  EXPECT_THAT(out_.str(), ::testing::StartsWith("/dev/ublkb0\n"));
  // Bad words are refused before anything is asked.
  EXPECT_EQ(Ctl({"stop", "--now"}), 2);
  EXPECT_THAT(err_.str(), HasSubstr("umpathctl: stop: unexpected argument --now\n"));
  // Forced, it is decided: the agent stops and removes the device, in use or not, and
  // exits so that a supervisor does not start it again.
  StopWhenWoken();
  ASSERT_EQ(Ctl({"stop", "--remove", "--force"}), 0) << err_.str();
  EXPECT_EQ(out_.str(), "stopping: the block devices are removed\n");
  stopper_.join();
  EXPECT_EQ(decided_.mode, ublk::StopMode::kForceRemove);
  EXPECT_TRUE(decided_.requested);
  EXPECT_THAT(decided_.by, HasSubstr("StopAgent from uid " + std::to_string(getuid())));
  EXPECT_EQ(decided_.exit_status(), kExitRemovedThroughApi);
}

TEST_F(AgentStopTest, AHandOverIsAnsweredAndThenTheAgentStops) {
  StartServer(server::Role::kAdmin);
  ublk_->SetUsers(0, {"mounted at /mnt"});  // a hand-over takes nothing from its users
  StopWhenWoken();
  ASSERT_EQ(Ctl({"stop"}), 0) << err_.str();
  EXPECT_EQ(out_.str(), "stopping: the block devices stay for the next agent\n");
  stopper_.join();
  EXPECT_EQ(decided_.mode, ublk::StopMode::kHandOver);
  EXPECT_TRUE(decided_.requested);
  EXPECT_EQ(decided_.exit_status(), 0);
  // Decided once: a signal now stops it the same way.
  EXPECT_EQ(choice_.Decide("signal 15").by, decided_.by);
  EXPECT_FALSE(choice_.Request(ublk::StopMode::kRemove, "another"));
}

// The stop decided (by a signal, or a first StopAgent), a StopAgent is refused: the
// agent stops the way already decided.
TEST_F(AgentStopTest, AStopAgentAfterTheStopWasDecidedIsRefused) {
  StartServer(server::Role::kAdmin);
  EXPECT_EQ(choice_.Decide("signal 15").mode, ublk::StopMode::kHandOver);
  EXPECT_EQ(Ctl({"stop", "--remove", "--force"}), 14);  // UNAVAILABLE
  EXPECT_THAT(err_.str(), HasSubstr("UNAVAILABLE: the agent is stopping"));
  EXPECT_FALSE(woken_.HasBeenNotified());
  EXPECT_FALSE(choice_.Decide("signal 15").requested);
}

// Only a successor's request marks the stop as one for a successor: main lingers after
// that one alone (--linger_after_handover), never after a signal's or StopAgent's.
TEST(StopChoiceTest, OnlyASuccessorsRequestIsForASuccessor) {
  StopChoice by_signal(ublk::StopMode::kHandOver);
  EXPECT_FALSE(by_signal.Decide("signal 15").for_successor);
  StopChoice by_api(ublk::StopMode::kHandOver);
  ASSERT_TRUE(by_api.Request(ublk::StopMode::kHandOver, "StopAgent from uid 0"));
  EXPECT_FALSE(by_api.Decide("signal 15").for_successor);
  StopChoice by_successor(ublk::StopMode::kRemove);
  ASSERT_TRUE(by_successor.Request(ublk::StopMode::kHandOver, "a successor, pid 9", true));
  const StopChoice::Decided d = by_successor.Decide("signal 15");
  EXPECT_TRUE(d.for_successor);
  EXPECT_EQ(d.mode, ublk::StopMode::kHandOver);
  EXPECT_EQ(d.exit_status(), 0);
  EXPECT_FALSE(by_successor.Request(ublk::StopMode::kHandOver, "a second successor", true));
}

}  // namespace
}  // namespace umpath::app
