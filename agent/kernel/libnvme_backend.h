#pragma once

// The kernel backend of umpathd: the kernel's NVMe controllers (any transport) as paths.
// The kernel's own multipath is off (nvme_core.multipath=N), so each controller shows
// each namespace as its own /dev/ngXnY; umpathd groups them into heads and does the
// multipath above them.
//
// - Discovery with libnvme (subsystems, controllers, namespaces); the configuration
//   names what to claim, by subsystem NQN or controller name, and fabrics controllers
//   to connect at start (retried while they are absent).
// - Identify data and the ANA log through libnvme's admin commands on /dev/nvmeX; the
//   controller state from sysfs.
// - I/O through io_uring NVMe passthrough (agent/kernel/uring_queue_pair.h), one ring
//   per (controller, worker).
// - ANA: the log is read when a controller is claimed and when it goes LIVE (the core
//   asks), after an ANA path error (the core asks), and every poll: with its multipath
//   off the kernel consumes the ANA-change event without telling anyone.
// - A controller that loses its connection goes RESETTING/CONNECTING: its paths' I/O
//   waits (SEMANTICS "queue or fail"). Once the kernel gives it up (ctrl_loss_tmo), its
//   paths are removed and delayed removal applies.
// - Attach (connect by transport, address, service, NQN; or claim an existing
//   controller) and detach (fabrics: disconnect) through the API.
//
// Each controller is a driver below the ControllerSupervisor: a reset is the kernel's
// (NVME_IOCTL_RESET, run off the control thread), a detach the supervisor's.
//
// Threading: everything on the control plane's thread: a poll every poll_ms, at once
// on queue pairs' host path errors and the core's requests (an eventfd it watches),
// rescans on kernel uevents. Blocking calls (connect, disconnect, reset) are offloaded.

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/functional/any_invocable.h"
#include "agent/control/control_plane.h"
#include "agent/control/supervisor.h"
#include "agent/core/multipath.h"
#include "agent/core/worker.h"
#include "agent/kernel/connect_options.h"
#include "agent/kernel/fabrics.h"

namespace umpath::kernel {

struct LibnvmeBackendOptions {
  // Subsystem NQNs (every controller of that subsystem) or controller names (nvme3).
  std::vector<std::string> claims;
  // Fabrics controllers to connect and claim; one that is absent is connected again
  // every reconnect_secs.
  std::vector<ConnectSpec> connect;
  // What `Attach kernel nvmeN` may claim besides `claims`: names, NQNs or "all".
  std::vector<std::string> attachable;
  std::string host_nqn;  // empty: libnvme's default (/etc/nvme/hostnqn)
  std::string host_id;
  uint32_t queue_depth = 128;  // commands per ring
  int poll_ms = 1000;          // controller state and ANA log
  // Stop waits this long for the kernel to return the commands it holds (it never
  // completes them itself: SEMANTICS "Fencing"); its own I/O timeout bounds them.
  int drain_timeout_ms = 35000;
  int ctrl_loss_tmo_secs = 600;  // for fabrics controllers this agent connects
  int reconnect_delay_secs = 10;
  int reconnect_secs = 5;
  std::function<void(const std::string&)> log;
  // Opens the kernel's uevent socket (OpenUeventSocket when empty; tests give a pipe).
  std::function<absl::StatusOr<int>()> uevents;
};

// Whether the kernel's native multipath is on (/sys/module/nvme_core/parameters/
// multipath); its controllers' namespaces are then the kernel's heads, not paths.
bool KernelMultipathEnabled();

class LibnvmeBackend {
 public:
  using Outcomes = std::vector<std::pair<std::string, absl::Status>>;
  // `plane` and `sup` outlive the backend; so do the controllers the supervisor has.
  static absl::StatusOr<std::unique_ptr<LibnvmeBackend>> Create(Multipath* mp, ControlPlane* plane,
                                                                ControllerSupervisor* sup,
                                                                std::vector<Worker*> workers,
                                                                LibnvmeBackendOptions options);
  ~LibnvmeBackend();

