#include "agent/app/config.h"

#include <grp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "agent/base/status_macros.h"

ABSL_FLAG(std::string, socket, "/run/umpath/umpathd.sock", "the control API's Unix socket");
ABSL_FLAG(std::string, socket_mode, "0660", "its mode, octal");
ABSL_FLAG(std::string, socket_group, "", "its group (name or gid); empty: the agent's own");
ABSL_FLAG(std::vector<std::string>, admin_uids, {"0"}, "uids with the admin role");
ABSL_FLAG(std::vector<std::string>, admin_groups, {}, "groups (names or gids; primary or supplementary at connect time) with the admin role");
ABSL_FLAG(std::vector<std::string>, viewer_uids, {}, "uids with the viewer role");
ABSL_FLAG(std::vector<std::string>, viewer_groups, {}, "groups (names or gids; primary or supplementary at connect time) with the viewer role");
ABSL_FLAG(std::string, node, "", "this node's name, as reported by GetAgentInfo (default: hostname)");
ABSL_FLAG(std::string, default_io_policy, "numa", "numa, round-robin or queue-depth");
ABSL_FLAG(std::string, default_delayed_removal_secs, "0", "0..86400, for new heads");
ABSL_FLAG(std::string, default_io_fail_timeout_secs, "0",
          "0..86400, for new heads: I/O that waited this long for a usable path fails (0: it "
          "waits for the removal)");
ABSL_FLAG(int, workers, 1, "I/O worker threads");
ABSL_FLAG(int, max_watchers, 1024, "WatchEvents streams in total");
ABSL_FLAG(int, max_watchers_per_caller, 128, "WatchEvents streams per caller identity (a uid, all its processes together; or a certificate)");
ABSL_FLAG(int, watch_queue_limit, 4096, "events a watcher may fall behind by before it is ended");
ABSL_FLAG(int, progress_interval_ms, 10000, "progress marker interval on idle streams");
ABSL_FLAG(std::string, tcp_address, "", "optional mTLS listener, e.g. 0.0.0.0:7443");
ABSL_FLAG(std::string, tls_cert_file, "", "the server certificate (PEM) for --tcp_address");
ABSL_FLAG(std::string, tls_key_file, "", "its private key (PEM)");
ABSL_FLAG(std::string, tls_client_ca_file, "", "CA (PEM) that client certificates must chain to");
ABSL_FLAG(std::vector<std::string>, admin_names, {}, "certificate SANs (a CN only of a certificate without SANs) with the admin role");
ABSL_FLAG(std::vector<std::string>, viewer_names, {}, "certificate SANs (a CN only of a certificate without SANs) with the viewer role");
ABSL_FLAG(std::string, health_address, "", "optional plaintext health-only listener, e.g. 0.0.0.0:7444");
ABSL_FLAG(std::string, metrics_address, "",
          "Prometheus metrics (text exposition at /metrics) on this HOST:PORT, e.g. "
          "127.0.0.1:9810; empty: off");
ABSL_FLAG(std::string, metrics_tls_cert_file, "",
          "serve metrics over HTTPS with this certificate (PEM, with its chain); empty: HTTP");
ABSL_FLAG(std::string, metrics_tls_key_file, "", "its private key (PEM)");
ABSL_FLAG(std::string, metrics_tls_client_ca_file, "",
          "scrapers must present a certificate that chains to this CA (PEM); empty: any scraper");
ABSL_FLAG(std::string, metrics_path_detail, "full",
          "which paths get per-path series (15 each; heads always get theirs): full (every "
          "path), errors (a path not selectable or erring, and 10 minutes after), none");
ABSL_FLAG(std::string, state_file, "/var/lib/umpath/heads",
          "per-head settings made through the API, kept across restarts");

ABSL_FLAG(std::vector<std::string>, vfio_devices, {},
          "NVMe functions to drive through vfio-pci: PCI addresses, or \"all\" for every NVMe "
          "function bound to vfio-pci (every NVMe function with --bind_vfio)");
