#include "agent/kernel/fabrics_connect.h"

#include <syslog.h>

#include <cerrno>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "agent/base/error_reason.h"

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

absl::StatusOr<std::string> ConnectFabrics(const ConnectSpec& spec, const ConnectArgs& args) {
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
