#pragma once

// umpathd's configuration: every flag of the agent (or a --flagfile of them), read and
// checked once into one value. umpathd and umpath-perf share it.

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "agent/core/types.h"
#include "agent/export/exporter.h"
#include "agent/kernel/libnvme_backend.h"
#include "agent/sim/sim_backend.h"
#include "agent/vfio/vfio_manager.h"
#include "server/control_server.h"
#include "server/metrics.h"

namespace umpath::app {

struct AgentConfig {
  server::ServerOptions server;
  std::string state_file;
  std::string metrics_address;  // empty: no metrics endpoint
  std::string metrics_tls_cert_file, metrics_tls_key_file, metrics_tls_client_ca_file;
  server::PathDetail metrics_path_detail = server::PathDetail::kFull;  // --metrics_path_detail
  IoPolicy default_policy = IoPolicy::kNuma;
  uint32_t default_io_fail_timeout_secs = 0;
  uint32_t default_delayed_removal_secs = 0;
  int workers = 1;
  std::optional<vfio::VfioManagerOptions> vfio;         // --vfio_devices
  std::optional<kernel::LibnvmeBackendOptions> kernel;  // --kernel
  std::optional<sim::SimOptions> sim;                    // --sim
  // --ublk: the block-device frontend (workers, alloc and log are the agent's).
  std::optional<ublk::ExporterOptions> ublk;
  // --stop: what a signal's stop does with the block devices: hand them over to the next
  // agent (they stay, and what waits is served by it), or remove them (decommissioning;
  // but those in use, unless forced). StopAgent brings its own.
  ublk::StopMode stop = ublk::StopMode::kHandOver;
  // --handover_socket: where this agent waits for a successor (a Unix socket; empty:
  // none), and --take_over: a new agent first asks the one answering there to hand its
  // running vfio controllers over (issue 16 item 3).
  std::string handover_socket = "/run/umpath/umpathd.handover";
  bool take_over = false;
  // --linger_after_handover: main waits for a signal after a stop a successor asked for.
  bool linger_after_handover = false;
};

// From the flags. INVALID_ARGUMENT names the flag and what it takes.
absl::StatusOr<AgentConfig> AgentConfigFromFlags();

}  // namespace umpath::app