ABSL_FLAG(bool, bind_vfio, false, "bind the --vfio_devices to vfio-pci first");
ABSL_FLAG(std::vector<std::string>, vfio_attachable, {},
          "NVMe functions AttachController may take besides --vfio_devices: PCI addresses, or "
          "\"all\"; by default only the --vfio_devices");
ABSL_FLAG(int, queue_depth, 256,
          "entries per I/O queue (a vfio queue pair, a kernel path's io_uring), 2..4096");
ABSL_FLAG(int, io_timeout_ms, 30000, "I/O command timeout; a controller past it is reset");
ABSL_FLAG(int, health_check_ms, 1000,
          "how often each vfio controller's status is read (fatal status: reset; all ones: "
          "lost); 0: never");
ABSL_FLAG(bool, kernel, true,
          "offer the kernel's NVMe controllers as paths (libnvme, io_uring passthrough on "
          "/dev/ngXnY); needs nvme_core.multipath=N");
ABSL_FLAG(std::vector<std::string>, kernel_controllers, {},
          "kernel NVMe controllers to claim: subsystem NQNs (every controller of it) or "
          "controller names (nvme3)");
ABSL_FLAG(std::vector<std::string>, kernel_attachable, {},
          "kernel NVMe controllers AttachController may claim besides --kernel_controllers and "
          "--kernel_connect: subsystem NQNs, controller names, or \"all\"; by default none");
ABSL_FLAG(std::vector<std::string>, kernel_connect, {},
          "fabrics controllers to connect and claim, TRANSPORT:ADDRESS:SERVICE:NQN (an IPv6 "
          "address in brackets); one that goes away is connected again");
ABSL_FLAG(int, kernel_poll_ms, 1000,
          "how often each kernel controller's state and ANA log are read (the kernel keeps "
          "its ANA events to itself when its multipath is off)");
ABSL_FLAG(std::string, host_nqn, "", "host NQN for fabrics connects (default: /etc/nvme/hostnqn)");
ABSL_FLAG(std::string, host_id, "", "host ID for fabrics connects (default: /etc/nvme/hostid)");
ABSL_FLAG(int, fabrics_ctrl_loss_tmo_secs, 600,
          "how long the kernel keeps reconnecting a fabrics controller this agent connected "
          "before it gives it up (its paths then go; delayed removal applies); -1: forever");
ABSL_FLAG(int, fabrics_reconnect_delay_secs, 10, "the kernel's delay between reconnect attempts");
ABSL_FLAG(std::string, sim, "",
          "simulated NVMe controllers in memory, SUBSYSTEMS:NAMESPACES:CONTROLLERS (e.g. 2:4:2: "
          "8 heads of 2 paths), with fault injection through umpath.v1alpha.SimulatorControl; "
          "empty: none");
ABSL_FLAG(int, sim_namespace_mib, 64, "each simulated namespace's size, MiB");
ABSL_FLAG(bool, sim_memory, true,
          "simulated namespaces keep what is written (memory is taken as it is written); "
          "false: null devices (reads return zeros)");
ABSL_FLAG(int, sim_latency_us, 0, "simulated completion latency, microseconds (0..10,000,000)");
ABSL_FLAG(bool, ublk, true, "offer heads as block devices through ublk (where the kernel has it)");
ABSL_FLAG(bool, export_all, false, "export every head as /dev/ublkbN as it appears");
ABSL_FLAG(int, ublk_queue_depth, 64, "requests per ublk queue (one queue per worker), 1..4096");
ABSL_FLAG(int, ublk_max_io_kib, 128, "largest I/O of a ublk device, KiB (also capped by MDTS)");
ABSL_FLAG(int, max_pinned_mib, 64,
          "budget of the block devices' I/O buffers (pinned for DMA), MiB: shared by every "
          "exported head, each guaranteed one --ublk_max_io_kib buffer per worker");
