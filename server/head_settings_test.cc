// UpdateHeadSettings, ListHeadSettings and DeleteHeadSettings through the real server
// over a real settings file: settings kept before a head's first path apply the moment
// it appears, survive a restart, and bad calls change nothing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/settings_store.h"
#include "server/testing/server_test.h"

namespace umpath::server {
namespace {

using ::testing::HasSubstr;

class HeadSettingsTest : public ServerTest {
 protected:
  void SetUp() override {
    ServerTest::SetUp();
    OpenStore();
  }
  // The agent's wiring: the core takes a new head's settings from the store.
  void OpenStore() {
    server_.reset();
    mp_.reset();
    ASSERT_OK_AND_ASSIGN(store_, SettingsStore::Open(dir_ + "/settings"));
    settings_ = store_.get();
    MultipathOptions mo;
    mo.journal_capacity = 64;
    mo.initial_settings = [s = store_.get()](absl::string_view head) { return s->Lookup(head); };
    ASSERT_OK_AND_ASSIGN(mp_, Multipath::Create(mo));
    ASSERT_OK(testing::AddTestTopology(mp_.get(), 2, 3));
  }
  grpc::Status Update(const v1::HeadSettings& in, bool allow_missing, v1::HeadSettings* out = nullptr) {
    v1::UpdateHeadSettingsRequest req;
    *req.mutable_settings() = in;
    req.set_allow_missing(allow_missing);
    v1::UpdateHeadSettingsResponse resp;
    grpc::Status s = Call(&v1::MultipathControl::Stub::UpdateHeadSettings, req, &resp);
    if (out != nullptr) *out = resp.settings();
    return s;
  }
  std::vector<v1::HeadSettings> List(int page_size = 0) {
    v1::ListHeadSettingsRequest req;
    req.set_page_size(page_size);
    std::vector<v1::HeadSettings> all;
    do {
      v1::ListHeadSettingsResponse resp;
      EXPECT_TRUE(Call(&v1::MultipathControl::Stub::ListHeadSettings, req, &resp).ok());
      all.insert(all.end(), resp.settings().begin(), resp.settings().end());
      req.set_page_token(resp.next_page_token());
    } while (!req.page_token().empty());
    return all;
  }
  grpc::Status Delete(const std::string& name) {
    v1::DeleteHeadSettingsRequest req;
    req.set_name(name);
    v1::DeleteHeadSettingsResponse resp;
    return Call(&v1::MultipathControl::Stub::DeleteHeadSettings, req, &resp);
  }
  static v1::HeadSettings Wanted(const std::string& head) {
    v1::HeadSettings s;
    s.set_name(head + "/settings");
    s.set_delayed_removal_secs(30);
    s.set_io_policy(v1::IO_POLICY_ROUND_ROBIN);
    s.set_io_fail_timeout_secs(5);
    return s;
  }
  const std::string head4_ = "heads/nguid-ab000000000000000000000000000004";
  std::unique_ptr<SettingsStore> store_;
};

TEST_F(HeadSettingsTest, SettingsKeptBeforeTheFirstPathApplyTheMomentTheHeadAppears) {
  Start();
  v1::HeadSettings kept;
  ASSERT_TRUE(Update(Wanted(head4_), /*allow_missing=*/true, &kept).ok());
  EXPECT_FALSE(kept.head_present());
  EXPECT_EQ(kept.delayed_removal_secs(), 30u);
  ASSERT_OK(testing::AddTestNamespace(mp_.get(), 2, 4));
  const v1::Head h = GetHead(head4_);
  EXPECT_EQ(h.delayed_removal_secs(), 30u) << "from its creation: a blip now is ridden out";
  EXPECT_EQ(h.io_policy(), v1::IO_POLICY_ROUND_ROBIN);
  EXPECT_EQ(h.io_fail_timeout_secs(), 5u);
  // A restart: the file has them, and the head, gone and back, takes them again.
  OpenStore();
  Start();
  ASSERT_OK(testing::AddTestNamespace(mp_.get(), 2, 4));
  EXPECT_EQ(GetHead(head4_).delayed_removal_secs(), 30u);
  std::vector<v1::HeadSettings> all = List();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].name(), head4_ + "/settings");
  EXPECT_TRUE(all[0].head_present());
}

TEST_F(HeadSettingsTest, WithoutAllowMissingAnAbsentHeadIsNotFoundAndNothingIsKept) {
  Start();
  grpc::Status s = Update(Wanted(head4_), /*allow_missing=*/false);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("allow_missing"));
  EXPECT_TRUE(List().empty());
  ASSERT_OK(testing::AddTestNamespace(mp_.get(), 2, 4));
  EXPECT_EQ(GetHead(head4_).delayed_removal_secs(), 0u);
}

TEST_F(HeadSettingsTest, AnUpdateOfAPresentHeadAppliesAtOnceAndKeepsWhatItDoesNotName) {
  Start();
  v1::HeadSettings first;
  first.set_name(head_ + "/settings");
  first.set_delayed_removal_secs(60);
  ASSERT_TRUE(Update(first, false).ok());
  EXPECT_EQ(GetHead(head_).delayed_removal_secs(), 60u);
  v1::HeadSettings second;
  second.set_name(head_ + "/settings");
  second.set_io_fail_timeout_secs(7);
  v1::HeadSettings kept;
  ASSERT_TRUE(Update(second, false, &kept).ok());
  EXPECT_TRUE(kept.head_present());
  EXPECT_EQ(kept.delayed_removal_secs(), 60u);
  EXPECT_EQ(kept.io_fail_timeout_secs(), 7u);
  EXPECT_EQ(GetHead(head_).io_fail_timeout_secs(), 7u);
}

