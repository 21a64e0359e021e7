#include "agent/kernel/fabrics_connect.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/base/error_reason.h"
#include "agent/kernel/psk_key.h"

namespace umpath::kernel {

void FillFabricsConfig(const ConnectArgs& args, nvme_fabrics_config* cfg) {
  nvmf_default_config(cfg);
  cfg->ctrl_loss_tmo = args.ctrl_loss_tmo;
  cfg->reconnect_delay = args.reconnect_delay;
  cfg->keep_alive_tmo = args.keep_alive_tmo;
  // Also given to nvme_create_ctrl, which is what libnvme 1.3 writes; set here too so
  // the config says the whole connect.
  cfg->host_traddr = args.host_traddr.empty() ? nullptr : const_cast<char*>(args.host_traddr.c_str());
  cfg->host_iface = args.host_iface.empty() ? nullptr : const_cast<char*>(args.host_iface.c_str());
}

namespace {

// The host's NQN and ID as libnvme would send them: the args', else libnvme's default
// host (/etc/nvme/hostnqn and hostid, or what libnvme derives without them).
std::pair<std::string, std::string> HostOf(const ConnectArgs& args) {
  if (!args.host_nqn.empty()) return {args.host_nqn, args.host_id};
  std::pair<std::string, std::string> out;
  nvme_root_t r = nvme_create_root(stderr, LOG_ERR);
  nvme_host_t h = r != nullptr ? nvme_default_host(r) : nullptr;
  if (h != nullptr) {
    const char* nqn = nvme_host_get_hostnqn(h);
    const char* id = nvme_host_get_hostid(h);
    out = {nqn != nullptr ? nqn : "", id != nullptr ? id : ""};
  }
  if (r != nullptr) nvme_free_tree(r);
  return out;
}

// A TLS connect: the PSK derived for this host and subsystem goes into the kernel's key
// store for the connect's duration (PskKey), and the option string is ours.
absl::StatusOr<std::string> ConnectTls(const ConnectSpec& spec, const ConnectArgs& args) {
  const auto [host_nqn, host_id] = HostOf(args);
  if (host_nqn.empty()) {
    return absl::FailedPreconditionError(
        "a TLS connect needs the host's NQN (its PSK identity names it): set --host_nqn, the request's hostnqn "
        "or /etc/nvme/hostnqn");
  }
  absl::StatusOr<TlsPsk> psk = DeriveTlsPsk(*args.tls_psk, host_nqn, spec.nqn);
  if (!psk.ok()) return psk.status();
  absl::StatusOr<PskKey> key = PskKey::Add(*psk);
  OPENSSL_cleanse(psk->key.data(), psk->key.size());
  if (!key.ok()) {
    return WithReason(absl::UnimplementedError(absl::StrCat("tls_key_file: ", key.status().message())),
                      reason::kTlsUnsupported, {{"field", "tls_key_file"}});
  }
  std::string options = TlsConnectString(spec, args, host_nqn, host_id, key->serial());
  absl::StatusOr<std::string> name = WriteFabricsConnect(options, spec);
  OPENSSL_cleanse(options.data(), options.size());
  return name;  // `key` leaves the process keyring here; the controller keeps its own reference
}

void AppendOption(std::string* out, absl::string_view name, absl::string_view value) {
  if (!value.empty()) absl::StrAppend(out, ",", name, "=", value);
}

}  // namespace

std::string TlsConnectString(const ConnectSpec& spec, const ConnectArgs& args, const std::string& host_nqn,
                             const std::string& host_id, int32_t key_serial) {
  std::string s = absl::StrCat("nqn=", spec.nqn, ",transport=", spec.transport);
  AppendOption(&s, "traddr", spec.address);
  AppendOption(&s, "host_traddr", args.host_traddr);
  AppendOption(&s, "host_iface", args.host_iface);
  AppendOption(&s, "trsvcid", spec.service);
  AppendOption(&s, "hostnqn", host_nqn);
  AppendOption(&s, "hostid", host_id);
  AppendOption(&s, "dhchap_secret", args.dhchap_secret);
  AppendOption(&s, "dhchap_ctrl_secret", args.dhchap_ctrl_secret);
  if (args.keep_alive_tmo > 0) absl::StrAppend(&s, ",keep_alive_tmo=", args.keep_alive_tmo);
  absl::StrAppend(&s, ",reconnect_delay=", args.reconnect_delay, ",ctrl_loss_tmo=", args.ctrl_loss_tmo);
  absl::StrAppend(&s, ",tls,tls_key=", key_serial);
  return s;
}

absl::StatusOr<std::string> WriteFabricsConnect(const std::string& options, const ConnectSpec& spec) {
  const int fd = open("/dev/nvme-fabrics", O_RDWR | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, "open /dev/nvme-fabrics (is nvme-fabrics loaded?)");
  const ssize_t n = write(fd, options.data(), options.size());
  const int e = errno;
  char answer[256] = {};
  const ssize_t got = n == static_cast<ssize_t>(options.size()) ? read(fd, answer, sizeof(answer) - 1) : -1;
  close(fd);
  if (n != static_cast<ssize_t>(options.size())) {
    // ESRCH comes from net/handshake (handshake_genl_notify): nobody listens for its
    // requests, i.e. no tlshd on this host.
    if (e == ESRCH) {
      return WithReason(
          absl::UnimplementedError(absl::StrCat(
              "could not connect to ", spec.ToString(),
              " with TLS: no TLS handshake daemon answers the kernel's handshake requests (start tlshd from "
              "ktls-utils with the .nvme keyring in its tlshd.conf)")),
          reason::kTlsUnsupported, {{"field", "tls_key_file"}});
    }
    // A failed handshake reaches the write as EIO on 6.18 and ETIMEDOUT on 6.12 (both
    // seen in the lab with a PSK the target does not have, in well under a second),
    // or as EACCES or EKEYREJECTED.
    const bool handshake = e == EIO || e == EACCES || e == EKEYREJECTED;
    const char* why = " (the kernel log says why)";
    if (handshake) {
      why = " (most often the TLS handshake failed: the target has no PSK for this host and subsystem, or another "
            "one; the kernel's and tlshd's logs say which)";
    } else if (e == ETIMEDOUT) {
      why = " (a target that does not answer, or a failed TLS handshake: Linux 6.12 reports a PSK the target "
            "does not have as a timeout; the kernel's and tlshd's logs say which)";
    }
    return WithReason(absl::UnavailableError(absl::StrCat("could not connect to ", spec.ToString(), " with TLS: ",
                                                          std::strerror(e), why)),
                      reason::kConnectFailed, {{"address", spec.ToString()}});
  }
  int instance = -1;
  for (absl::string_view field : absl::StrSplit(absl::string_view(answer, got > 0 ? got : 0), absl::ByAnyChar(",\n"))) {
    if (absl::ConsumePrefix(&field, "instance=") && !absl::SimpleAtoi(field, &instance)) instance = -1;
  }
  if (instance < 0) {
    return absl::InternalError(absl::StrCat("connected to ", spec.ToString(),
                                            " but the kernel's answer names no controller instance"));
  }
  return absl::StrCat("nvme", instance);
}

absl::StatusOr<std::string> ConnectFabrics(const ConnectSpec& spec, const ConnectArgs& args) {
  if (args.tls_psk) return ConnectTls(spec, args);
  // libnvme 1.3 prints the whole connect string at LOG_ERR when the kernel's answer does
  // not parse (seen with a fake /dev/nvme-fabrics), and at LOG_DEBUG always: with a key
  // in it, only what is critical.
  const bool keys = !args.dhchap_secret.empty() || !args.dhchap_ctrl_secret.empty();
  nvme_root_t r = nvme_create_root(stderr, keys ? LOG_CRIT : LOG_ERR);
  if (r == nullptr) return absl::InternalError("libnvme: no root");
  auto opt = [](const std::string& s) { return s.empty() ? nullptr : s.c_str(); };
  nvme_host_t h = args.host_nqn.empty() ? nvme_default_host(r)
                                        : nvme_lookup_host(r, args.host_nqn.c_str(), opt(args.host_id));
  nvme_ctrl_t c = nvme_create_ctrl(r, spec.nqn.c_str(), spec.transport.c_str(), opt(spec.address),
                                   opt(args.host_traddr), opt(args.host_iface), opt(spec.service));
  if (h == nullptr || c == nullptr) {
    nvme_free_tree(r);
    return absl::InternalError(absl::StrCat("libnvme could not describe ", spec.ToString()));
  }
  // The controller's keys, not the host's: this connect's only (libnvme prefers a key set
  // on the host, and the host object may be the default one, shared by every connect).
  if (!args.dhchap_secret.empty()) nvme_ctrl_set_dhchap_host_key(c, args.dhchap_secret.c_str());
  if (!args.dhchap_ctrl_secret.empty()) nvme_ctrl_set_dhchap_key(c, args.dhchap_ctrl_secret.c_str());
  nvme_fabrics_config cfg;
  FillFabricsConfig(args, &cfg);
  if (nvmf_add_ctrl(h, c, &cfg) != 0) {
    const int e = errno;
    nvme_free_ctrl(c);
    nvme_free_tree(r);
    return WithReason(absl::UnavailableError(absl::StrCat("could not connect to ", spec.ToString(), ": ",
                                               nvme_errno_to_string(e))),
                      reason::kConnectFailed, {{"address", spec.ToString()}});
  }
  const char* n = nvme_ctrl_get_name(c);
  const std::string name = n != nullptr ? n : "";
  nvme_free_tree(r);
  return name;
}

}  // namespace umpath::kernel