ABSL_FLAG(bool, ublk_test_crash_after_add, false,
          "a test hook: the agent kills itself (SIGKILL) right after making a device, before "
          "starting it (the lab's crash test)");
ABSL_FLAG(bool, ublk_user_copy, false,
          "pooled ublk devices copy request data with pread/pwrite on /dev/ublkcN (USER_COPY, "
          "Linux 6.5) instead of the driver copying at fetch and commit (NEED_GET_DATA)");
ABSL_FLAG(bool, ublk_zero_copy, true,
          "heads on kernel NVMe controllers serve /dev/ublkbN without a copy (AUTO_BUF_REG, "
          "Linux 6.16: the request's pages go to the NVMe passthrough as an io_uring fixed "
          "buffer) where the kernel offers it and the agent drives no vfio controller");
ABSL_FLAG(bool, ublk_user_recovery, true,
          "make devices that outlive the agent: I/O waits while it restarts (kernel permitting)");
ABSL_FLAG(bool, ublk_quiesce, true,
          "where the kernel offers QUIESCE_DEV (Linux 6.15), make devices with it and quiesce "
          "them on a hand-over stop, answering every request taken before the agent goes; "
          "false: hold them for the next agent as on older kernels");
ABSL_FLAG(std::string, stop, "handover",
          "what a stop (SIGTERM) does with the block devices: handover (they stay, their "
          "waiting I/O held for the next agent, which takes them over), remove (each is "
          "removed, but one in use (mounted, open, held) is handed over instead) or "
          "force-remove (each is removed, in use or not)");
ABSL_FLAG(std::string, handover_socket, "/run/umpath/umpathd.handover",
          "where a successor asks this agent to hand its running vfio controllers over "
          "(a Unix socket, root only); empty: no hand-over");
ABSL_FLAG(bool, take_over, false,
          "start by taking over from the agent answering on --handover_socket: it stops, "
          "handing its idle vfio controllers over running (no reset) and its block devices "
          "as on a stop; without one, start as usual");
ABSL_FLAG(bool, linger_after_handover, false,
          "after handing over to a successor (--take_over), wait for SIGTERM before exiting "
          "instead of exiting at once: where the process is restarted on exit (a "
          "DaemonSet's container), the restart would take over back from the successor");
ABSL_FLAG(std::string, ublk_state_dir, "/run/umpath/ublk", "where each device's head is recorded");
ABSL_FLAG(std::string, by_id_dir, "/dev/disk/by-id",
          "where each exported head gets its link umpath-HEAD to its /dev/ublkbN (kept across "
          "unexport, export and restarts); empty: no links");
ABSL_FLAG(int, ublk_recover_wait_secs, 30,
          "how long a device left by the last run waits for its head before it is removed");

