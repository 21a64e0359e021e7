// The vfio backend's use of sysfs, against a tree of the test's own (the sysfs_root
// seam): which functions are NVMe, which addresses are refused before anything is
// touched, and what a bind writes. And the uevents it follows, through a socket pair
// standing in for the kernel's (the uevents seam).

#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agent/base/status_matchers.h"
#include "agent/base/uevent.h"
#include "agent/vfio/vfio_manager.h"

namespace umpath::vfio {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class SysfsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = ::testing::TempDir() + "/vfio_sysfs_test." + std::to_string(getpid()) + "." +
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(root_);
    fs::create_directories(root_ + "/bus/pci/devices");
    Write("bus/pci/drivers_probe", "");
  }
  void TearDown() override { fs::remove_all(root_); }

  void Write(const std::string& rel, const std::string& text) {
    fs::create_directories(fs::path(root_ + "/" + rel).parent_path());
    std::ofstream(root_ + "/" + rel) << text;
  }
  std::string Read(const std::string& rel) {
    std::ifstream in(root_ + "/" + rel);
    std::string s;
    std::getline(in, s);
    return s;
  }
  // A function of `cls` bound to `driver` (none when empty).
  void Function(const std::string& bdf, const std::string& cls, const std::string& driver) {
    Write("bus/pci/devices/" + bdf + "/class", cls + "\n");
    Write("bus/pci/devices/" + bdf + "/driver_override", "(null)\n");
    if (driver.empty()) return;
    Write("bus/pci/drivers/" + driver + "/unbind", "");
    fs::create_directory_symlink("../../drivers/" + driver,
                                 root_ + "/bus/pci/devices/" + bdf + "/driver");
  }

  std::string root_;
};

TEST_F(SysfsTest, OnlyNvmeFunctionsAreListed) {
  Function("0000:02:00.0", "0x010802", "nvme");
  Function("0000:01:00.0", "0x010802", "vfio-pci");
  Function("0000:00:03.0", "0x020000", "e1000");  // a NIC
  Function("0000:00:1f.2", "0x010601", "ahci");   // SATA
  EXPECT_THAT(ListNvmeFunctions(root_), ElementsAre("0000:01:00.0", "0000:02:00.0"));
}

TEST_F(SysfsTest, WhatIsNotAPciAddressIsRefusedBeforeAnythingIsRead) {
  for (const std::string bad : {"../../../../etc", "0000:01:00.0/../../x", "0000:01:00", "01:00.0",
                                "0000:01:00.8", "0000:01:20.0", "zzzz:01:00.0", ""}) {
    absl::Status s = BindToVfio(bad, root_);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad << ": " << s;
    EXPECT_THAT(s.message(), HasSubstr("is not a PCI address")) << bad;
    EXPECT_EQ(CheckNvmeFunction(bad, root_).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_TRUE(IsPciAddress("0000:01:00.0"));
  EXPECT_TRUE(IsPciAddress("abcd:ff:1f.7"));
}

TEST_F(SysfsTest, AFunctionThatIsNotNvmeKeepsItsDriver) {
  Function("0000:00:03.0", "0x020000", "e1000");
  absl::Status s = BindToVfio("0000:00:03.0", root_);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr("is not an NVMe controller (PCI class 0x020000"));
  EXPECT_EQ(Read("bus/pci/drivers/e1000/unbind"), "");
  EXPECT_EQ(Read("bus/pci/devices/0000:00:03.0/driver_override"), "(null)");
  EXPECT_EQ(Read("bus/pci/drivers_probe"), "");
}

TEST_F(SysfsTest, AnAbsentFunctionIsNotFound) {
  EXPECT_TRUE(absl::IsNotFound(BindToVfio("0000:09:00.0", root_)));
}

TEST_F(SysfsTest, AFunctionOnVfioIsLeftAsItIs) {
  Function("0000:01:00.0", "0x010802", "vfio-pci");
  EXPECT_OK(BindToVfio("0000:01:00.0", root_));
  EXPECT_EQ(Read("bus/pci/devices/0000:01:00.0/driver_override"), "(null)");
  EXPECT_EQ(Read("bus/pci/drivers/vfio-pci/unbind"), "");
}

TEST_F(SysfsTest, ABindLetsGoOfTheDriverAndAsksForVfio) {
  Function("0000:02:00.0", "0x010802", "nvme");
  // This tree has no kernel behind it: nvme keeps the function, and the bind says so.
  absl::Status s = BindToVfio("0000:02:00.0", root_);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr("did not bind to vfio-pci (it had nvme"));
  EXPECT_EQ(Read("bus/pci/drivers/nvme/unbind"), "0000:02:00.0");
  EXPECT_EQ(Read("bus/pci/devices/0000:02:00.0/driver_override"), "vfio-pci");
  EXPECT_EQ(Read("bus/pci/drivers_probe"), "0000:02:00.0");
}

