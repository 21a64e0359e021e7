#include "server/settings_store.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>
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
  void TearDown() override {
    server_.reset();
    mp_.reset();
    fs::remove_all(dir_);
  }

  static HeadInfo Head(const std::string& name, uint32_t secs, IoPolicy p) {
    HeadInfo h;
    h.name = name;
    h.delayed_removal_secs = secs;
    h.policy = p;
    return h;
  }
  // As the service saves: the head read under the store's lock.
  static absl::Status Save(SettingsStore* store, const HeadInfo& h) {
    return store->OnHeadSettingsChanged([&] { return absl::StatusOr<HeadInfo>(h); });
  }

  // The real server on its socket over a store at path_, one head.
  void StartApi() {
    ASSERT_OK_AND_ASSIGN(store_, SettingsStore::Open(path_));
    ASSERT_OK_AND_ASSIGN(mp_, Multipath::Create(MultipathOptions{}));
    ASSERT_OK(testing::AddTestTopology(mp_.get(), 1, 1));
    ServerOptions o;
    o.socket_path = dir_ + "/umpathd.sock";
    o.access.admin_uids = {getuid()};
    ASSERT_OK_AND_ASSIGN(server_, ControlServer::Create(mp_.get(), o, store_.get()));
    stub_ = v1::MultipathControl::NewStub(
        grpc::CreateChannel("unix:" + o.socket_path, grpc::InsecureChannelCredentials()));
  }
  grpc::Status SetDelay(uint32_t secs) {
    grpc::ClientContext ctx;
    v1::SetDelayedRemovalRequest req;
    req.set_name("heads/" + kHead);
    req.set_delayed_removal_secs(secs);
    v1::SetDelayedRemovalResponse resp;
    return stub_->SetDelayedRemoval(&ctx, req, &resp);
  }

  const std::string kHead = "nguid-ab000000000000000000000000000001";
  std::string dir_, path_;
  std::unique_ptr<SettingsStore> store_;
  std::unique_ptr<Multipath> mp_;
  std::unique_ptr<ControlServer> server_;
  std::unique_ptr<v1::MultipathControl::Stub> stub_;
};

TEST_F(SettingsStoreTest, SavesAtomicallyAndLoadsWhatItSaved) {
  ASSERT_OK_AND_ASSIGN(auto store, SettingsStore::Open(path_));
  EXPECT_EQ(store->size(), 0u);
  EXPECT_TRUE(store->problem().empty());
  ASSERT_OK(Save(store.get(), Head("nguid-01", 30, IoPolicy::kRoundRobin)));
  ASSERT_OK(Save(store.get(), Head("eui64-02", 0, IoPolicy::kNuma)));
  ASSERT_OK(Save(store.get(), Head("nguid-01", 45, IoPolicy::kRoundRobin)));
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
    ASSERT_OK(Save(store.get(), Head("nguid-01", 5, IoPolicy::kNuma)));
    ASSERT_OK(store->last_save());
    fs::remove(path_);
  }
  int aside = 0;
  for (const auto& e : fs::directory_iterator(fs::path(path_).parent_path())) {
    aside += e.path().filename().string().rfind("heads.corrupt-", 0) == 0;
  }
  EXPECT_GE(aside, 1);  // same-second names overwrite each other; at least one is kept
}