namespace umpath::app {
namespace {

absl::StatusOr<gid_t> ParseGroup(const std::string& text) {
  unsigned v;
  if (absl::SimpleAtoi(text, &v)) return static_cast<gid_t>(v);
  if (group* g = getgrnam(text.c_str())) return g->gr_gid;
  return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not a group"));
}

template <typename T>
absl::Status ParseIds(const std::vector<std::string>& in, bool groups, std::vector<T>* out) {
  for (const std::string& s : in) {
    if (groups) {
      ASSIGN_OR_RETURN(gid_t id, ParseGroup(s));
      out->push_back(static_cast<T>(id));
      continue;
    }
    unsigned id;
    if (!absl::SimpleAtoi(s, &id)) {
      return absl::InvalidArgumentError(absl::StrCat("\"", s, "\" is not a uid"));
    }
    out->push_back(static_cast<T>(id));
  }
  return absl::OkStatus();
}

absl::Status ServerFromFlags(server::ServerOptions& so) {
  so.socket_path = absl::GetFlag(FLAGS_socket);
  unsigned mode;
  if (!absl::numbers_internal::safe_strtou32_base(absl::GetFlag(FLAGS_socket_mode), &mode, 8) ||
      mode > 0777) {
    return absl::InvalidArgumentError("--socket_mode must be octal 0..0777");
  }
  so.socket_mode = mode;
  if (!absl::GetFlag(FLAGS_socket_group).empty()) {
    absl::StatusOr<gid_t> g = ParseGroup(absl::GetFlag(FLAGS_socket_group));
    if (!g.ok()) return absl::InvalidArgumentError("unknown --socket_group");
    so.socket_gid = *g;
  }
  so.access.admin_uids.clear();
  RETURN_IF_ERROR(ParseIds(absl::GetFlag(FLAGS_admin_uids), false, &so.access.admin_uids));
  RETURN_IF_ERROR(ParseIds(absl::GetFlag(FLAGS_admin_groups), true, &so.access.admin_gids));
  RETURN_IF_ERROR(ParseIds(absl::GetFlag(FLAGS_viewer_uids), false, &so.access.viewer_uids));
  RETURN_IF_ERROR(ParseIds(absl::GetFlag(FLAGS_viewer_groups), true, &so.access.viewer_gids));
  const int max_watchers = absl::GetFlag(FLAGS_max_watchers);
  const int per_caller = absl::GetFlag(FLAGS_max_watchers_per_caller);
  const int queue_limit = absl::GetFlag(FLAGS_watch_queue_limit);
  const int progress_ms = absl::GetFlag(FLAGS_progress_interval_ms);
  if (max_watchers < 1 || per_caller < 1 || queue_limit < 1 || progress_ms < 10) {
    return absl::InvalidArgumentError(
        "watcher limits must be positive (progress at least 10 ms)");
  }
  so.service.watch.max_watchers = static_cast<size_t>(max_watchers);
  so.service.watch.max_watchers_per_caller = static_cast<size_t>(per_caller);
  so.service.watch.queue_limit = static_cast<size_t>(queue_limit);
  so.service.watch.progress_interval = std::chrono::milliseconds(progress_ms);
  so.tcp_address = absl::GetFlag(FLAGS_tcp_address);
  so.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  so.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  so.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file);
  so.access.admin_names = absl::GetFlag(FLAGS_admin_names);
  so.access.viewer_names = absl::GetFlag(FLAGS_viewer_names);
  so.health_address = absl::GetFlag(FLAGS_health_address);
  so.service.node = absl::GetFlag(FLAGS_node);
  if (so.service.node.empty()) {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    so.service.node = host;
  }
  return absl::OkStatus();
}

absl::StatusOr<vfio::VfioManagerOptions> VfioFromFlags() {
  vfio::VfioManagerOptions vo;
  vo.devices = absl::GetFlag(FLAGS_vfio_devices);
  vo.bind = absl::GetFlag(FLAGS_bind_vfio);
  vo.attachable = absl::GetFlag(FLAGS_vfio_attachable);
  for (const std::string& a : vo.attachable) {
    if (a != "all" && !vfio::IsPciAddress(a)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--vfio_attachable: \"", a, "\" is not a PCI address (DDDD:BB:DD.F) or \"all\""));
    }
  }
  const int qd = absl::GetFlag(FLAGS_queue_depth);
  const int timeout = absl::GetFlag(FLAGS_io_timeout_ms);
  if (qd < 2 || qd > 4096 || timeout < 100) {
    return absl::InvalidArgumentError(
        "--queue_depth must be 2..4096, --io_timeout_ms at least 100");
  }
  vo.queue_depth = static_cast<uint16_t>(qd);
  vo.io_timeout_ms = timeout;
  vo.health_interval_ms = absl::GetFlag(FLAGS_health_check_ms);
  if (vo.health_interval_ms < 0) {
    return absl::InvalidArgumentError("--health_check_ms must be 0 or more");
  }
  return vo;
}

