#pragma once

// The fabrics connect through libnvme 1.3: ConnectArgs (agent/kernel/connect_options.h)
// into libnvme's host, controller and nvme_fabrics_config, then nvmf_add_ctrl, which
// writes the kernel's option string to /dev/nvme-fabrics.

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

}  // namespace umpath::kernel
