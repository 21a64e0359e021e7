#pragma once

// What the control API calls for attach, detach, reset, export and unexport, routed to
// the backend or frontend that owns the thing, and for the agent's own stop. Each call
// is handed over (controllers: to the control thread; block devices: to a thread of its
// own) and answers through its `done`.

#include <functional>
#include <optional>
#include <string>

#include "agent/base/mutex.h"
#include "agent/control/control_plane.h"
#include "agent/control/supervisor.h"
#include "agent/export/exporter.h"
#include "agent/kernel/libnvme_backend.h"
#include "agent/sim/sim_backend.h"
#include "agent/vfio/vfio_manager.h"
#include "server/attachment_store.h"
#include "server/control_service.h"
#include "server/simulator_service.h"

namespace umpath::app {

// PCIe functions go to the vfio backend, kernel and fabrics controllers to the kernel
// backend (either may be absent); a reset to the supervisor. What is attached through
// the API is remembered (`remembered`, when given) and attached again by the next agent
// (ReattachRemembered); a detach forgets it. Kernel controllers claimed by name are not
// remembered: nvmeN names another controller after a reboot.
//
// Threading: any thread; the work runs on the control thread.
class BackendControllerOps final : public server::ControllerOps {
 public:
  BackendControllerOps(ControlPlane* plane, ControllerSupervisor* sup, vfio::VfioManager* vm,
                       kernel::LibnvmeBackend* kb, server::AttachmentStore* remembered = nullptr,
                       std::function<void(const std::string&)> log = nullptr)
      : plane_(plane), sup_(sup), vm_(vm), kb_(kb), remembered_(remembered), log_(std::move(log)) {}
  void Attach(const AttachSpec& spec, server::OpDone<absl::StatusOr<std::string>> done) override;
  void Detach(const std::string& controller, server::OpDone<absl::Status> done) override;
  void Reset(const std::string& controller, server::OpDone<absl::Status> done) override;
  // At start: attaches what the last agent had attached through the API; each outcome
  // is logged, and `done` runs once all are known.
  void ReattachRemembered(absl::AnyInvocable<void(int attached, int failed) &&> done);

 private:
  void AttachOnPlane(const AttachSpec& spec, server::OpDone<absl::StatusOr<std::string>> done);
  void Remember(const std::string& name, const AttachSpec& spec);
  void Log(const std::string& line) const {
    if (log_) log_(line);
  }
  ControlPlane* const plane_;
  ControllerSupervisor* const sup_;
  vfio::VfioManager* const vm_;
  kernel::LibnvmeBackend* const kb_;
  server::AttachmentStore* const remembered_;
  const std::function<void(const std::string&)> log_;
};

// The simulator's faults, on the control thread.
//
// Threading: any thread; the work runs on the control thread.
class SimFaultOps final : public server::SimulatorOps {
 public:
  SimFaultOps(ControlPlane* plane, ControllerSupervisor* sup, sim::SimBackend* sim)
      : plane_(plane), sup_(sup), sim_(sim) {}
  void Inject(const std::string& controller, const sim::SimFault& fault,
              server::OpDone<absl::StatusOr<sim::SimControllerInfo>> done) override;
  void Clear(const std::string& controller,
             server::OpDone<absl::StatusOr<sim::SimControllerInfo>> done) override;
  void List(server::OpDone<absl::StatusOr<std::vector<sim::SimControllerInfo>>> done) override;

 private:
  ControlPlane* const plane_;
  ControllerSupervisor* const sup_;
  sim::SimBackend* const sim_;
};

// The exporter may come later than the server (after a workload that drives the
// workers itself); until then calls say why not. The exporter hands the work to the
// control thread, and what blocks on the kernel to a thread of its own.
//
// Threading: any thread; the exporter is set once.
class UblkExportOps final : public server::ExportOps {
 public:
  explicit UblkExportOps(std::string why_not) : why_not_(std::move(why_not)) {}
  void Set(ublk::Exporter* e);
  void Unavailable(std::string why);
  void Export(const std::string& head, server::OpDone<absl::StatusOr<ExportedDevice>> done) override;
  void Unexport(const std::string& head, server::OpDone<absl::Status> done) override;
  ublk::Exporter* exporter();  // null until Set
  std::optional<BufferBudgetInfo> Budget() override;

 private:
  ublk::Exporter* Get(std::string* why_not);
  Mutex mu_;
  std::string why_not_ ABSL_GUARDED_BY(mu_);
  ublk::Exporter* e_ ABSL_GUARDED_BY(mu_) = nullptr;
};

// umpathd's exit status after a stop StopAgent asked to remove the block devices
// (decommissioning the node): a supervisor should not start it again (the systemd
// unit's RestartPreventExitStatus=). Every other stop exits 0.
inline constexpr int kExitRemovedThroughApi = 3;

// Which stop the agent makes: a signal (SIGTERM, SIGINT) stops it as --stop says,
// StopAgent as it asks. The first to come decides, once; a request after that is
// refused, and the agent stops the way already decided.
//
// Threading: any thread (gRPC's, the control thread, main's); under mu_.
class StopChoice {
 public:
  struct Decided {
    ublk::StopMode mode = ublk::StopMode::kHandOver;
    bool requested = false;  // by StopAgent
    std::string by;          // "signal 15", "StopAgent from uid 0 gid 0 pid 812"
    bool for_successor = false;  // a successor agent asked (--take_over)
    int exit_status() const {
      return requested && mode != ublk::StopMode::kHandOver ? kExitRemovedThroughApi : 0;
    }
  };
  explicit StopChoice(ublk::StopMode configured) : configured_(configured) {}
  // StopAgent's: false when the stop was decided already.
  bool Request(ublk::StopMode mode, std::string by, bool for_successor = false);
  // The stop begins: what StopAgent asked, else the configured mode `by` a signal (or the
  // agent's end). Idempotent; requests are refused from now on.
  Decided Decide(std::string by);
  bool decided() const;

 private:
  const ublk::StopMode configured_;
  mutable Mutex mu_;
  std::optional<Decided> decided_ ABSL_GUARDED_BY(mu_);
};

// StopAgent: unless forced, asks the exporter whether the stop would remove a block
// device in use (refused then, nothing changed); then decides it, answers, and wakes
// the agent's main thread, which stops the agent as on SIGTERM. The answer goes first:
// a call finished before the server's shutdown still reaches its caller.
//
// Threading: any thread; the check runs on the exporter's lane and answers from there.
class AgentStopOps final : public server::StopOps {
 public:
  // `exports` may be null (no ublk); `wake` ends main's wait.
  AgentStopOps(StopChoice* choice, UblkExportOps* exports, std::function<void()> wake)
      : choice_(choice), exports_(exports), wake_(std::move(wake)) {}
  void Stop(const Request& request, server::OpDone<absl::Status> done) override;

 private:
  void Decide(ublk::StopMode mode, const std::string& caller, server::OpDone<absl::Status> done);
  StopChoice* const choice_;
  UblkExportOps* const exports_;
  const std::function<void()> wake_;
};

}  // namespace umpath::app
