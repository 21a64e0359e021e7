#include "server/settings_store.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "agent/base/status_matchers.h"
#include "agent/core/multipath.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "grpcpp/grpcpp.h"
#include "server/control_server.h"
#include "server/testing/test_topology.h"

namespace umpath::server {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

class SettingsStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/umpath-settings-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/state/heads";
  }
  void TearDown() override { fs::remove_all(dir_); }

  static HeadInfo Head(const std::string& name, uint32_t secs, IoPolicy p) {
    HeadInfo h;
    h.name = name;
    h.delayed_removal_secs = secs;
    h.policy = p;
    return h;
  }

  std::string dir_, path_;
};

TEST_F(SettingsStoreTest, SavesAtomicallyAndLoadsWhatItSaved) {
  ASSERT_OK_AND_ASSIGN(auto store, SettingsStore::Open(path_));
  EXPECT_EQ(store->size(), 0u);
  EXPECT_TRUE(store->problem().empty());
  store->OnHeadSettingsChanged(Head("nguid-01", 30, IoPolicy::kRoundRobin));
  store->OnHeadSettingsChanged(Head("eui64-02", 0, IoPolicy::kNuma));
  store->OnHeadSettingsChanged(Head("nguid-01", 45, IoPolicy::kRoundRobin));
  ASSERT_OK(store->last_save());
  EXPECT_FALSE(fs::exists(path_ + ".tmp"));

  ASSERT_OK_AND_ASSIGN(auto again, SettingsStore::Open(path_));
  EXPECT_EQ(again->size(), 2u);
  std::optional<HeadSettings> s = again->Lookup("nguid-01");
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->delayed_removal_secs, 45u);
  EXPECT_EQ(s->policy, IoPolicy::kRoundRobin);
  EXPECT_FALSE(again->Lookup("nguid-99").has_value());
}

TEST_F(SettingsStoreTest, CorruptFileIsReportedSetAsideAndDoesNotStopTheAgent) {
  fs::create_directories(fs::path(path_).parent_path());
  for (const char* bad : {"garbage\n", "# umpath head settings v1\nnguid-01 delayed_removal_secs=99999\n",
                          "# umpath head settings v1\nnguid-01 colour=blue\n",
                          "# umpath head settings v1\nnguid-01 io_policy=fastest\n"}) {
    { std::ofstream(path_) << bad; }
    ASSERT_OK_AND_ASSIGN(auto store, SettingsStore::Open(path_));
    EXPECT_THAT(store->problem(), HasSubstr("set aside")) << bad;
    EXPECT_EQ(store->size(), 0u);
    EXPECT_FALSE(fs::exists(path_));
    store->OnHeadSettingsChanged(Head("nguid-01", 5, IoPolicy::kNuma));
    ASSERT_OK(store->last_save());
    fs::remove(path_);
  }
  int aside = 0;
  for (const auto& e : fs::directory_iterator(fs::path(path_).parent_path())) {
    aside += e.path().filename().string().rfind("heads.corrupt-", 0) == 0;
  }
  EXPECT_GE(aside, 1);  // same-second names overwrite each other; at least one is kept
}

TEST_F(SettingsStoreTest, UnwritableDirectoryIsAnError) {
  EXPECT_THAT(SettingsStore::Open("/proc/umpath-cannot/heads"),
              testing::StatusIs(absl::StatusCode::kFailedPrecondition));
}

// Values set through the API, agent stopped and started: the values are back.
TEST_F(SettingsStoreTest, SettingsSurviveARestartThroughTheApi) {
  const std::string head = "nguid-ab000000000000000000000000000001";
  auto boot = [&](SettingsStore* store) {
    MultipathOptions mo;
    mo.initial_settings = [store](absl::string_view h) { return store->Lookup(h); };
    auto mp = *Multipath::Create(mo);
    EXPECT_OK(testing::AddTestTopology(mp.get(), 1, 1, "nqn.2026-01.io.umpath:restart"));
    return mp;
  };
  {
    ASSERT_OK_AND_ASSIGN(auto store, SettingsStore::Open(path_));
    auto mp = boot(store.get());
    ServerOptions o;
    o.socket_path = dir_ + "/umpathd.sock";
    o.access.admin_uids = {getuid()};
    ASSERT_OK_AND_ASSIGN(auto server, ControlServer::Create(mp.get(), o, store.get()));
    auto stub = v1::MultipathControl::NewStub(
        grpc::CreateChannel("unix:" + o.socket_path, grpc::InsecureChannelCredentials()));
    grpc::ClientContext c1, c2;
    v1::SetDelayedRemovalRequest dr;
    dr.set_name("heads/" + head);
    dr.set_delayed_removal_secs(120);
    v1::SetDelayedRemovalResponse drr;
    ASSERT_TRUE(stub->SetDelayedRemoval(&c1, dr, &drr).ok());
    v1::SetIoPolicyRequest pr;
    pr.set_name("heads/" + head);
    pr.set_io_policy(v1::IO_POLICY_QUEUE_DEPTH);
    v1::SetIoPolicyResponse prr;
    ASSERT_TRUE(stub->SetIoPolicy(&c2, pr, &prr).ok());
    ASSERT_OK(store->last_save());
    server->Shutdown();
  }
  ASSERT_OK_AND_ASSIGN(auto store, SettingsStore::Open(path_));
  auto mp = boot(store.get());
  ASSERT_OK_AND_ASSIGN(HeadInfo info, mp->GetHead(head));
  EXPECT_EQ(info.delayed_removal_secs, 120u);
  EXPECT_EQ(info.policy, IoPolicy::kQueueDepth);
  // Another head is untouched by it.
  EXPECT_EQ(mp->GetDefaults().delayed_removal_secs, 0u);
}

}  // namespace
}  // namespace umpath::server
