// ConnectFabrics through the real libnvme, down to what it writes to the kernel: this
// binary defines open64 and write, so libnvme's /dev/nvme-fabrics is a file of the test's
// (/dev/null: the kernel's answer reads empty, and the connect fails after the write).
// What the kernel would have been asked is what the test reads back.

#include "agent/kernel/fabrics_connect.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace {
int fake_fd = -1;
std::string written;  // the last connect string, as the kernel would read it
std::string answer;   // what the kernel answers (read after the write); empty: nothing
int write_errno = 0;  // the kernel refuses the write with this errno
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

// The agent's own TLS connect opens with open(), libnvme with open64().
extern "C" int open(const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  const mode_t mode = (flags & O_CREAT) != 0 ? va_arg(ap, mode_t) : 0;
  va_end(ap);
  return open64(path, flags, mode);
}

extern "C" ssize_t write(int fd, const void* buf, size_t n) {
  using Write = ssize_t (*)(int, const void*, size_t);
  static const Write real = reinterpret_cast<Write>(dlsym(RTLD_NEXT, "write"));
  if (fd >= 0 && fd == fake_fd) {
    written.assign(static_cast<const char*>(buf), n);
    if (write_errno != 0) {
      errno = write_errno;
      return -1;
    }
  }
  return real(fd, buf, n);
}

extern "C" ssize_t read(int fd, void* buf, size_t n) {
  using Read = ssize_t (*)(int, void*, size_t);
  static const Read real = reinterpret_cast<Read>(dlsym(RTLD_NEXT, "read"));
  if (fd >= 0 && fd == fake_fd && !answer.empty()) {
    const size_t k = std::min(n, answer.size());
    std::memcpy(buf, answer.data(), k);
    return static_cast<ssize_t>(k);
  }
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

// The TLS connect's own option string: what libnvme writes, then TLS on with this key.
TEST(FabricsConnectTest, TlsConnectStringAddsTheKeyToLibnvmesOptions) {
  ConnectArgs a;
  a.host_traddr = "10.77.0.1";
  a.host_iface = "d0";
  a.ctrl_loss_tmo = -1;
  a.reconnect_delay = 3;
  a.keep_alive_tmo = 7;
  a.dhchap_secret = kKey;
  const std::string host = "nqn.2014-08.org.nvmexpress:uuid:6a5e0d2c-6e1b-4c7e-9d1a-0000000000b2";
  const std::string ours = TlsConnectString(kSpec, a, host, "6a5e0d2c-6e1b-4c7e-9d1a-0000000000b2", 123456789);
  a.host_nqn = host;
  a.host_id = "6a5e0d2c-6e1b-4c7e-9d1a-0000000000b2";
  const std::string libnvmes = Connect(a);
  EXPECT_EQ(ours, libnvmes + ",tls,tls_key=123456789");

  // Without keep-alive, host address, interface or host ID none of them is named.
  ConnectArgs b;
  EXPECT_EQ(TlsConnectString(kSpec, b, host, "", 42),
            "nqn=nqn.2026-01.io.umpath:tcp,transport=tcp,traddr=10.77.0.1,trsvcid=4422,hostnqn=" + host +
                ",reconnect_delay=10,ctrl_loss_tmo=600,tls,tls_key=42");
}

TEST(FabricsConnectTest, WriteFabricsConnectNamesTheNewController) {
  answer = "instance=12,cntlid=1\n";
  absl::StatusOr<std::string> name = WriteFabricsConnect("nqn=x,transport=tcp,tls,tls_key=5", kSpec);
  answer.clear();
  ASSERT_TRUE(name.ok()) << name.status();
  EXPECT_EQ(*name, "nvme12");
  EXPECT_EQ(written, "nqn=x,transport=tcp,tls,tls_key=5");
}

// No tlshd: net/handshake answers ESRCH, which is a host without TLS, not a target down.
TEST(FabricsConnectTest, NoHandshakeDaemonIsTlsUnsupported) {
  write_errno = ESRCH;
  absl::Status s = WriteFabricsConnect("nqn=x,transport=tcp,tls,tls_key=5", kSpec).status();
  write_errno = ECONNREFUSED;
  absl::Status refused = WriteFabricsConnect("nqn=x,transport=tcp,tls,tls_key=5", kSpec).status();
  write_errno = EIO;  // what a handshake with a PSK the target does not have gave in the lab
  absl::Status rejected = WriteFabricsConnect("nqn=x,transport=tcp,tls,tls_key=5", kSpec).status();
  write_errno = ETIMEDOUT;  // the same on 6.12
  absl::Status timed_out = WriteFabricsConnect("nqn=x,transport=tcp,tls,tls_key=5", kSpec).status();
  write_errno = 0;
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr("no TLS handshake daemon"));
  EXPECT_THAT(s.message(), Not(HasSubstr("tls_key=5")));
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(refused.message(), HasSubstr("Connection refused"));
  EXPECT_THAT(refused.message(), Not(HasSubstr("handshake")));
  EXPECT_EQ(rejected.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(rejected.message(), HasSubstr("the TLS handshake failed: the target has no PSK"));
  EXPECT_THAT(timed_out.message(), HasSubstr("or a failed TLS handshake"));
}

}  // namespace
}  // namespace umpath::kernel
