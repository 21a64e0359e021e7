#pragma once

// What the kernel backend reads from text: controller states from sysfs, the kernel's
// fabrics address strings, and the fabrics controllers a caller asks to connect.
// Pure functions, unit-tested without hardware.

#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/core/types.h"

namespace umpath::kernel {

// /sys/class/nvme/nvmeX/state: "new", "live", "resetting", "connecting", "deleting",
// "deleting (no IO)", "dead" (trailing newline allowed). Anything else: nullopt.
std::optional<ControllerState> ParseControllerState(absl::string_view text);

// A fabrics controller to connect: transport tcp|rdma|fc|loop, the target's address
// (an IPv4 or IPv6 address for tcp and rdma; nn-0x...:pn-0x... for fc; empty for
// loop), its service (port, 1..65535, for tcp and rdma; 4420 if empty) and the
// subsystem NQN.
struct ConnectSpec {
  std::string transport;
  std::string address;
  std::string service;
  std::string nqn;
  std::string ToString() const;  // "tcp 127.0.0.1:4420 nqn...."
};

// INVALID_ARGUMENT with what is wrong and what is accepted; fills in the default
// service. Nothing is connected.
absl::Status ValidateConnectSpec(ConnectSpec& spec);

// A --kernel_connect entry: TRANSPORT:ADDRESS:SERVICE:NQN, the address in brackets when
// it is IPv6 ("tcp:[::1]:4420:nqn.2026-01.io.example:a"). Validated as above.
absl::StatusOr<ConnectSpec> ParseConnectFlag(absl::string_view text);

// The value of KEY in a kernel controller address ("traddr=127.0.0.1,trsvcid=4420,
// src_addr=127.0.0.1"); empty when it has none.
std::string AddressField(absl::string_view address, absl::string_view key);

// Whether a kernel controller (its transport, address string and subsystem NQN) is
// the one `spec` names.
bool MatchesConnectSpec(absl::string_view transport, absl::string_view address,
                        absl::string_view subsys_nqn, const ConnectSpec& spec);

// Whether a kernel controller (its name, its subsystem NQN as sysfs gives it) is named by
// one of `lists` (controller names, subsystem NQNs, or "all"): what `Attach kernel nvmeN`
// may claim is the configured --kernel_controllers and the --kernel_attachable (issue 17
// item 2), not another CSI driver's controller.
bool NamedIn(absl::string_view name, absl::string_view subsys_nqn,
             std::initializer_list<const std::vector<std::string>*> lists);

// NQN syntax (NVMe Base 2.0, 4.5): at most 223 bytes, "nqn.yyyy-mm.reverse.domain:..."
// or the "nqn.2014-08.org.nvmexpress:uuid:..." form.
bool IsValidNqn(absl::string_view nqn);

}  // namespace umpath::kernel
