// issue 19 item 6: /dev/disk/by-id/umpath-<head> kept by the exporter. ByIdLinks on a
// temporary directory, then the exporter keeping a head's link across unexport, export
// again, a hand-over and the next agent's take-over, with a fake ublk driver.

#include "agent/export/by_id_links.h"

#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "agent/export/testing/exporter_fixture.h"

namespace umpath::ublk {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// Where a link leads, read lexically (the devices are not there in a test).
std::string Resolved(const std::string& link) {
  std::error_code ec;
  if (!fs::is_symlink(link, ec)) return "";
  return (fs::path(link).parent_path() / fs::read_symlink(link, ec)).lexically_normal().string();
}

class ByIdLinksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/by_id_links_test." + std::to_string(getpid()) + "/dev/disk/by-id";
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::vector<std::string> logged_;
  std::string dir_;
  ByIdLinks links_{"", nullptr};
  ByIdLinks Links() {
    return ByIdLinks(dir_, [this](const std::string& line) { logged_.push_back(line); });
  }
};

TEST_F(ByIdLinksTest, AHeadIdNamesOneFileOrNoLink) {
  ByIdLinks l = Links();
  // Head ids carry ':' and '.' (ns.<NQN>.<nsid>): fine in a file name.
  EXPECT_EQ(l.PathFor("ns.nqn.2014-08.org.example:vol1.1").value_or(""),
            dir_ + "/umpath-ns.nqn.2014-08.org.example:vol1.1");
  EXPECT_EQ(l.PathFor("..").value_or(""), dir_ + "/umpath-..");  // the prefix makes it a name
  EXPECT_FALSE(l.PathFor("a/b").ok());
  EXPECT_FALSE(l.PathFor("").ok());
  EXPECT_FALSE(l.PathFor(std::string("a\0b", 3)).ok());
  EXPECT_TRUE(l.PathFor(std::string(255 - 7, 'x')).ok());
  EXPECT_FALSE(l.PathFor(std::string(256 - 7, 'x')).ok());
  // Refused with a reason in the log, and nothing made.
  EXPECT_EQ(l.Link("nqn/with/slashes", "/dev/ublkb0"), "");
  ASSERT_EQ(logged_.size(), 1u);
  EXPECT_THAT(logged_[0], HasSubstr("no by-id link for /dev/ublkb0: head id \"nqn/with/slashes\" cannot name a file"));
  EXPECT_FALSE(fs::exists(dir_ + "/umpath-nqn"));
}

TEST_F(ByIdLinksTest, ALinkIsRelativeAndAWrongOneIsReplaced) {
  ByIdLinks l = Links();
  const std::string path = l.Link("nguid-1", "/dev/ublkb0");  // the directory is made too
  ASSERT_EQ(path, dir_ + "/umpath-nguid-1");
  EXPECT_EQ(Resolved(path), "/dev/ublkb0");
  fs::remove(path);
  fs::create_symlink("../../ublkb7", path);  // left by a crash: another number
  EXPECT_EQ(l.Link("nguid-1", "/dev/ublkb0"), path);
  EXPECT_EQ(Resolved(path), "/dev/ublkb0");
  // No temporary name is left behind.
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_)) ++entries;
  EXPECT_EQ(entries, 1);
}

TEST_F(ByIdLinksTest, UnlinkTakesOnlyALinkToItsDevice) {
  ByIdLinks l = Links();
  const std::string path = l.Link("nguid-1", "/dev/ublkb0");
  l.Unlink("nguid-1", "/dev/ublkb1");  // not its device
  EXPECT_EQ(Resolved(path), "/dev/ublkb0");
  l.Unlink("nguid-1", "/dev/ublkb0");
  EXPECT_FALSE(fs::exists(fs::symlink_status(path)));
  l.Unlink("nguid-1", "/dev/ublkb0");  // gone already: nothing to do
}

