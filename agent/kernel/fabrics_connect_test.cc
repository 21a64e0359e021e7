// ConnectFabrics through the real libnvme, down to what it writes to the kernel: this
// binary defines open64 and write, so libnvme's /dev/nvme-fabrics is a file of the test's
// (/dev/null: the kernel's answer reads empty, and the connect fails after the write).
// What the kernel would have been asked is what the test reads back.

#include "agent/kernel/fabrics_connect.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdarg>
#include <cstring>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace {
int fake_fd = -1;
std::string written;  // the last connect string, as the kernel would read it
}  // namespace

extern "C" int open64(const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  const mode_t mode = (flags & O_CREAT) != 0 ? va_arg(ap, mode_t) : 0;
  va_end(ap);
  using Open = int (*)(const char*, int, ...);
  static const Open real = reinterpret_cast<Open>(dlsym(RTLD_NEXT, "open64"));
  if (std::strcmp(path, "/dev/nvme-fabrics") == 0) {
    fake_fd = real("/dev/null", O_RDWR | O_CLOEXEC);
    return fake_fd;
  }
  return real(path, flags, mode);
}

extern "C" ssize_t write(int fd, const void* buf, size_t n) {
  using Write = ssize_t (*)(int, const void*, size_t);
  static const Write real = reinterpret_cast<Write>(dlsym(RTLD_NEXT, "write"));
  if (fd >= 0 && fd == fake_fd) written.assign(static_cast<const char*>(buf), n);
  return real(fd, buf, n);
}

namespace umpath::kernel {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const ConnectSpec kSpec{"tcp", "10.77.0.1", "4422", "nqn.2026-01.io.umpath:tcp"};
const std::string kKey = "DHHC-1:00:" + std::string(44, 'Q') + "Zz0=:";

std::string Connect(const ConnectArgs& args, std::string* err = nullptr) {
  written.clear();
  ::testing::internal::CaptureStderr();
  absl::StatusOr<std::string> name = ConnectFabrics(kSpec, args);
  const std::string e = ::testing::internal::GetCapturedStderr();
  if (err != nullptr) *err = e;
  EXPECT_FALSE(name.ok());  // /dev/null gives no instance back
  return written;
}

TEST(FabricsConnectTest, TheKernelIsAskedForEveryOption) {
  ConnectArgs a;
  a.host_nqn = "nqn.2014-08.org.nvmexpress:uuid:6a5e0d2c-6e1b-4c7e-9d1a-0000000000b2";
  a.host_id = "6a5e0d2c-6e1b-4c7e-9d1a-0000000000b2";
  a.host_traddr = "10.77.0.1";
  a.host_iface = "d0";
  a.ctrl_loss_tmo = -1;
  a.reconnect_delay = 3;
  a.keep_alive_tmo = 7;
  const std::string s = Connect(a);
  for (const char* want :
       {"nqn=nqn.2026-01.io.umpath:tcp,transport=tcp,traddr=10.77.0.1,host_traddr=10.77.0.1,host_iface=d0,"
        "trsvcid=4422",
        ",hostnqn=nqn.2014-08.org.nvmexpress:uuid:6a5e0d2c-6e1b-4c7e-9d1a-0000000000b2",
        ",hostid=6a5e0d2c-6e1b-4c7e-9d1a-0000000000b2", ",keep_alive_tmo=7", ",reconnect_delay=3",
        ",ctrl_loss_tmo=-1"}) {
    EXPECT_THAT(s, HasSubstr(want));
  }
  EXPECT_THAT(s, Not(HasSubstr("dhchap")));
}

TEST(FabricsConnectTest, DefaultsLeaveTheKernelsOwn) {
  ConnectArgs a;  // keep-alive 0: libnvme leaves it out, and the kernel takes its own
  a.host_nqn = "nqn.2014-08.org.nvmexpress:uuid:6a5e0d2c-6e1b-4c7e-9d1a-0000000000a1";
  const std::string s = Connect(a);
  EXPECT_THAT(s, HasSubstr(",reconnect_delay=10,ctrl_loss_tmo=600"));
  EXPECT_THAT(s, Not(HasSubstr("keep_alive_tmo")));
  EXPECT_THAT(s, Not(HasSubstr("host_traddr")));
}

// The keys reach the kernel and nothing else: libnvme prints the whole connect string
// at LOG_ERR when the kernel's answer does not parse, as here.
TEST(FabricsConnectTest, KeysGoToTheKernelOnly) {
  ConnectArgs a;
  a.host_nqn = "nqn.2014-08.org.nvmexpress:uuid:6a5e0d2c-6e1b-4c7e-9d1a-0000000000a1";
  a.dhchap_secret = kKey;
  a.dhchap_ctrl_secret = "DHHC-1:01:" + std::string(44, 'R') + "Zz0=:";
  std::string err;
  const std::string s = Connect(a, &err);
  EXPECT_THAT(s, HasSubstr(",dhchap_secret=" + kKey));
  EXPECT_THAT(s, HasSubstr(",dhchap_ctrl_secret=" + a.dhchap_ctrl_secret));
  EXPECT_THAT(err, Not(HasSubstr("DHHC-1")));

  // Without keys libnvme's errors are kept: they say why a connect failed.
  a.dhchap_secret.clear();
  a.dhchap_ctrl_secret.clear();
  Connect(a, &err);
  EXPECT_THAT(err, HasSubstr("nqn.2026-01.io.umpath:tcp"));
}

}  // namespace
}  // namespace umpath::kernel
