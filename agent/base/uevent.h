#pragma once

// The kernel's uevent broadcast (NETLINK_KOBJECT_UEVENT), as both backends watch it for
// devices that come and go: one socket, one reader.

#include <linux/netlink.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace umpath {

// A non-blocking socket on the kernel's uevent group. UNAVAILABLE where there is none
// (a container without the host's network namespace): callers fall back to rescans.
inline absl::StatusOr<int> OpenUeventSocket() {
  const int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        NETLINK_KOBJECT_UEVENT);
  if (fd < 0) return absl::ErrnoToStatus(errno, "uevent socket");
  sockaddr_nl addr{};
  addr.nl_family = AF_NETLINK;
  addr.nl_groups = 1;  // the kernel's broadcast
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int e = errno;
    close(fd);
    return absl::ErrnoToStatus(e, "uevent bind");
  }
  return fd;
}

// Reads every uevent waiting on `fd`. Each is "ACTION@DEVPATH" then KEY=VALUE fields,
// NUL-separated; `on_event` gets the header and a way to look for a field.
struct Uevent {
  absl::string_view header;  // ACTION@DEVPATH
  const char* fields = nullptr;
  const char* end = nullptr;
  bool Has(absl::string_view key_value) const {
    for (const char* p = fields; p < end; p += std::strlen(p) + 1) {
      if (absl::string_view(p) == key_value) return true;
    }
    return false;
  }
};
// Whether a datagram read from a netlink socket came from the kernel: port id 0. Any
// process may send to a netlink socket's port id (root, or CAP_NET_ADMIN, may even send
// to the uevent group), so a forged "add" or "remove" would otherwise start a rescan, a
// bind or a detach (issue 17 item 7d); libudev's monitor drops the same ones.
inline bool SentByKernel(const sockaddr_nl& from, socklen_t len) {
  return len == sizeof from && from.nl_family == AF_NETLINK && from.nl_pid == 0;
}

// Datagrams on a netlink socket from anyone but the kernel are dropped. Other sockets
// (the tests' socket pairs behind the uevents seam) have no netlink sender to check.
inline void ReadUevents(int fd, absl::FunctionRef<void(const Uevent&)> on_event) {
  int domain = 0;
  socklen_t domain_len = sizeof domain;
  const bool netlink = getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &domain_len) == 0 &&
                       domain == AF_NETLINK;
  char buf[8192];
  for (;;) {
    sockaddr_nl from{};
    iovec iov{buf, sizeof buf - 1};
    msghdr msg{};
    msg.msg_name = &from;
    msg.msg_namelen = sizeof from;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    const ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT);
    if (n <= 0) return;
    if (netlink && !SentByKernel(from, msg.msg_namelen)) continue;
    buf[n] = 0;
    Uevent e;
    e.header = absl::string_view(buf);
    e.fields = buf + e.header.size() + 1;
    e.end = buf + n;
    on_event(e);
  }
}

}  // namespace umpath
