#pragma once

// The simulated backend of umpathd (--sim=SUBSYSTEMS:NAMESPACES:CONTROLLERS), as SPDK
// has null and malloc bdevs and Linux null_blk and nvme-loop: NVMe controllers in
// memory that the core meets as real ones. Each subsystem has NAMESPACES shared
// namespaces (one ANA group each, group id = nsid) reachable through CONTROLLERS
// controllers, each a driver below the ControllerSupervisor like a vfio or kernel one:
// Identify pages and the ANA log are built as wire structures and read through the
// agent's parsers, I/O goes through SimQueuePair (one per worker), a reset fences and
// recovers it, a detach lets it go.
//
// Faults, for this backend only (the SimulatorControl API, `umpathctl sim`):
//   path error  - the next N commands (or every one, until cleared) complete with an
//                 NVMe status (SCT/SC), optionally for one namespace only;
//   ANA state   - a group's state on one controller changes; the log's change count
//                 moves and the change is raised as an asynchronous event would be (the
//                 log is read again on the control thread);
//   loss        - the controller is gone (its queue pairs refuse commands; the
//                 supervisor detaches it as a lost device: fenced, I/O failed over);
//   return      - a lost or detached controller comes back, added again as a hotplug;
//   namespace loss and return - one namespace is detached from one controller (that
//                 path goes, the head keeps its others) and attached again;
//   stuck       - commands submitted from now on never complete until cleared: past
//                 --io_timeout_ms the controller is reset, as a vfio one is;
//   latency     - completions are due this long after submission.
// ClearFaults ends the path errors and stuck commands (stuck ones then complete).
//
// Threading: everything on the control plane's thread, except what SimFaults and
// SimLink carry to the workers (atomics).

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/control/control_plane.h"
#include "agent/control/supervisor.h"
#include "agent/core/multipath.h"
#include "agent/core/worker.h"
#include "agent/sim/sim_queue_pair.h"

namespace umpath::sim {

struct SimOptions {
  uint32_t subsystems = 1;
  uint32_t namespaces = 1;   // per subsystem
  uint32_t controllers = 2;  // per subsystem: the paths of each namespace
  uint64_t namespace_bytes = 64ull << 20;
  uint32_t block_size = 4096;
  bool memory = true;  // keep what is written (else a null device: reads return zeros)
  int64_t latency_ns = 0;
  uint32_t queue_depth = 256;
  int64_t io_timeout_ns = 30'000'000'000;
  const Clock* clock = SystemClock::Get();
  bool wake_timers = true;  // false: queue pairs are polled only (hand-driven tests)
  std::function<void(const std::string&)> log;
};

// "S:N:C": subsystems, namespaces per subsystem, controllers per subsystem.
absl::Status ParseSimTopology(absl::string_view text, SimOptions* out);

struct SimFault {
  enum class Kind { kPathError, kAnaState, kLoss, kReturn, kStuck, kLatency, kNamespaceLoss, kNamespaceReturn };
  Kind kind = Kind::kPathError;
  // kPathError: SCT (bits 10:8) and SC (7:0); the command's DNR bit; how many commands
  // (0: every one until cleared); one namespace only (0: all). kNamespaceLoss and
  // kNamespaceReturn: the namespace.
  uint16_t status_code = 0;
  bool dnr = false;
  int64_t count = 0;
  uint32_t nsid = 0;
  // kAnaState.
  uint32_t ana_group = 0;
  nvme::AnaState ana_state = nvme::AnaState::kOptimized;
  int64_t latency_ns = 0;  // kLatency
};

// What the simulator knows of one controller.
struct SimControllerInfo {
  std::string name;
  std::string subsys_nqn;
  bool attached = false;
  std::vector<nvme::AnaState> ana;  // by group - 1
  uint16_t error_status = 0;        // the injected completion status field; 0: none
  int64_t errors_left = 0;
  uint64_t errors_injected = 0;
  bool stuck = false;
  int64_t latency_ns = 0;
  std::vector<uint32_t> detached_nsids;  // ascending
};

class SimBackend {
 public:
  // `plane`, `sup` and the workers outlive the backend.
  static absl::StatusOr<std::unique_ptr<SimBackend>> Create(Multipath* mp, ControlPlane* plane,
                                                            ControllerSupervisor* sup,
                                                            std::vector<Worker*> workers,
                                                            SimOptions options);
  ~SimBackend();

  // Everything below on the control thread.
  // Brings every controller up; the first failure is returned.
  absl::Status AttachAll();
  // NOT_FOUND for a controller the simulator does not have; INVALID_ARGUMENT for a bad
  // value; FAILED_PRECONDITION where the fault cannot apply now (a loss of a controller
  // that is not attached, a return of one that is); UNAVAILABLE while a lost one is
  // still being let go.
  absl::Status Inject(absl::string_view controller, const SimFault& fault);
  absl::Status ClearFaults(absl::string_view controller);
  // A controller of this backend (attached or not).
  bool Owns(absl::string_view controller) const;
  absl::StatusOr<SimControllerInfo> Describe(absl::string_view controller) const;
  std::vector<SimControllerInfo> DescribeAll() const;
  static std::string ControllerName(uint32_t subsystem, uint32_t controller);

 private:
  struct Model;
  class Driver;
  SimBackend(Multipath* mp, ControlPlane* plane, ControllerSupervisor* sup,
             std::vector<Worker*> workers, SimOptions options);
  Model* Find(absl::string_view name) const;
  absl::Status BringUp(Model* m);
  // Namespace `nsid` of an attached controller as a path: its Identify data through
  // the agent's parsers, then the core.
  absl::Status AddNamespacePath(Model* m, uint32_t nsid);
  absl::Status NamespaceFault(Model* m, const SimFault& f);
  void ReadAnaLog(Model* m);
  SimControllerInfo InfoOf(const Model& m) const;
  void Log(const std::string& line) const;

  Multipath* const mp_;
  ControlPlane* const plane_;
  ControllerSupervisor* const sup_;
  const std::vector<Worker*> workers_;
  const SimOptions options_;
  std::vector<std::shared_ptr<SimMedia>> media_;  // by subsystem
  std::map<std::string, std::unique_ptr<Model>, std::less<>> models_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace umpath::sim
