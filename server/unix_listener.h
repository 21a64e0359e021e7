#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "server/access.h"

namespace grpc {
class Server;
}

namespace umpath::server {

// The agent's Unix socket. It accepts connections itself so that it can read each
// caller's SO_PEERCRED (gRPC's own unix: listener does not expose it), records them in
// the PeerTable, and hands the connection to the gRPC server.
//
// Threading: one accept thread between Start() and Stop().
class UnixListener {
 public:
  // Binds `path` (its directory is created; a stale socket is replaced; a socket a live
  // agent answers on, or anything else at the path, is FAILED_PRECONDITION) with `mode`,
  // and group `gid` unless it is -1.
  static absl::StatusOr<std::unique_ptr<UnixListener>> Create(const std::string& path,
                                                              mode_t mode, gid_t gid,
                                                              PeerTable* peers);
  ~UnixListener();

  void Start(grpc::Server* server);
  // Stops accepting and removes the socket file if it is still the one bound by Create.
  // Idempotent.
  void Stop();
  const std::string& path() const { return path_; }

 private:
  // The socket file, as bound: what Stop may remove.
  struct FileId {
    dev_t dev;
    ino_t ino;
  };
  UnixListener(std::string path, int fd, int stop_fd, PeerTable* peers, FileId bound)
      : path_(std::move(path)), fd_(fd), stop_fd_(stop_fd), peers_(peers), bound_(bound) {}
  void Loop(grpc::Server* server);

  const std::string path_;
  const int fd_;
  const int stop_fd_;
  PeerTable* const peers_;
  const FileId bound_;
  std::thread thread_;
  bool stopped_ = false;
};

}  // namespace umpath::server