// Issue 17 item 2: AttachController with --bind_vfio took any address it was given. Now
// an address that is not one, a NIC, and an NVMe function this agent was not configured
// with are refused before anything in sysfs is written (the NIC keeps its driver, the
// other node's disk its nvme driver). INVALID_ARGUMENT for what is not an address (the
// request is wrong whatever the node has); FAILED_PRECONDITION for a real function this
// agent may not take (AIP-193: the caller may well be an admin, PERMISSION_DENIED would
// say otherwise; the node's configuration has to change first).
TEST_F(SysfsTest, AttachTakesOnlyConfiguredOrAllowedNvmeFunctionsAndWritesNothingElse) {
  Function("0000:01:00.0", "0x010802", "vfio-pci");  // configured
  Function("0000:02:00.0", "0x010802", "nvme");      // another NVMe function, in use
  Function("0000:00:03.0", "0x020000", "e1000");     // a NIC
  VfioManagerOptions o;
  o.devices = {"0000:01:00.0"};
  o.bind = true;
  o.sysfs_root = root_;
  auto nothing_written = [&](const std::string& what) {
    EXPECT_EQ(Read("bus/pci/drivers/nvme/unbind"), "") << what;
    EXPECT_EQ(Read("bus/pci/drivers/e1000/unbind"), "") << what;
    EXPECT_EQ(Read("bus/pci/devices/0000:02:00.0/driver_override"), "(null)") << what;
    EXPECT_EQ(Read("bus/pci/devices/0000:00:03.0/driver_override"), "(null)") << what;
    EXPECT_EQ(Read("bus/pci/drivers_probe"), "") << what;
  };
  for (const std::string bad : {"../../../../etc", "0000:02:00.0/../../../0000:00:03.0", "../0000:02:00.0"}) {
    absl::Status s = PrepareFunction(bad, o);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad << ": " << s;
    nothing_written(bad);
  }
  for (const std::string unconfigured : {"0000:02:00.0", "0000:00:03.0"}) {
    absl::Status s = PrepareFunction(unconfigured, o);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << unconfigured << ": " << s;
    EXPECT_THAT(s.message(), HasSubstr("is not one of this agent's functions")) << unconfigured;
    nothing_written(unconfigured);
  }
  EXPECT_OK(PrepareFunction("0000:01:00.0", o));
  nothing_written("the configured function, already on vfio-pci");
  // Allowing every function admits NVMe ones only: the NIC still keeps its driver.
  o.attachable = {"all"};
  absl::Status nic = PrepareFunction("0000:00:03.0", o);
  EXPECT_EQ(nic.code(), absl::StatusCode::kFailedPrecondition) << nic;
  EXPECT_THAT(nic.message(), HasSubstr("is not an NVMe controller"));
  nothing_written("the NIC with --vfio_attachable=all");
  // An allowed NVMe function is bound (this tree has no kernel: nvme keeps it).
  o.attachable = {"0000:02:00.0"};
  EXPECT_THAT(PrepareFunction("0000:02:00.0", o).message(), HasSubstr("did not bind to vfio-pci"));
  EXPECT_EQ(Read("bus/pci/drivers/nvme/unbind"), "0000:02:00.0");
}

// Uevents as the kernel sends them (one datagram each: "ACTION@DEVPATH" then
// KEY=VALUE fields, NUL-separated), read back through the helper both backends use.
TEST(UeventTest, DatagramsAreReadWholeWithTheirFields) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  auto send_event = [&](const std::string& header, std::vector<std::string> fields) {
    std::string buf = header;
    buf.push_back('\0');
    for (const auto& f : fields) {
      buf += f;
      buf.push_back('\0');
    }
    ASSERT_EQ(send(sv[1], buf.data(), buf.size(), 0), static_cast<ssize_t>(buf.size()));
  };
  send_event("add@/devices/pci0000:00/0000:00:05.0", {"ACTION=add", "SUBSYSTEM=pci"});
  send_event("remove@/devices/virtual/nvme-fabrics/ctl/nvme3", {"ACTION=remove", "SUBSYSTEM=nvme"});
  std::vector<std::string> seen;
  ReadUevents(sv[0], [&](const Uevent& e) {
    seen.push_back(absl::StrCat(e.header, " pci=", e.Has("SUBSYSTEM=pci"), " add=", e.Has("ACTION=add"),
                                " nvme=", e.Has("SUBSYSTEM=nvme")));
  });
  EXPECT_THAT(seen, ElementsAre("add@/devices/pci0000:00/0000:00:05.0 pci=1 add=1 nvme=0",
                                "remove@/devices/virtual/nvme-fabrics/ctl/nvme3 pci=0 add=0 nvme=1"));
  // Nothing left: it returns at once rather than blocking.
  ReadUevents(sv[0], [&](const Uevent&) { ADD_FAILURE() << "no more events"; });
  close(sv[0]);
  close(sv[1]);
}

// Issue 17 item 7d: a process that sends a uevent to the agent's netlink socket (its port
// id; root may) is not the kernel, and its "remove" must not detach anything. The kernel
// refusing the forger (EPERM, not root) is as good; delivered, it is dropped.
TEST(UeventTest, AForgedUeventFromAProcessIsDropped) {
  absl::StatusOr<int> fd = OpenUeventSocket();
  ASSERT_OK(fd.status());
  sockaddr_nl self{};
  socklen_t len = sizeof self;
  ASSERT_EQ(getsockname(*fd, reinterpret_cast<sockaddr*>(&self), &len), 0);
  const int forger = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT);
  ASSERT_GE(forger, 0);
  sockaddr_nl to{};
  to.nl_family = AF_NETLINK;
  to.nl_pid = self.nl_pid;
  const std::string forged("remove@/devices/forged/nvme9\0ACTION=remove\0SUBSYSTEM=nvme", 57);
  const ssize_t sent =
      sendto(forger, forged.data(), forged.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
  if (sent < 0) {
    EXPECT_EQ(errno, EPERM);
  } else {
    // The kernel's own events may arrive meanwhile; only the forged one is an error.
    ReadUevents(*fd, [&](const Uevent& e) {
      EXPECT_NE(std::string(e.header), "remove@/devices/forged/nvme9") << "a forged uevent was delivered";
    });
  }
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  EXPECT_TRUE(SentByKernel(kernel, sizeof kernel));
  kernel.nl_pid = static_cast<uint32_t>(getpid());
  EXPECT_FALSE(SentByKernel(kernel, sizeof kernel));
  close(forger);
  close(*fd);
}

}  // namespace
}  // namespace umpath::vfio
