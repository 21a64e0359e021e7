#pragma once

// The hand-over channel between a running agent and its successor (issue 16 item 3): a
// Unix SOCK_SEQPACKET socket whose messages carry text and open descriptors
// (SCM_RIGHTS). A message longer than one packet, or with more descriptors than one
// packet takes, goes as several packets in order, the last one flagged.
//
// Descriptors received belong to the receiver (UniqueFd closes them); they arrive
// close-on-exec.

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace umpath::handover {

// An owned descriptor: closed when it goes.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();
  int get() const { return fd_; }
  // The descriptor, no longer owned.
  int release() { return std::exchange(fd_, -1); }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

struct Message {
  std::string text;
  std::vector<UniqueFd> fds;
};

// Limits of one message, whatever the peer sends: past them the receive fails (and the
// descriptors that came are closed).
inline constexpr size_t kMaxMessageBytes = 4 << 20;
inline constexpr size_t kMaxMessageFds = 8192;

// Sends `text` and `fds` (borrowed: the caller still owns and closes them) as one
// message. Blocks until the socket took it.
absl::Status Send(int sock, absl::string_view text, const std::vector<int>& fds);
// The next whole message. `timeout_ms` bounds each packet's wait (-1: no bound);
// DEADLINE_EXCEEDED past it, UNAVAILABLE when the peer closed before a message began,
// DATA_LOSS for a message cut short or malformed (descriptors truncated, too large).
absl::StatusOr<Message> Receive(int sock, int timeout_ms);

// The peer's credentials (SO_PEERCRED).
struct Peer {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};
absl::StatusOr<Peer> PeerOf(int sock);

// A listening socket at `path`, mode 0600 (a socket file already there is replaced:
// the caller has made sure nothing answers on it; another kind of file is an error).
absl::StatusOr<UniqueFd> Listen(const std::string& path);
// Connected to `path`; NOT_FOUND when nothing is there, UNAVAILABLE when nothing
// listens (a stale file).
absl::StatusOr<UniqueFd> Connect(const std::string& path);

}  // namespace umpath::handover
