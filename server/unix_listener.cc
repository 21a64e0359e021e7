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

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/server_posix.h"

namespace umpath::server {

namespace {

absl::Status Errno(absl::string_view what, absl::string_view path) {
  return absl::ErrnoToStatus(errno, absl::StrCat(what, " ", path));
}

}  // namespace

absl::StatusOr<std::unique_ptr<UnixListener>> UnixListener::Create(const std::string& path,
                                                                   mode_t mode, gid_t gid,
                                                                   PeerTable* peers) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path[0] != '/' || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "socket path \"", path, "\" must be absolute and shorter than ", sizeof(addr.sun_path)));
  }
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create the directory of ", path, ": ", ec.message()));
  }
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " exists and is not a socket; refusing to replace it"));
    }
    unlink(path.c_str());  // a stale socket from an agent that did not stop cleanly
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Errno("socket for", path);
  // Created with no access for anyone, then opened up to exactly `mode`.
  const mode_t old_umask = umask(0777);
  const int bound = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  umask(old_umask);
  // A node's sidecars may all connect at once (a nonblocking connect to a full backlog
  // fails with EAGAIN): take the kernel's maximum.
  if (bound != 0 || listen(fd, SOMAXCONN) != 0) {
    absl::Status s = Errno("bind/listen", path);
    close(fd);
    return s;
  }
  if ((gid != static_cast<gid_t>(-1) && chown(path.c_str(), static_cast<uid_t>(-1), gid) != 0) ||
      chmod(path.c_str(), mode) != 0) {
    absl::Status s = Errno("chown/chmod", path);
    close(fd);
    unlink(path.c_str());
    return s;
  }
  const int stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd < 0) {
    absl::Status s = Errno("eventfd for", path);
    close(fd);
    unlink(path.c_str());
    return s;
  }
  return std::unique_ptr<UnixListener>(new UnixListener(path, fd, stop_fd, peers));
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
  unlink(path_.c_str());
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
      // Recorded before gRPC sees the fd, so no call on it can be served without it.
      peers_->Set(conn, PeerTable::Credentials{cred.pid, cred.uid, cred.gid});
      grpc::AddInsecureChannelFromFd(server, conn);
    }
  }
}

}  // namespace umpath::server