// Issue 20: the volume label is one more key; a file written before it loads as it did.
TEST_F(SettingsStoreTest, TheVolumeIsKeptAndAnOlderFileStillLoads) {
  fs::create_directories(fs::path(path_).parent_path());
  { std::ofstream(path_) << "# umpath head settings v1\nnguid-01 delayed_removal_secs=30 export=true\n"; }
  ASSERT_OK_AND_ASSIGN(auto store, SettingsStore::Open(path_));
  EXPECT_TRUE(store->problem().empty()) << store->problem();
  ASSERT_EQ(store->size(), 1u);
  EXPECT_FALSE(store->Lookup("nguid-01")->volume.has_value());
  HeadSettings patch;
  patch.volume = "pv-123";
  ASSERT_OK(store->Merge("nguid-01", patch));
  ASSERT_OK_AND_ASSIGN(auto again, SettingsStore::Open(path_));
  std::optional<HeadSettings> s = again->Lookup("nguid-01");
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->volume, "pv-123");
  EXPECT_EQ(s->delayed_removal_secs, 30u);
  EXPECT_EQ(s->export_wanted, true);
  patch.volume = "";  // removes it
  ASSERT_OK(again->Merge("nguid-01", patch));
  ASSERT_OK_AND_ASSIGN(auto cleared, SettingsStore::Open(path_));
  EXPECT_FALSE(cleared->Lookup("nguid-01")->volume.has_value());
  // A value the API would refuse makes the file corrupt, as any other.
  { std::ofstream(path_) << "# umpath head settings v1\nnguid-01 volume=pv|123\n"; }
  ASSERT_OK_AND_ASSIGN(auto bad, SettingsStore::Open(path_));
  EXPECT_THAT(bad->problem(), HasSubstr("set aside"));
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
    grpc::ClientContext c3;
    v1::SetIoFailTimeoutRequest fr;
    fr.set_name("heads/" + head);
    fr.set_io_fail_timeout_secs(25);
    v1::SetIoFailTimeoutResponse frr;
    ASSERT_TRUE(stub->SetIoFailTimeout(&c3, fr, &frr).ok());
    ASSERT_OK(store->last_save());
    server->Shutdown();
  }
  ASSERT_OK_AND_ASSIGN(auto store, SettingsStore::Open(path_));
  auto mp = boot(store.get());
  ASSERT_OK_AND_ASSIGN(HeadInfo info, mp->GetHead(head));
  EXPECT_EQ(info.delayed_removal_secs, 120u);
  EXPECT_EQ(info.policy, IoPolicy::kQueueDepth);
  EXPECT_EQ(info.io_fail_timeout_secs, 25u);
  // Another head is untouched by it.
  EXPECT_EQ(mp->GetDefaults().delayed_removal_secs, 0u);
}

// Item 8, through the real server: a set whose save fails tells its caller (before, it
// answered OK and the setting was silently lost at the next restart), the head keeps
// the setting, and the next save that succeeds writes it.
TEST_F(SettingsStoreTest, ASaveThatFailsReachesTheCallerOfTheSet) {
  ASSERT_NO_FATAL_FAILURE(StartApi());
  // The temporary file cannot be made: a directory is in its place.
  const std::string tmp = dir_ + "/state/.heads.tmp";
  fs::create_directories(tmp);
  grpc::Status s = SetDelay(77);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(s.error_message(), HasSubstr("in effect but was not saved"));
  EXPECT_THAT(s.error_message(), HasSubstr("/state/heads: Is a directory"));
  EXPECT_EQ(mp_->GetHead(kHead)->delayed_removal_secs, 77u);
  EXPECT_FALSE(store_->last_save().ok());
  fs::remove(tmp);
  ASSERT_TRUE(SetDelay(77).ok());
  ASSERT_OK_AND_ASSIGN(auto again, SettingsStore::Open(path_));
  ASSERT_TRUE(again->Lookup(kHead).has_value());
  EXPECT_EQ(again->Lookup(kHead)->delayed_removal_secs, 77u);
}

// Item 8: two sets at once never leave the older value on disk. Before, Persist read the
// head outside the store's lock: a save could write what a later set had replaced.
TEST_F(SettingsStoreTest, ConcurrentSetsPersistTheNewestValue) {
  ASSERT_NO_FATAL_FAILURE(StartApi());
  int stale = 0;
  for (int round = 0; round < 200; ++round) {
    std::atomic<int> ready{0};
    auto racer = [&](uint32_t secs) {
      ready.fetch_add(1);
      while (ready.load() < 2) {
      }
      EXPECT_TRUE(SetDelay(secs).ok());
    };
    std::thread a(racer, 1000 + 2 * round);
    std::thread b(racer, 1001 + 2 * round);
    a.join();
    b.join();
    ASSERT_OK_AND_ASSIGN(auto saved, SettingsStore::Open(path_));
    stale += saved->Lookup(kHead)->delayed_removal_secs != mp_->GetHead(kHead)->delayed_removal_secs;
  }
  EXPECT_EQ(stale, 0) << "rounds whose file kept the older value";
}

}  // namespace
}  // namespace umpath::server
