#include "agent/handover/channel.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace umpath::handover {
namespace {

// A packet: a header, then up to kPacketText bytes of the message's text, with up to
// kPacketFds descriptors (the kernel takes at most SCM_MAX_FD, 253, per message).
constexpr uint32_t kMagic = 0x4f484d55;  // "UMHO"
constexpr uint8_t kLast = 1;
constexpr size_t kPacketText = 32 * 1024;
constexpr size_t kPacketFds = 200;
struct Header {
  uint32_t magic;
  uint8_t flags;
  uint8_t reserved[3];
};
static_assert(sizeof(Header) == 8);

absl::Status SendPacket(int sock, absl::string_view text, const int* fds, size_t nfds, bool last) {
  Header h{kMagic, static_cast<uint8_t>(last ? kLast : 0), {}};
  iovec iov[2] = {{&h, sizeof h}, {const_cast<char*>(text.data()), text.size()}};
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = text.empty() ? 1 : 2;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kPacketFds)];
  if (nfds > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  for (;;) {
    const ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n >= 0) {
      if (static_cast<size_t>(n) != sizeof h + text.size()) {
        return absl::DataLossError("hand-over: a packet was sent short");
      }
      return absl::OkStatus();
    }
    if (errno != EINTR) return absl::ErrnoToStatus(errno, "hand-over: send");
  }
}

}  // namespace

UniqueFd& UniqueFd::operator=(UniqueFd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(o.fd_, -1);
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) close(fd_);
}

absl::Status Send(int sock, absl::string_view text, const std::vector<int>& fds) {
  if (text.size() > kMaxMessageBytes || fds.size() > kMaxMessageFds) {
    return absl::InvalidArgumentError(absl::StrCat("hand-over: a message of ", text.size(),
                                                   " bytes and ", fds.size(),
                                                   " descriptors is past the limits"));
  }
  size_t at = 0, fd_at = 0;
  do {
    const size_t len = std::min(kPacketText, text.size() - at);
    const size_t nfds = std::min(kPacketFds, fds.size() - fd_at);
    const bool last = at + len == text.size() && fd_at + nfds == fds.size();
    if (absl::Status s = SendPacket(sock, text.substr(at, len), fds.data() + fd_at, nfds, last);
        !s.ok()) {
      return s;
    }
    at += len;
    fd_at += nfds;
    if (last) break;
  } while (true);
  return absl::OkStatus();
}

absl::StatusOr<Message> Receive(int sock, int timeout_ms) {
  Message m;
  std::string buf(sizeof(Header) + kPacketText + 1, '\0');
  for (bool first = true;; first = false) {
    pollfd p{sock, POLLIN, 0};
    int r;
    do {
      r = poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    if (r < 0) return absl::ErrnoToStatus(errno, "hand-over: poll");
    if (r == 0) return absl::DeadlineExceededError("hand-over: no message from the peer in time");
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 253)];
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n;
    do {
      n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return absl::ErrnoToStatus(errno, "hand-over: receive");
    // Whatever came is owned before anything is checked, so an error closes it.
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        m.fds.emplace_back(fd);
      }
    }
    if (n == 0) {
      if (first) return absl::UnavailableError("hand-over: the peer closed the channel");
      return absl::DataLossError("hand-over: the peer closed the channel in the middle of a message");
    }
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
      return absl::DataLossError("hand-over: a packet was cut short (text or descriptors)");
    }
    Header h;
    if (static_cast<size_t>(n) < sizeof h) return absl::DataLossError("hand-over: a packet without its header");
    std::memcpy(&h, buf.data(), sizeof h);
    if (h.magic != kMagic) return absl::DataLossError("hand-over: a packet that is not ours");
    m.text.append(buf.data() + sizeof h, n - sizeof h);
    if (m.text.size() > kMaxMessageBytes || m.fds.size() > kMaxMessageFds) {
      return absl::DataLossError("hand-over: a message past the limits");
    }
    if (h.flags & kLast) return m;
  }
}

absl::StatusOr<Peer> PeerOf(int sock) {
  ucred c{};
  socklen_t len = sizeof c;
  if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &c, &len) != 0) {
    return absl::ErrnoToStatus(errno, "hand-over: SO_PEERCRED");
  }
  return Peer{c.pid, c.uid, c.gid};
}

namespace {
absl::StatusOr<sockaddr_un> Address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof a.sun_path) {
    return absl::InvalidArgumentError(
        absl::StrCat("hand-over socket path of ", path.size(), " bytes: must be 1..", sizeof a.sun_path - 1));
  }
  std::memcpy(a.sun_path, path.data(), path.size());
  return a;
}
}  // namespace

absl::StatusOr<UniqueFd> Listen(const std::string& path) {
  absl::StatusOr<sockaddr_un> a = Address(path);
  if (!a.ok()) return a.status();
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat(path, " exists and is not a socket"));
    }
    unlink(path.c_str());
  }
  UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, "hand-over: socket");
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&*a), sizeof *a) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("hand-over: bind ", path));
  }
  // Who may connect is decided by the peer's credentials (PeerOf) when it does; the
  // mode only keeps others from trying.
  (void)chmod(path.c_str(), 0600);
  if (listen(fd.get(), 4) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("hand-over: listen ", path));
  return fd;
}

absl::StatusOr<UniqueFd> Connect(const std::string& path) {
  absl::StatusOr<sockaddr_un> a = Address(path);
  if (!a.ok()) return a.status();
  UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, "hand-over: socket");
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&*a), sizeof *a) != 0) {
    const int e = errno;
    if (e == ENOENT) return absl::NotFoundError(absl::StrCat("no hand-over socket at ", path));
    if (e == ECONNREFUSED) return absl::UnavailableError(absl::StrCat("nothing listens on ", path));
    return absl::ErrnoToStatus(e, absl::StrCat("hand-over: connect ", path));
  }
  return fd;
}

}  // namespace umpath::handover
