#include "server/unix_listener.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/server_posix.h"

namespace umpath::server {

namespace {

absl::Status Errno(absl::string_view what, absl::string_view path) {
  return absl::ErrnoToStatus(errno, absl::StrCat(what, " ", path));
}

// The supplementary groups the peer had when it connected (Linux 4.13+). False where the
// kernel cannot tell: roles then come from the uid and primary gid alone, which grants
// less, never more.
bool PeerGroups(int conn, std::vector<gid_t>* groups) {
  groups->resize(32);
  for (;;) {
    socklen_t len = static_cast<socklen_t>(groups->size() * sizeof(gid_t));
    if (getsockopt(conn, SOL_SOCKET, SO_PEERGROUPS, groups->data(), &len) == 0) {
      groups->resize(len / sizeof(gid_t));
      return true;
    }
    // ERANGE tells the size needed (NGROUPS_MAX bounds it).
    if (errno != ERANGE || len / sizeof(gid_t) <= groups->size()) {
      groups->clear();
      return false;
    }
    groups->resize(len / sizeof(gid_t));
  }
}

bool SocketAddress(const std::string& path, sockaddr_un* addr) {
  if (path.size() >= sizeof(addr->sun_path)) return false;
  addr->sun_family = AF_UNIX;
  std::memcpy(addr->sun_path, path.c_str(), path.size() + 1);
  return true;
}

// Whether `path` may be bound over: nothing there, or a socket no one answers on. A live
// agent's socket is refused (a second umpathd would take it and, on its way out, delete
// it), and so is anything that is not a socket.
absl::Status CheckReplaceable(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return Errno("lstat", path);
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " exists and is not a socket; refusing to replace it"));
  }
  sockaddr_un addr{};
  SocketAddress(path, &addr);
  const int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (probe < 0) return Errno("socket to probe", path);
  const int connected = connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  const int err = errno;
  close(probe);
  // ECONNREFUSED: no one listens (the agent before did not stop cleanly). Anything else,
  // EAGAIN of a full backlog included, may be a live agent.
  if (connected != 0 && (err == ECONNREFUSED || err == ENOENT)) return absl::OkStatus();
  if (connected == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "an agent answers on ", path, "; refusing to take its socket (stop it first)"));
  }
  errno = err;
  return Errno("probing whether an agent answers on", path);
}

}  // namespace

absl::StatusOr<std::unique_ptr<UnixListener>> UnixListener::Create(const std::string& path,
                                                                   mode_t mode, gid_t gid,
                                                                   PeerTable* peers) {
  if (path.empty() || path[0] != '/' || path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("socket path \"", path,
                                                   "\" must be absolute and shorter than ",
                                                   sizeof(sockaddr_un{}.sun_path)));
  }
  const std::string dir = std::filesystem::path(path).parent_path().string();
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create the directory of ", path, ": ", ec.message()));
  }
  if (absl::Status s = CheckReplaceable(path); !s.ok()) return s;
  // Bound, owned and opened up inside a directory only we can enter, then renamed into
  // place: nothing at `path` is ever chmod'ed or chown'ed by name (a symlink put there
  // would send it elsewhere), the socket is never reachable with a mode other than
  // `mode`, and no umask is changed under the threads that already run. rename()
  // replaces a stale socket (or anything put there since the check) atomically and never
  // follows a symlink.
  std::string private_dir = dir + "/.umpathd-XXXXXX";
  if (mkdtemp(private_dir.data()) == nullptr) return Errno("mkdtemp in", dir);  // mode 0700
  const std::string bound_path = private_dir + "/s";
  struct Cleanup {
    const std::string& d;
    const std::string& b;
    ~Cleanup() {
      unlink(b.c_str());
      rmdir(d.c_str());
    }
  } cleanup{private_dir, bound_path};
  sockaddr_un addr{};
  if (!SocketAddress(bound_path, &addr)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "socket path \"", path, "\" is too long to bind beside it (", bound_path, ")"));
  }
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Errno("socket for", path);
  struct stat st;
  // A node's sidecars may all connect at once (a nonblocking connect to a full backlog
  // fails with EAGAIN): take the kernel's maximum.
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(fd, SOMAXCONN) != 0 ||
      (gid != static_cast<gid_t>(-1) &&
       fchownat(AT_FDCWD, bound_path.c_str(), static_cast<uid_t>(-1), gid, AT_SYMLINK_NOFOLLOW) != 0) ||
      chmod(bound_path.c_str(), mode) != 0 ||  // in our 0700 directory: no one else's link
      lstat(bound_path.c_str(), &st) != 0 || rename(bound_path.c_str(), path.c_str()) != 0) {
    absl::Status s = Errno("bind/listen/chown/chmod/rename", path);
    close(fd);
    return s;
  }
  const int stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd < 0) {
    absl::Status s = Errno("eventfd for", path);
    close(fd);
    unlink(path.c_str());
    return s;
  }
  return std::unique_ptr<UnixListener>(
      new UnixListener(path, fd, stop_fd, peers, FileId{st.st_dev, st.st_ino}));
}

UnixListener::~UnixListener() {
  Stop();
  close(fd_);
  close(stop_fd_);
}

void UnixListener::Start(grpc::Server* server) {
  thread_ = std::thread([this, server] { Loop(server); });
}

void UnixListener::Stop() {
  if (stopped_) return;
  stopped_ = true;
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(stop_fd_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  // Only our own socket: another agent may have taken the path since (a successor that
  // found it stale, an operator's), and its socket is not ours to remove.
  struct stat st;
  if (lstat(path_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == bound_.dev &&
      st.st_ino == bound_.ino) {
    unlink(path_.c_str());
  }
}

void UnixListener::Loop(grpc::Server* server) {
  pollfd fds[2] = {{fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents) return;
    // Everything that is waiting, not one per wake-up.
    for (;;) {
      const int conn = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (conn < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        // Out of descriptors: the backlog stays readable, so wait rather than spin.
        if (errno == EMFILE || errno == ENFILE) poll(nullptr, 0, 100);
        break;  // EAGAIN: drained
      }
      ucred cred{};
      socklen_t len = sizeof cred;
      if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
        close(conn);
        continue;
      }
      PeerTable::Credentials c{cred.pid, cred.uid, cred.gid};
      c.groups_known = PeerGroups(conn, &c.groups);
      // Recorded before gRPC sees the fd, so no call on it can be served without it.
      peers_->Set(conn, std::move(c));
      grpc::AddInsecureChannelFromFd(server, conn);
    }
  }
}

}  // namespace umpath::server
