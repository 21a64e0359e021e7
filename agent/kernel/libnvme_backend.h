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
// Threading: Attach/Detach/RequestReset/Owns from any thread, serialized by mu_. The
// event thread Start() makes polls the controllers every poll_ms, reacts at once to
// queue pairs' host path errors and the core's requests (an eventfd), and rescans on
// kernel uevents; it sleeps in epoll_wait otherwise.

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/base/mutex.h"
#include "agent/core/multipath.h"
#include "agent/core/worker.h"
#include "agent/kernel/fabrics.h"

namespace umpath::kernel {

struct LibnvmeBackendOptions {
  // Subsystem NQNs (every controller of that subsystem) or controller names (nvme3).
  std::vector<std::string> claims;
  // Fabrics controllers to connect and claim; one that is absent is connected again
  // every reconnect_secs.
  std::vector<ConnectSpec> connect;
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
};

// Whether the kernel's native multipath is on (/sys/module/nvme_core/parameters/
// multipath); its controllers' namespaces are then the kernel's heads, not paths.
bool KernelMultipathEnabled();

class LibnvmeBackend {
 public:
  static absl::StatusOr<std::unique_ptr<LibnvmeBackend>> Create(Multipath* mp,
                                                                std::vector<Worker*> workers,
                                                                LibnvmeBackendOptions options);
  ~LibnvmeBackend();

  // Connects the configured fabrics controllers and claims every configured controller
  // present. Each outcome is reported; one failing does not stop the others.
  std::vector<std::pair<std::string, absl::Status>> AttachConfigured();
  // transport "kernel": address is an existing controller (nvme3 or /dev/nvme3);
  // tcp/rdma/fc/loop: connect (or find the controller already connected) and claim it.
  // Returns the controller's name. Idempotent.
  absl::StatusOr<std::string> Attach(const std::string& transport, const std::string& address,
                                     const std::string& service, const std::string& nqn);
  // Its paths fail over, then it is let go; a fabrics controller is disconnected.
  absl::Status Detach(const std::string& name, absl::string_view reason);
  // Resets the kernel's controller (NVME_IOCTL_RESET); its I/O fails over meanwhile.
  absl::Status RequestReset(const std::string& name);
  bool Owns(const std::string& name) const;

  void Start();
  // Lets every controller go (fabrics ones stay connected for the next agent).
  void Stop();

 private:
  struct Ctrl;
  struct Scanned;
  // Every controller of every subsystem, from sysfs through libnvme.
  static std::vector<Scanned> ScanTopology();
  LibnvmeBackend(Multipath* mp, std::vector<Worker*> workers, LibnvmeBackendOptions options,
                 int wake_fd, int epoll_fd);
  absl::StatusOr<std::string> ClaimLocked(const Scanned& sc) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::string> ConnectLocked(ConnectSpec spec) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddNamespacesLocked(Ctrl* c, const Scanned& sc) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseLocked(Ctrl* c, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PollLocked(bool read_ana) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReadAnaLog(Ctrl* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RescanLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ServiceLocked(bool polled) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Ctrl* Find(absl::string_view name) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Wanted(const Scanned& sc) const;
  // Records the outcome of an attempt; true when it differs from the last one (log it).
  bool Changed(const std::string& key, const std::string& outcome) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Log(const std::string& line) const;
  void Wake();
  void Loop();

  Multipath* const mp_;
  const std::vector<Worker*> workers_;
  const LibnvmeBackendOptions options_;
  const int wake_fd_, epoll_fd_;
  int uevent_fd_ = -1;

  mutable Mutex mu_;
  std::vector<std::unique_ptr<Ctrl>> ctrls_ ABSL_GUARDED_BY(mu_);
  // Removed from the core; destroyed once every worker let go of their queue pairs.
  std::vector<std::unique_ptr<Ctrl>> retiring_ ABSL_GUARDED_BY(mu_);
  // Detached through the API while the kernel keeps them: not claimed again by a rescan
  // until they are gone or attached again.
  std::set<std::string> released_ ABSL_GUARDED_BY(mu_);
  // Configured connects (ConnectSpec::ToString) whose controller was detached through
  // the API: not connected again until an attach through the API asks for them.
  std::set<std::string> detached_connects_ ABSL_GUARDED_BY(mu_);
  // The last outcome of claiming or connecting each thing, so retries log only changes.
  std::map<std::string, std::string> last_attempt_ ABSL_GUARDED_BY(mu_);
  bool rescan_ ABSL_GUARDED_BY(mu_) = false;
  int64_t next_reconnect_ns_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace umpath::kernel
