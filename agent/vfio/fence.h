#pragma once

// SEMANTICS "Fencing" for a controller this agent drives through vfio: what must hold
// before the commands it was given may run anywhere else. The sequence is written once,
// over a small seam (FenceOps), so unit tests play a device that will not stop.

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "agent/control/supervisor.h"

namespace umpath::vfio {

// What fencing needs of a controller. VfioControllerFence is the real one.
class FenceOps {
 public:
  virtual ~FenceOps() = default;
  virtual bool Gone() = 0;   // its registers read all ones
  virtual bool Fatal() = 0;  // CSTS.CFS
  // Deletes the I/O queues (the controller aborts what they hold); bounded.
  virtual absl::Status DeleteIoQueues() = 0;
  virtual absl::Status ShutdownNotify() = 0;  // CC.SHN, bounded
  // CC.EN = 0, then CSTS.RDY = 0 within CAP.TO; DEADLINE_EXCEEDED when RDY stays 1.
  virtual absl::Status Disable() = 0;
  virtual absl::Status ClearBusMaster() = 0;  // PCI COMMAND
  virtual absl::Status ResetFunction() = 0;   // VFIO_DEVICE_RESET
  // Lets the function go; vfio-pci clears bus master and resets it on release.
  virtual void Release() = 0;
};

struct FenceRequest {
  // Let the function go once fenced (hot-unplug: the kernel waits for it), before
  // anything is handed back.
  bool release = false;
  bool delete_queues = true;     // a live controller aborts its queues first
  bool shutdown_notify = false;  // a clean stop
};

enum class FenceOutcome {
  kDisabled,       // CC.EN = 0 and CSTS.RDY = 0 observed
  kFunctionReset,  // RDY stayed 1: bus master cleared and the function reset
  kReleased,       // the function was let go
};
absl::string_view FenceOutcomeName(FenceOutcome o);

// Fences the controller: when this returns, it executes none of the commands it held.
// The function is released when it is gone, when that was asked, or when neither a
// disable nor a function reset could be had. `detail` says what happened.
FenceOutcome FenceController(FenceOps& ops, const FenceRequest& request, std::string* detail);

// A vfio controller's ControllerDriver::Fence: FenceController for what the supervisor
// asks. The supervisor then tells the core (it hands the commands back once the
// controller's CQT has passed).
FenceResult FenceForSupervisor(FenceOps& ops, const FenceAsk& ask);

}  // namespace umpath::vfio