TEST_F(ByIdLinksTest, TheSweepKeepsAndRepairsWhatLeftDevicesBackAndRemovesTheRest) {
  ByIdLinks l = Links();
  l.Link("kept", "/dev/ublkb2");
  l.Link("wrong", "/dev/ublkb9");
  l.Link("stale", "/dev/ublkb0");
  std::ofstream(dir_ + "/nvme-other");  // udev's, not ours
  l.Sweep({{"kept", "/dev/ublkb2"}, {"wrong", "/dev/ublkb3"}});
  EXPECT_EQ(Resolved(dir_ + "/umpath-kept"), "/dev/ublkb2");
  EXPECT_EQ(Resolved(dir_ + "/umpath-wrong"), "/dev/ublkb3");
  EXPECT_FALSE(fs::exists(fs::symlink_status(dir_ + "/umpath-stale")));
  EXPECT_TRUE(fs::exists(dir_ + "/nvme-other"));
}

TEST_F(ByIdLinksTest, WithoutADirectoryNothingIsDone) {
  EXPECT_FALSE(links_.enabled());
  EXPECT_EQ(links_.Link("nguid-1", "/dev/ublkb0"), "");
}

class ExporterLinksTest : public ExporterTest {
 protected:
  void SetUp() override {
    ExporterTest::SetUp();
    by_id_dir_ = state_dir_ + ".dev/disk/by-id";
    fs::remove_all(state_dir_ + ".dev");
  }
  void TearDown() override {
    ExporterTest::TearDown();
    fs::remove_all(state_dir_ + ".dev");
  }
  std::string LinkOf(const std::string& head) { return by_id_dir_ + "/umpath-" + head; }
};

// The head's link names its device while it is exported, goes before the device, and
// names the new device after an export again (another number, another diskseq); the
// head reports what the export answered.
TEST_F(ExporterLinksTest, TheLinkFollowsTheHeadAcrossUnexportAndExportAgain) {
  Make();
  const std::string h = Head("c0", 1), other = Head("c0", 2);
  ASSERT_OK_AND_ASSIGN(ExportedDevice first, ExportDevice(h));
  EXPECT_EQ(first.path, "/dev/ublkb0");
  EXPECT_EQ(first.ids.by_id_link, LinkOf(h));
  EXPECT_EQ(Resolved(LinkOf(h)), "/dev/ublkb0");
  EXPECT_EQ(first.ids.major, 259u);
  EXPECT_EQ(first.ids.minor, 0u);
  EXPECT_EQ(first.ids.diskseq, ublk_->DiskSeq(0));
  ASSERT_OK_AND_ASSIGN(HeadInfo info, mp_->GetHead(h));
  EXPECT_EQ(info.export_ids, first.ids);
  ASSERT_OK_AND_ASSIGN(ExportedDevice again, ExportDevice(h));  // idempotent, all of it
  EXPECT_EQ(again.ids, first.ids);

  ASSERT_OK(Unexport(h));
  EXPECT_FALSE(fs::exists(fs::symlink_status(LinkOf(h))));
  ASSERT_OK_AND_ASSIGN(info, mp_->GetHead(h));
  EXPECT_EQ(info.export_ids, BlockDeviceIds{});

  // Another head gets the number; the head's next device is another.
  ASSERT_OK_AND_ASSIGN(ExportedDevice taken, ExportDevice(other));
  EXPECT_EQ(taken.path, "/dev/ublkb0");
  ASSERT_OK_AND_ASSIGN(ExportedDevice second, ExportDevice(h));
  EXPECT_EQ(second.path, "/dev/ublkb1");
  EXPECT_EQ(Resolved(LinkOf(h)), "/dev/ublkb1");
  EXPECT_EQ(Resolved(LinkOf(other)), "/dev/ublkb0");
  EXPECT_NE(second.ids.diskseq, first.ids.diskseq);
  EXPECT_NE(taken.ids.diskseq, first.ids.diskseq);  // the same number, not the same disk

  // The head goes: its device and its link with it.
  ASSERT_OK(mp_->RemoveController("c0", "test"));
  ASSERT_TRUE(Await([&] { return !ublk_->Has(0) && !ublk_->Has(1); })) << ublk_->Calls();
  EXPECT_FALSE(fs::exists(fs::symlink_status(LinkOf(h))));
  EXPECT_FALSE(fs::exists(fs::symlink_status(LinkOf(other))));
}

