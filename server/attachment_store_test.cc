#include "server/attachment_store.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "agent/base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace umpath::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;

class AttachmentStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/umpath-attach-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/state/heads.controllers";
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Text() {
    std::ifstream in(path_);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  std::string dir_, path_;
};

ControllerOps::AttachSpec Tcp(const std::string& nqn) { return {"tcp", "10.0.0.2", "4420", nqn}; }

// A restart connects again with the options the attach gave (a path pinned to a NIC
// stays pinned); key files by path only.
TEST_F(AttachmentStoreTest, RemembersFabricsOptions) {
  ControllerOps::AttachSpec spec = Tcp("nqn.2014-08.org.example:vol7");
  spec.fabrics.ctrl_loss_tmo_secs = -1;
  spec.fabrics.reconnect_delay_secs = 3;
  spec.fabrics.keep_alive_tmo_secs = 7;
  spec.fabrics.host_traddr = "10.0.1.1";
  spec.fabrics.dhchap_secret_file = "/etc/umpath/keys/vol7";
  {
    ASSERT_OK_AND_ASSIGN(auto s, AttachmentStore::Open(path_));
    ASSERT_OK(s->Remember("nvme5", spec));
  }
  EXPECT_THAT(Text(), HasSubstr("nvme5 transport=tcp address=10.0.0.2 service=4420 "
                                "subsystem_nqn=nqn.2014-08.org.example:vol7 ctrl_loss_tmo_secs=-1 "
                                "reconnect_delay_secs=3 keep_alive_tmo_secs=7 host_traddr=10.0.1.1 "
                                "dhchap_secret_file=/etc/umpath/keys/vol7\n"));
  ASSERT_OK_AND_ASSIGN(auto s, AttachmentStore::Open(path_));
  EXPECT_TRUE(s->problem().empty()) << s->problem();
  std::vector<AttachmentStore::Entry> e = s->List();
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].spec.fabrics.ToString(), spec.fabrics.ToString());
  EXPECT_EQ(e[0].spec.fabrics.ctrl_loss_tmo_secs, -1);
  // Other options: a change is saved.
  spec.fabrics.host_traddr = "10.0.2.1";
  ASSERT_OK(s->Remember("nvme5", spec));
  EXPECT_THAT(Text(), HasSubstr("host_traddr=10.0.2.1"));
}

TEST_F(AttachmentStoreTest, RemembersAcrossAReopenAndForgets) {
  {
    ASSERT_OK_AND_ASSIGN(auto s, AttachmentStore::Open(path_));
    EXPECT_TRUE(s->List().empty());
    ASSERT_OK(s->Remember("0000:01:00.0", {"pcie", "0000:01:00.0", "", ""}));
    ASSERT_OK(s->Remember("nvme4", Tcp("nqn.2014-08.org.example:vol7")));
  }
  EXPECT_EQ(Text(),
            "# umpath attached controllers v1\n"
            "0000:01:00.0 transport=pcie address=0000:01:00.0\n"
            "nvme4 transport=tcp address=10.0.0.2 service=4420 subsystem_nqn=nqn.2014-08.org.example:vol7\n");
  ASSERT_OK_AND_ASSIGN(auto s, AttachmentStore::Open(path_));
  EXPECT_TRUE(s->problem().empty());
  std::vector<AttachmentStore::Entry> e = s->List();
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e[1].name, "nvme4");
  EXPECT_EQ(e[1].spec.transport, "tcp");
  EXPECT_EQ(e[1].spec.service, "4420");
  EXPECT_EQ(e[1].spec.subsystem_nqn, "nqn.2014-08.org.example:vol7");
  EXPECT_TRUE(s->Has("0000:01:00.0"));
  ASSERT_OK(s->Forget("0000:01:00.0"));
  ASSERT_OK(s->Forget("never-there"));
  EXPECT_FALSE(s->Has("0000:01:00.0"));
  EXPECT_THAT(Text(), Not(HasSubstr("pcie")));
}

TEST_F(AttachmentStoreTest, WhatALineCannotHoldIsRefusedAndNothingChanges) {
  ASSERT_OK_AND_ASSIGN(auto s, AttachmentStore::Open(path_));
  ASSERT_OK(s->Remember("nvme4", Tcp("nqn.a")));
  const std::string before = Text();
  for (const std::string& bad : {std::string("nqn with blank"), std::string("nqn=x"), std::string("nqn\nx")}) {
    absl::Status st = s->Remember("nvme5", Tcp(bad));
    EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
    EXPECT_THAT(st.message(), HasSubstr("cannot be remembered"));
  }
  EXPECT_FALSE(s->Remember("", Tcp("nqn.a")).ok());
  EXPECT_EQ(Text(), before);
  EXPECT_FALSE(s->Has("nvme5"));
}

TEST_F(AttachmentStoreTest, ABadFileIsSetAsideAndTheStoreStartsEmpty) {
  fs::create_directories(fs::path(path_).parent_path());
  std::ofstream(path_) << "# umpath attached controllers v1\nnvme4 transport=tcp colour=blue\n";
  ASSERT_OK_AND_ASSIGN(auto s, AttachmentStore::Open(path_));
  EXPECT_TRUE(s->List().empty());
  EXPECT_THAT(s->problem(), HasSubstr("line 2: unknown field \"colour=blue\""));
  EXPECT_THAT(s->problem(), HasSubstr("set aside as " + path_ + ".corrupt-"));
  EXPECT_FALSE(fs::exists(path_));
  std::ofstream(path_) << "# umpath attached controllers v1\nnvme4 service=4420\n";
  ASSERT_OK_AND_ASSIGN(auto s2, AttachmentStore::Open(path_));
  EXPECT_THAT(s2->problem(), HasSubstr("needs a transport and an address"));
}

}  // namespace
}  // namespace umpath::server
