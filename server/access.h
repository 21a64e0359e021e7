#pragma once

// Who may call what: roles from Unix peer credentials and from client certificates.

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "agent/base/mutex.h"

namespace grpc {
class AuthContext;
}

namespace umpath::server {

// viewer: reads and watch. admin: everything viewer may, and mutations.
enum class Role : uint8_t { kNone, kViewer, kAdmin };
absl::string_view RoleName(Role r);

struct AccessConfig {
  // Unix callers, by the uid or any group of the connecting process: its primary gid and
  // its supplementary groups as they were when it connected (SO_PEERGROUPS), so a viewer
  // that is also in an admin group is an admin, however it `sg`s afterwards.
  std::vector<uid_t> admin_uids = {0};
  std::vector<gid_t> admin_gids;
  std::vector<uid_t> viewer_uids;
  std::vector<gid_t> viewer_gids;
  // TLS callers, by a SAN (DNS, URI); the CN only of a certificate that has no SAN (a
  // certificate with SANs was issued for those names, whatever its subject says).
  std::vector<std::string> admin_names;
  std::vector<std::string> viewer_names;
};

struct Caller {
  Role role = Role::kNone;
  bool authenticated = false;  // an identity was presented (peer credentials or a cert)
  std::string identity;        // "uid 1000 gid 1000 ..." or "certificate ..."; for messages and logs
  // Whom per-caller limits count: "uid N" (every process of a uid together) or the
  // certificate's names. Never the pid: processes are free to make.
  std::string key;
};

// The credentials of each accepted Unix connection, by the fd gRPC serves it on (its
// peer string is "fd:N"). Threading: Set from the accept thread, Lookup from gRPC's.
class PeerTable {
 public:
  struct Credentials {
    pid_t pid = 0;
    uid_t uid = 0;
    gid_t gid = 0;
    // The supplementary groups at connect time (SO_PEERGROUPS); groups_known false where
    // the kernel could not tell (before Linux 4.13): roles then come from uid and gid.
    std::vector<gid_t> groups;
    bool groups_known = false;
  };
  void Set(int fd, Credentials c);
  bool Lookup(absl::string_view peer, Credentials* out) const;

 private:
  mutable Mutex mu_;
  absl::flat_hash_map<int, Credentials> by_fd_ ABSL_GUARDED_BY(mu_);
};

class AccessPolicy {
 public:
  AccessPolicy(AccessConfig config, const PeerTable* peers)
      : config_(std::move(config)), peers_(peers) {}
  // From the call's peer string and auth context.
  Caller Identify(absl::string_view peer, const grpc::AuthContext* auth) const;
  // OK if the caller holds `need` (and `out` says who it is); UNAUTHENTICATED without an
  // identity, PERMISSION_DENIED without the role. Every service checks callers so.
  absl::Status Authorize(absl::string_view peer, const grpc::AuthContext* auth, Role need,
                         Caller* out = nullptr) const;
  Role ForUnix(uid_t uid, gid_t gid, const std::vector<gid_t>& groups = {}) const;
  Role ForNames(const std::vector<std::string>& names) const;

 private:
  const AccessConfig config_;
  const PeerTable* const peers_;
};

}  // namespace umpath::server