TEST_F(ExporterLinksTest, AWrongLinkIsRepairedAtExport) {
  Make();
  const std::string h = Head();
  fs::create_directories(by_id_dir_);
  fs::create_symlink("../../ublkb7", LinkOf(h));  // made behind the agent's back
  ASSERT_OK_AND_ASSIGN(ExportedDevice d, ExportDevice(h));
  EXPECT_EQ(Resolved(LinkOf(h)), "/dev/ublkb0");
  EXPECT_EQ(d.ids.by_id_link, LinkOf(h));
}

// A hand-over leaves the link with the device; the next agent keeps it (a link that
// names the wrong number is repaired), takes the device over and answers the same
// diskseq; a link no left device backs is removed as the agent starts.
TEST_F(ExporterLinksTest, AHandOverKeepsTheLinkAndTheNextAgentTakesItOver) {
  Make();
  const std::string h = Head();
  ASSERT_OK(Export(h));
  ASSERT_OK(BeginStop(StopMode::kHandOver));
  plane_->Stop();
  ex_->Shutdown();
  EXPECT_EQ(Resolved(LinkOf(h)), "/dev/ublkb0");

  // The next agent, on a device 5 left with its record and a link to another number.
  ex_.reset();
  ASSERT_OK_AND_ASSIGN(plane_, ControlPlane::Create(&clock_));
  plane_->Start();
  ASSERT_OK(mp_->RemoveController("c0", "the agent restarts"));
  Run();
  fs::remove(state_dir_ + "/0");
  WriteRecord(5, h);
  fs::remove(LinkOf(h));
  fs::create_symlink("../../ublkb0", LinkOf(h));
  fs::create_symlink("../../ublkb1", LinkOf("nguid-stale"));
  before_create_ = [](FakeUblk& u) { u.Leave(5, 4242, kSectors); };
  Make();
  EXPECT_EQ(Resolved(LinkOf(h)), "/dev/ublkb5");  // repaired before the head is back
  EXPECT_FALSE(fs::exists(fs::symlink_status(LinkOf("nguid-stale"))));
  const uint64_t diskseq = ublk_->DiskSeq(5);
  backends_.erase("c0");
  Head();
  ASSERT_TRUE(Await([&] { return HasExportEvent(h, "/dev/ublkb5 taken over"); }));
  ASSERT_OK_AND_ASSIGN(ExportedDevice d, ExportDevice(h));
  EXPECT_EQ(d.path, "/dev/ublkb5");
  EXPECT_EQ(d.ids.diskseq, diskseq);
  EXPECT_EQ(d.ids.by_id_link, LinkOf(h));
  EXPECT_EQ(Resolved(LinkOf(h)), "/dev/ublkb5");
  ASSERT_OK_AND_ASSIGN(HeadInfo info, mp_->GetHead(h));
  EXPECT_EQ(info.export_ids, d.ids);
}

// A device left by the last run whose head never comes is removed, and its link first.
TEST_F(ExporterLinksTest, ALeftDeviceRemovedTakesItsLink) {
  WriteRecord(7, "nguid.gone");
  fs::create_directories(by_id_dir_);
  fs::create_symlink("../../ublkb7", LinkOf("nguid.gone"));
  before_create_ = [](FakeUblk& u) { u.Leave(7, 4242, kSectors); };
  Make();
  EXPECT_EQ(Resolved(LinkOf("nguid.gone")), "/dev/ublkb7");
  // As ExporterTest.ALeftDeviceWhoseHeadNeverComesIsRemovedAfterTheWait: the control
  // thread looks once before the wait ends (one jump past it failed 2 runs in 3 under
  // ASan), then the wait ends.
  AdvanceSeconds(29);
  plane_->Run([] {});
  plane_->Run([] {});
  EXPECT_TRUE(ublk_->Has(7));
  AdvanceSeconds(2);
  ASSERT_TRUE(Await([&] { return !ublk_->Has(7); })) << ublk_->Calls();
  EXPECT_FALSE(fs::exists(fs::symlink_status(LinkOf("nguid.gone"))));
}

}  // namespace
}  // namespace umpath::ublk