absl::StatusOr<kernel::LibnvmeBackendOptions> KernelFromFlags() {
  kernel::LibnvmeBackendOptions ko;
  ko.claims = absl::GetFlag(FLAGS_kernel_controllers);
  ko.attachable = absl::GetFlag(FLAGS_kernel_attachable);
  for (const std::string& c : absl::GetFlag(FLAGS_kernel_connect)) {
    absl::StatusOr<kernel::ConnectSpec> spec = kernel::ParseConnectFlag(c);
    if (!spec.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--kernel_connect: ", spec.status().message()));
    }
    ko.connect.push_back(*spec);
  }
  ko.queue_depth = static_cast<uint32_t>(std::clamp(absl::GetFlag(FLAGS_queue_depth), 0, 1 << 20));
  ko.poll_ms = absl::GetFlag(FLAGS_kernel_poll_ms);
  ko.host_nqn = absl::GetFlag(FLAGS_host_nqn);
  ko.host_id = absl::GetFlag(FLAGS_host_id);
  ko.ctrl_loss_tmo_secs = absl::GetFlag(FLAGS_fabrics_ctrl_loss_tmo_secs);
  ko.reconnect_delay_secs = absl::GetFlag(FLAGS_fabrics_reconnect_delay_secs);
  ko.log = [](const std::string& line) { std::fprintf(stderr, "umpath-kernel: %s\n", line.c_str()); };
  if (ko.ctrl_loss_tmo_secs < -1 || ko.reconnect_delay_secs < 1) {
    return absl::InvalidArgumentError(
        "--fabrics_ctrl_loss_tmo_secs must be -1 or more, --fabrics_reconnect_delay_secs at "
        "least 1");
  }
  return ko;
}

absl::StatusOr<sim::SimOptions> SimFromFlags() {
  sim::SimOptions so;
  RETURN_IF_ERROR(sim::ParseSimTopology(absl::GetFlag(FLAGS_sim), &so));
  const int mib = absl::GetFlag(FLAGS_sim_namespace_mib);
  const int latency_us = absl::GetFlag(FLAGS_sim_latency_us);
  const int qd = absl::GetFlag(FLAGS_queue_depth);
  const int timeout = absl::GetFlag(FLAGS_io_timeout_ms);
  if (mib < 1 || mib > (1 << 20) || latency_us < 0 || latency_us > 10'000'000) {
    return absl::InvalidArgumentError(
        "--sim_namespace_mib must be 1..1048576, --sim_latency_us 0..10000000");
  }
  if (qd < 2 || qd > 4096 || timeout < 100) {
    return absl::InvalidArgumentError("--queue_depth must be 2..4096, --io_timeout_ms at least 100");
  }
  so.namespace_bytes = static_cast<uint64_t>(mib) << 20;
  so.memory = absl::GetFlag(FLAGS_sim_memory);
  so.latency_ns = int64_t{latency_us} * 1000;
  so.queue_depth = static_cast<uint32_t>(qd);
  so.io_timeout_ns = int64_t{timeout} * 1'000'000;
  so.log = [](const std::string& line) { std::fprintf(stderr, "umpath-sim: %s\n", line.c_str()); };
  return so;
}

absl::StatusOr<ublk::StopMode> ParseStop(const std::string& text) {
  for (ublk::StopMode m : {ublk::StopMode::kHandOver, ublk::StopMode::kRemove,
                           ublk::StopMode::kForceRemove}) {
    if (text == ublk::StopModeName(m)) return m;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--stop takes handover, remove or force-remove, not \"", text, "\""));
}

