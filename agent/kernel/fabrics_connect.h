#pragma once

// The fabrics connect through libnvme 1.3: ConnectArgs (agent/kernel/connect_options.h)
// into libnvme's host, controller and nvme_fabrics_config, then nvmf_add_ctrl, which
// writes the kernel's option string to /dev/nvme-fabrics.
//
// A TLS connect is the one exception: libnvme 1.3 has the bare "tls" flag but no
// "tls_key=" (nor "keyring="), so for it alone the agent writes the option string
// itself, with the same options libnvme would have written plus "tls,tls_key=<serial>"
// of a key it put in the kernel's key store for this connect (agent/kernel/psk_key.h).
// The kernel then runs the TLS 1.3 handshake through its handshake upcall
// (net/handshake), which needs a handshake daemon (tlshd, ktls-utils) listening.

#include <cstdint>
#include <string>

extern "C" {
#include <libnvme.h>
}

#include "absl/status/statusor.h"
#include "agent/kernel/connect_options.h"
#include "agent/kernel/fabrics.h"

namespace umpath::kernel {

// libnvme's defaults, then the values `args` sets. libnvme 1.3 leaves keep_alive_tmo 0
// out of the connect string (the kernel's default then) and passes ctrl_loss_tmo -1
// (reconnect forever) as it is.
void FillFabricsConfig(const ConnectArgs& args, nvme_fabrics_config* cfg);

// Connects a fabrics controller and answers its name (nvmeN). Blocks (a TCP connect, the
// fabrics handshake); touches only a libnvme tree of its own. The keys `args` holds go to
// the kernel in the connect string and nowhere else.
absl::StatusOr<std::string> ConnectFabrics(const ConnectSpec& spec, const ConnectArgs& args);

// The kernel's option string for a TLS connect (drivers/nvme/host/fabrics.c,
// nvmf_parse_options): the options libnvme 1.3 writes for `args`, in its order, then
// "tls" (TLS on: nvme_tcp_tls_configured) and "tls_key=" (this PSK, not the default
// lookup in .nvme). `host_nqn` and `host_id` are the host's (libnvme's default host when
// args has none). Holds secrets: never logged.
std::string TlsConnectString(const ConnectSpec& spec, const ConnectArgs& args, const std::string& host_nqn,
                             const std::string& host_id, int32_t key_serial);

// Writes `options` to /dev/nvme-fabrics and answers the new controller's name from the
// kernel's answer ("instance=N,cntlid=M" gives nvmeN). The error carries the errno
// and, as the kernel's own messages are in its log only, what it usually means here;
// never the options.
absl::StatusOr<std::string> WriteFabricsConnect(const std::string& options, const ConnectSpec& spec);

}  // namespace umpath::kernel
