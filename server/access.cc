#include "server/access.h"

#include <algorithm>
#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/base/error_reason.h"
#include "grpcpp/security/auth_context.h"

namespace umpath::server {

namespace {

template <typename T>
bool Contains(const std::vector<T>& v, const T& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

}  // namespace

absl::string_view RoleName(Role r) {
  switch (r) {
    case Role::kNone: return "none";
    case Role::kViewer: return "viewer";
    case Role::kAdmin: return "admin";
  }
  return "none";
}

void PeerTable::Set(int fd, Credentials c) {
  MutexLock lock(&mu_);
  by_fd_[fd] = c;
}

bool PeerTable::Lookup(absl::string_view peer, Credentials* out) const {
  int fd;
  if (!absl::ConsumePrefix(&peer, "fd:") || !absl::SimpleAtoi(peer, &fd)) return false;
  MutexLock lock(&mu_);
  auto it = by_fd_.find(fd);
  if (it == by_fd_.end()) return false;
  *out = it->second;
  return true;
}

Role AccessPolicy::ForUnix(uid_t uid, gid_t gid, const std::vector<gid_t>& groups) const {
  auto in_any = [&](const std::vector<gid_t>& allowed) {
    if (Contains(allowed, gid)) return true;
    for (gid_t g : groups) {
      if (Contains(allowed, g)) return true;
    }
    return false;
  };
  if (Contains(config_.admin_uids, uid) || in_any(config_.admin_gids)) return Role::kAdmin;
  if (Contains(config_.viewer_uids, uid) || in_any(config_.viewer_gids)) return Role::kViewer;
  return Role::kNone;
}

Role AccessPolicy::ForNames(const std::vector<std::string>& names) const {
  Role best = Role::kNone;
  for (const std::string& n : names) {
    if (Contains(config_.admin_names, n)) return Role::kAdmin;
    if (Contains(config_.viewer_names, n)) best = Role::kViewer;
  }
  return best;
}

Caller AccessPolicy::Identify(absl::string_view peer, const grpc::AuthContext* auth) const {
  Caller c;
  PeerTable::Credentials cred;
  if (peers_ && peers_->Lookup(peer, &cred)) {
    c.authenticated = true;
    c.identity = absl::StrCat("uid ", cred.uid, " gid ", cred.gid, " pid ", cred.pid,
                              cred.groups_known ? "" : " (supplementary groups unknown)");
    c.key = absl::StrCat("uid ", cred.uid);
    c.role = ForUnix(cred.uid, cred.gid, cred.groups);
    return c;
  }
  if (auth != nullptr && auth->IsPeerAuthenticated()) {
    // The SANs are what a certificate is issued for (RFC 6125 6.4.4: the CN is looked at
    // only when there is no SAN); a CN beside them names nothing, or a certificate issued
    // for "DNS:build-bot" with CN=admin would be an admin.
    std::vector<std::string> names;
    for (const char* prop : {"x509_subject_alternative_name", "peer_dns", "peer_uri",
                             "peer_spiffe_id"}) {
      for (const grpc::string_ref& v : auth->FindPropertyValues(prop)) {
        names.emplace_back(v.data(), v.size());
      }
    }
    if (names.empty()) {
      for (const grpc::string_ref& v : auth->FindPropertyValues("x509_common_name")) {
        names.emplace_back(v.data(), v.size());
      }
    }
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    c.authenticated = true;
    c.identity = absl::StrCat("certificate ", absl::StrJoin(names, ","));
    c.key = c.identity;
    c.role = ForNames(names);
  }
  return c;
}

absl::Status AccessPolicy::Authorize(absl::string_view peer, const grpc::AuthContext* auth, Role need,
                                     Caller* out) const {
  Caller caller = Identify(peer, auth);
  if (!caller.authenticated) {
    return WithReason(absl::UnauthenticatedError(
                          "no identity: connect over the Unix socket or with a client certificate"),
                      reason::kCallerUnknown);
  }
  if (caller.role < need) {
    return WithReason(absl::PermissionDeniedError(absl::StrCat(caller.identity, " has role ",
                                                               RoleName(caller.role), "; this call needs ",
                                                               RoleName(need))),
                      reason::kRoleMissing, {{"role", RoleName(need)}, {"callerRole", RoleName(caller.role)}});
  }
  if (out) *out = std::move(caller);
  return absl::OkStatus();
}

}  // namespace umpath::server