ublk::ExporterOptions UblkFromFlags() {
  ublk::ExporterOptions eo;
  eo.queue_depth = static_cast<uint16_t>(std::clamp(absl::GetFlag(FLAGS_ublk_queue_depth), 0, 65535));
  eo.max_io_bytes =
      static_cast<uint32_t>(std::clamp(absl::GetFlag(FLAGS_ublk_max_io_kib), 0, 1 << 20)) * 1024u;
  eo.max_pinned_bytes = static_cast<uint64_t>(std::clamp(absl::GetFlag(FLAGS_max_pinned_mib), 0, 1 << 20)) << 20;
  eo.export_all = absl::GetFlag(FLAGS_export_all);
  eo.test_crash_after_add = absl::GetFlag(FLAGS_ublk_test_crash_after_add);
  eo.user_recovery = absl::GetFlag(FLAGS_ublk_user_recovery);
  eo.quiesce = absl::GetFlag(FLAGS_ublk_quiesce);
  eo.data.user_copy = absl::GetFlag(FLAGS_ublk_user_copy);
  eo.data.zero_copy = absl::GetFlag(FLAGS_ublk_zero_copy);
  eo.state_dir = absl::GetFlag(FLAGS_ublk_state_dir);
  eo.by_id_dir = absl::GetFlag(FLAGS_by_id_dir);
  eo.recover_wait_secs = absl::GetFlag(FLAGS_ublk_recover_wait_secs);
  eo.log = [](const std::string& line) { std::fprintf(stderr, "umpathd: %s\n", line.c_str()); };
  return eo;
}

}  // namespace

absl::StatusOr<AgentConfig> AgentConfigFromFlags() {
  AgentConfig c;
  RETURN_IF_ERROR(ServerFromFlags(c.server));
  ASSIGN_OR_RETURN(c.default_policy, ParseIoPolicy(absl::GetFlag(FLAGS_default_io_policy)));
  ASSIGN_OR_RETURN(c.default_delayed_removal_secs,
                   ParseDelayedRemovalSecs(absl::GetFlag(FLAGS_default_delayed_removal_secs)));
  ASSIGN_OR_RETURN(c.default_io_fail_timeout_secs,
                   ParseIoFailTimeoutSecs(absl::GetFlag(FLAGS_default_io_fail_timeout_secs)));
  c.workers = absl::GetFlag(FLAGS_workers);
  if (c.workers < 1 || c.workers > 256) {
    return absl::InvalidArgumentError("--workers must be 1..256");
  }
  c.state_file = absl::GetFlag(FLAGS_state_file);
  c.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  c.metrics_tls_cert_file = absl::GetFlag(FLAGS_metrics_tls_cert_file);
  c.metrics_tls_key_file = absl::GetFlag(FLAGS_metrics_tls_key_file);
  c.metrics_tls_client_ca_file = absl::GetFlag(FLAGS_metrics_tls_client_ca_file);
  if (c.metrics_address.empty() && !(c.metrics_tls_cert_file.empty() && c.metrics_tls_key_file.empty() &&
                                     c.metrics_tls_client_ca_file.empty())) {
    return absl::InvalidArgumentError("--metrics_tls_* need --metrics_address");
  }
  ASSIGN_OR_RETURN(c.metrics_path_detail, server::ParsePathDetail(absl::GetFlag(FLAGS_metrics_path_detail)));
  if (!absl::GetFlag(FLAGS_vfio_devices).empty()) {
    ASSIGN_OR_RETURN(c.vfio, VfioFromFlags());
  }
  if (absl::GetFlag(FLAGS_kernel)) {
    ASSIGN_OR_RETURN(c.kernel, KernelFromFlags());
  }
  if (!absl::GetFlag(FLAGS_sim).empty()) {
    ASSIGN_OR_RETURN(c.sim, SimFromFlags());
  }
  if (absl::GetFlag(FLAGS_ublk)) c.ublk = UblkFromFlags();
  ASSIGN_OR_RETURN(c.stop, ParseStop(absl::GetFlag(FLAGS_stop)));
  c.handover_socket = absl::GetFlag(FLAGS_handover_socket);
  c.take_over = absl::GetFlag(FLAGS_take_over);
  c.linger_after_handover = absl::GetFlag(FLAGS_linger_after_handover);
  if (c.take_over && c.handover_socket.empty()) {
    return absl::InvalidArgumentError("--take_over needs --handover_socket");
  }
  return c;
}

}  // namespace umpath::app
