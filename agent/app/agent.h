#pragma once

// The agent as one object: its components are members, made in start order by
// Create and stopped in reverse by the destructor, the one shutdown path (Envoy's
// main is a few lines that hand over to such an object).
//
//   settings store -> workers -> multipath core (its timer) -> event log -> control
//   plane (the control thread) and the controller supervisor -> vfio backend -> kernel
//   backend -> simulated backend -> block devices (ublk) -> control server -> metrics endpoint
//
// Stopping: metrics and the server first (no new calls), the exporter stops following
// heads, the supervisor lets go of every controller (fenced, their I/O failed over)
// while the workers still run, the control thread ends, the backends go, the core
// fails what still waits, the block devices go, the event log ends, and the workers
// last.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/app/config.h"
#include "agent/app/event_logger.h"
#include "agent/app/ops.h"
#include "agent/control/control_plane.h"
#include "agent/control/supervisor.h"
#include "agent/core/io_memory.h"
#include "agent/core/multipath.h"
#include "agent/core/worker.h"
#include "agent/handover/channel.h"
#include "server/control_server.h"
#include "server/metrics.h"
#include "server/attachment_store.h"
#include "server/settings_store.h"

namespace umpath::app {

struct AgentMode {
  // False: the caller drives the workers by hand first (a workload, umpath-perf), and
  // calls StartServing when it is done; block devices are offered from then on.
  bool start_workers = true;
  // StopAgent was accepted (on a gRPC or the control thread, after its answer): end the
  // caller's wait, and destroy the Agent. Empty: StopAgent is refused (FAILED_
  // PRECONDITION), the agent stops by signal only.
  std::function<void()> on_stop_requested;
};

// Threading: Create, StartServing and the destructor on one thread; the rest is the
// components' own.
class Agent {
 public:
  // INVALID_ARGUMENT for a configuration that cannot work (exit status 2); anything
  // else is a failure to start (1). What was started is stopped again.
  static absl::StatusOr<std::unique_ptr<Agent>> Create(AgentConfig config, AgentMode mode = {});
  ~Agent();

  Multipath& core() { return *mp_; }
  const std::vector<Worker*>& workers() const { return worker_ptrs_; }
  // Buffers I/O may use on every path: DMA memory registered with vfio where there is a
  // vfio backend (the kernel's paths take it too), page-aligned memory otherwise.
  IoMemoryAllocator io_allocator() const;
  // After a hand-driven start: the workers run on their own threads from now on, and
  // (with `block_devices`) block devices are offered.
  absl::Status StartServing(bool block_devices = true);
  // The stop begins: StopAgent's if one came first, else --stop's `by` (a signal). The
  // destructor stops the agent so; a StopAgent from now on is refused.
  StopChoice::Decided DecideStop(std::string by) { return stop_choice_.Decide(std::move(by)); }
  // Calls `ping` on the control thread now and every `every` after, from a timer (an
  // idle agent sleeps in between), until the control thread ends in the stop: the
  // systemd watchdog, which so restarts an agent whose control thread hangs.
  void KeepAlive(std::chrono::nanoseconds every, std::function<void()> ping);
  // One line for `systemctl status`: heads, those without a selectable path, the socket.
  std::string StatusLine() const;

 private:
  explicit Agent(AgentConfig config) : config_(std::move(config)), stop_choice_(config_.stop) {}
  absl::Status StartCore();
  absl::Status StartControl();
  absl::Status StartBackends(std::unique_ptr<vfio::HandOverPackage> incoming = nullptr);
  absl::Status StartSimulator();
  // --take_over: the predecessor's running controllers, once it has gone (null: none,
  // or the simple path).
  absl::StatusOr<std::unique_ptr<vfio::HandOverPackage>> TakeOver();
  // Waits for successors on --handover_socket (the control thread answers them).
  void ListenForSuccessor();
  void OnSuccessor();
  // The stop's half of a hand-over: in-flight vfio I/O completes first (bounded), so the
  // controllers are idle when the supervisor lets them go.
  void DrainVfioIo(int64_t timeout_ms);
  void SendHandOver();
  void StopControllers();
  absl::Status StartExporter();
  void StopBlockDevices(ublk::StopMode mode);
  absl::Status StartServer();

  AgentConfig config_;
  StopChoice stop_choice_;
  std::function<void()> wake_;  // ends main's wait (a stop was asked for)
  handover::UniqueFd handover_listen_;
  handover::UniqueFd successor_;  // a successor asked; the stop answers it
  bool successor_adopts_ = false;
  // Before plane_, so it outlives the timers that call it.
  std::function<void()> keep_alive_;
  // First, so it is destroyed last: controllers left to the process's exit still post
  // to it (it drops what comes once it has stopped).
  std::unique_ptr<ControlPlane> plane_;
  std::unique_ptr<server::SettingsStore> store_;
  std::unique_ptr<server::AttachmentStore> attachments_;  // controllers attached through the API
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<Worker*> worker_ptrs_;
  bool workers_started_ = false;
  std::unique_ptr<Multipath> mp_;
  std::unique_ptr<EventLogger> logger_;
  std::unique_ptr<vfio::VfioManager> vfio_;
  std::unique_ptr<kernel::LibnvmeBackend> kernel_;
  std::unique_ptr<sim::SimBackend> sim_;
  std::unique_ptr<SimFaultOps> sim_ops_;
  // After the backends, so it goes before them: controllers left by StopAll go with it
  // (the workers have stopped by then), while their backend is still there.
  std::unique_ptr<ControllerSupervisor> supervisor_;
  std::unique_ptr<BackendControllerOps> controller_ops_;
  std::unique_ptr<UblkExportOps> export_ops_;
  std::unique_ptr<AgentStopOps> stop_ops_;
  std::unique_ptr<ublk::Exporter> exporter_;
  std::unique_ptr<server::RpcStats> rpc_stats_;
  std::unique_ptr<server::ControlServer> server_;
};

}  // namespace umpath::app