  // Everything below on the control thread. Results come as calls of `done` there.
  //
  // Connects the configured fabrics controllers and claims every configured controller
  // present. Each outcome is reported; one failing does not stop the others.
  void AttachConfigured(absl::AnyInvocable<void(Outcomes) &&> done);
  // transport "kernel": address is an existing controller (nvme3 or /dev/nvme3);
  // tcp/rdma/fc/loop: connect (or find the controller already connected) and claim it.
  // Answers the controller's name. Idempotent.
  // `options` (fabrics only) apply to a new connect; a controller already connected keeps
  // its own.
  void Attach(const std::string& transport, const std::string& address, const std::string& service,
              const std::string& nqn, const ConnectOptions& options,
              absl::AnyInvocable<void(absl::StatusOr<std::string>) &&> done);
  // Its paths fail over, then it is let go; a fabrics controller is disconnected.
  void Detach(const std::string& name, absl::string_view reason,
              absl::AnyInvocable<void(absl::Status) &&> done);
  bool Owns(const std::string& name) const;
  // Polls, rescans on uevents and reconnects from now on.
  void Start();

 private:
  struct Ctrl;
  struct Scanned;
  using NameDone = absl::AnyInvocable<void(absl::StatusOr<std::string>) &&>;
  // Every controller of every subsystem, from sysfs through libnvme.
  static std::vector<Scanned> ScanTopology();
  LibnvmeBackend(Multipath* mp, ControlPlane* plane, ControllerSupervisor* sup,
                 std::vector<Worker*> workers, LibnvmeBackendOptions options, int notify_fd);
  absl::StatusOr<std::string> Claim(const Scanned& sc);
  absl::StatusOr<std::unique_ptr<Ctrl>> Open(const Scanned& sc);
  // Connects (off the control thread), then claims once the kernel shows it live.
  void Connect(ConnectSpec spec, ConnectOptions options, NameDone done);
  void ClaimWhenLive(std::string name, std::string what, int tries_left, NameDone done);
  void ConnectConfigured(size_t i, Outcomes out, absl::AnyInvocable<void(Outcomes) &&> done);
  void AddNamespaces(Ctrl* c, const Scanned& sc);
  absl::StatusOr<NamespaceSpec> IdentifyPath(Ctrl* c, uint32_t nsid, const std::string& nsname);
  void ReadAnaLog(Ctrl* c);
  void Poll(bool read_ana);
  void Rescan();
  void Reconnect();
  void Tick();
  Ctrl* Find(absl::string_view name) const;
  bool Wanted(const Scanned& sc) const;
  // Records the outcome of an attempt; true when it differs from the last one (log it).
  bool Changed(const std::string& key, const std::string& outcome);
  void Log(const std::string& line) const;

  Multipath* const mp_;
  ControlPlane* const plane_;
  ControllerSupervisor* const sup_;
  const std::vector<Worker*> workers_;
  const LibnvmeBackendOptions options_;
  // Queue pairs' host path errors and the core's requests: poll now.
  const int notify_fd_;
  int uevent_fd_ = -1;
  ControlPlane::TimerId tick_ = 0;
  int ticks_ = 0;

  // The controllers in the core (the supervisor owns them); one leaves this map as it
  // leaves the core.
  std::map<std::string, Ctrl*> ctrls_;
  // Detached through the API while the kernel keeps them: not claimed again by a rescan
  // until they are gone or attached again.
  std::set<std::string> released_;
  // Configured connects (ConnectSpec::ToString) whose controller was detached through
  // the API: not connected again until an attach through the API asks for them.
  std::set<std::string> detached_connects_;
  // Fabrics controllers this agent connected (nvmf_add_ctrl): the only ones a detach
  // disconnects. One it found connected (by nvme-cli, another CSI driver, an earlier
  // agent) is let go and left connected.
  std::set<std::string> connected_;
  // Connects under way, so a reconnect does not start a second.
  std::set<std::string> connecting_;
  // The last outcome of claiming or connecting each thing, so retries log only changes.
  std::map<std::string, std::string> last_attempt_;
  bool rescan_ = false;
  int64_t next_reconnect_ns_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace umpath::kernel