TEST_F(HeadSettingsTest, ListingIsByPagesAndForgettingIsIdempotent) {
  Start();
  for (int nsid = 4; nsid <= 8; ++nsid) {
    v1::HeadSettings s = Wanted(absl::StrCat("heads/nguid-ab0000000000000000000000000000", absl::Hex(nsid, absl::kZeroPad2)));
    ASSERT_TRUE(Update(s, true).ok());
  }
  std::vector<v1::HeadSettings> all = List(/*page_size=*/2);
  ASSERT_EQ(all.size(), 5u);
  EXPECT_EQ(all[0].name(), head4_ + "/settings");
  ASSERT_TRUE(Delete(head4_ + "/settings").ok());
  EXPECT_TRUE(Delete(head4_ + "/settings").ok()) << "forgetting what is not kept is OK";
  EXPECT_EQ(List().size(), 4u);
  ASSERT_OK(testing::AddTestNamespace(mp_.get(), 2, 4));
  EXPECT_EQ(GetHead(head4_).delayed_removal_secs(), 0u) << "forgotten: the defaults";
}

TEST_F(HeadSettingsTest, BadUpdatesAreRefusedAndChangeNothing) {
  Start();
  auto refused = [&](const v1::HeadSettings& in, grpc::StatusCode code, const std::string& says) {
    grpc::Status s = Update(in, true);
    EXPECT_EQ(s.error_code(), code) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(says));
  };
  v1::HeadSettings s = Wanted(head4_);
  s.set_name(head4_);
  refused(s, grpc::StatusCode::INVALID_ARGUMENT, "expected heads/{head}/settings");
  s = Wanted(head4_);
  s.set_delayed_removal_secs(86401);
  refused(s, grpc::StatusCode::INVALID_ARGUMENT, "0..86400");
  s = Wanted(head4_);
  s.set_io_policy(v1::IO_POLICY_UNSPECIFIED);
  refused(s, grpc::StatusCode::INVALID_ARGUMENT, "policy");
  v1::HeadSettings empty;
  empty.set_name(head4_ + "/settings");
  refused(empty, grpc::StatusCode::INVALID_ARGUMENT, "nothing to update");
  v1::HeadSettings exp;
  exp.set_name(head4_ + "/settings");
  exp.set_export_(true);
  refused(exp, grpc::StatusCode::FAILED_PRECONDITION, "ublk frontend");
  EXPECT_TRUE(List().empty());
  EXPECT_EQ(Delete("heads/a/b/settings").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(HeadSettingsTest, AViewerMayListButNotUpdateOrForget) {
  Start(Self(Role::kViewer));
  EXPECT_EQ(Update(Wanted(head4_), true).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Delete(head4_ + "/settings").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(List().empty());
}

// SEMANTICS 12: 0 during a pending removal removes the head now. The call did what it
// was asked, so it answers OK with the head as it went (it answered NOT_FOUND, reading
// the head back after removing it), and the kept settings take the 0.
TEST_F(HeadSettingsTest, ZeroDuringAPendingRemovalRemovesTheHeadAndSaysSo) {
  Start();
  const std::string head1 = "heads/nguid-ab000000000000000000000000000001";
  v1::SetDelayedRemovalRequest req;
  req.set_name(head1);
  req.set_delayed_removal_secs(30);
  v1::SetDelayedRemovalResponse resp;
  ASSERT_TRUE(Call(&v1::MultipathControl::Stub::SetDelayedRemoval, req, &resp).ok());
  ASSERT_OK(mp_->RemovePath("c0", 1));
  ASSERT_OK(mp_->RemovePath("c1", 1));
  ASSERT_TRUE(GetHead(head1).removal_pending());

  req.set_delayed_removal_secs(0);
  const grpc::Status s = Call(&v1::MultipathControl::Stub::SetDelayedRemoval, req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
  EXPECT_EQ(resp.head().name(), head1);
  EXPECT_EQ(resp.head().delayed_removal_secs(), 0u);
  EXPECT_FALSE(resp.head().removal_pending());
  EXPECT_EQ(resp.head().paths_size(), 0);

  v1::GetHeadRequest get;
  get.set_name(head1);
  v1::GetHeadResponse got;
  EXPECT_EQ(Call(&v1::MultipathControl::Stub::GetHead, get, &got).error_code(), grpc::StatusCode::NOT_FOUND);
  bool kept = false;
  for (const v1::HeadSettings& k : List()) {
    if (k.name() != head1 + "/settings") continue;
    kept = true;
    EXPECT_EQ(k.delayed_removal_secs(), 0u) << "a head that comes back finds what was set last";
  }
  EXPECT_TRUE(kept);
  // Once gone, the head is not there to set.
  EXPECT_EQ(Call(&v1::MultipathControl::Stub::SetDelayedRemoval, req, &resp).error_code(),
            grpc::StatusCode::NOT_FOUND);
}
}  // namespace
}  // namespace umpath::server
