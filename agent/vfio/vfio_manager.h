#pragma once

// The vfio backend of umpathd: claims NVMe functions bound to vfio-pci (binding them
// first when told to), brings each controller up, gives every worker one I/O queue pair
// on it, groups its namespaces into heads through the multipath core, and looks after
// it: asynchronous events (ANA change: the log is read again), command timeouts and
// fatal status (the controller is reset and its I/O fails over), and the kernel's
// release request on hot-unplug (the paths fail over and the device is let go).
//
// Each controller is a driver below the ControllerSupervisor, which resets, detaches and
// fences it (SEMANTICS "Fencing"); a reset, a timeout, CSTS.CFS or a release request
// become the supervisor's events.
//
// Threading: everything on the control plane's thread (admin queue interrupts, release
// requests and kernel uevents are files it watches) but AllocateIoBuffer, from any
// thread.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/base/mutex.h"
#include "agent/control/control_plane.h"
#include "agent/control/supervisor.h"
#include "agent/core/multipath.h"
#include "agent/core/worker.h"
#include "agent/vfio/controller.h"
#include "agent/vfio/dma_registry.h"
#include "agent/vfio/vfio_device.h"

namespace umpath::vfio {

struct VfioManagerOptions {
  // PCI addresses (0000:01:00.0), or "all": every NVMe function bound to vfio-pci.
  std::vector<std::string> devices;
  // Bind the named devices to vfio-pci first (unbinding them from their driver).
  bool bind = false;
  // Functions AttachController may take besides `devices` (PCI addresses, or "all" for
  // any NVMe function). Empty: only the configured ones.
  std::vector<std::string> attachable;
  uint16_t queue_depth = 256;
  int64_t io_timeout_ms = 30'000;
  // How often controller status is read (CSTS: fatal status, a device that is gone);
  // 0: never (command timeouts still catch a controller that stops answering).
  int health_interval_ms = 1000;
  // Where sysfs is (tests give a tree of their own).
  std::string sysfs_root = "/sys";
  // Opens the kernel's uevent socket (OpenUeventSocket when empty; tests give a pipe).
  std::function<absl::StatusOr<int>()> uevents;
};

inline constexpr const char* kNvmeClass = "0x010802";  // mass storage, NVM, NVMe

// What a hand-over carries (issue 16 item 3): the state and the descriptors it names.
struct HandOverPackage {
  handover::State state;
  std::vector<handover::UniqueFd> fds;
};

// DDDD:BB:DD.F, hexadecimal: nothing else names a PCI function (no "/" or "..").
bool IsPciAddress(absl::string_view bdf);
// Every NVMe function (class 0x010802) on the PCI bus, bound or not.
std::vector<std::string> ListNvmeFunctions(const std::string& sysfs_root = "/sys");
// OK when `bdf` is a PCI address naming an NVMe function: INVALID_ARGUMENT for what is
// not an address, NOT_FOUND for no such function, FAILED_PRECONDITION for another class.
absl::Status CheckNvmeFunction(const std::string& bdf, const std::string& sysfs_root = "/sys");
// OK when AttachController may take `bdf` (issue 17 item 2): a PCI address
// (INVALID_ARGUMENT otherwise) named in `devices` or `attachable`, or either says "all".
// FAILED_PRECONDITION otherwise: the caller may be an admin, but this agent was not
// configured to take that function; nothing in sysfs is read or written.
absl::Status CheckAttachable(const std::string& bdf, const std::vector<std::string>& devices,
                             const std::vector<std::string>& attachable);
// What Attach does before it opens anything, with `options`' lists, sysfs root and bind:
// CheckAttachable, then BindToVfio (or, without bind, CheckNvmeFunction). An address
// from a caller reaches sysfs only once it is a configured or allowed NVMe function.
absl::Status PrepareFunction(const std::string& bdf, const VfioManagerOptions& options);
// Binds `bdf` to vfio-pci through driver_override (its current driver let go first),
// once CheckNvmeFunction has passed.
absl::Status BindToVfio(const std::string& bdf, const std::string& sysfs_root = "/sys");

class VfioManager {
 public:
  // `plane` and `sup` outlive the manager; so do the controllers the supervisor has.
  // `incoming`: what a predecessor handed over (its container and controllers), to be
  // adopted by AdoptHandedOver; its mappings are taken over (or, without their memory,
  // unmapped) here.
  static absl::StatusOr<std::unique_ptr<VfioManager>> Create(Multipath* mp, ControlPlane* plane,
                                                             ControllerSupervisor* sup,
                                                             std::vector<Worker*> workers,
                                                             VfioManagerOptions options,
                                                             std::unique_ptr<HandOverPackage> incoming = nullptr);
  ~VfioManager();

  // Control thread. Claims every configured device. A device that fails (not NVMe, not
  // bound, bring-up error) is reported in the result and the others still come up.
  std::vector<std::pair<std::string, absl::Status>> AttachConfigured();
  // Control thread. Brings the function up and hands it to the supervisor (which
  // resets, detaches and fences it from then on).
  absl::Status Attach(const std::string& bdf);
  // Control thread: whether `name` is a function this backend drives (or still fences).
  bool Owns(const std::string& name) const;
  // Control thread: functions that appear later are claimed (kernel uevents).
  void Start();

  // ---- A hand-over (issue 16 item 3). ----
  // Control thread, before AttachConfigured: the predecessor's controllers join as they
  // run (no reset): their queues where they were left, new interrupt descriptors. One
  // that cannot be adopted is disabled, and AttachConfigured brings it up as usual.
  std::vector<std::pair<std::string, absl::Status>> AdoptHandedOver();
  // Control thread, before the supervisor's StopAll(hand_over): idle controllers are
  // handed over at the stop's fence instead of fenced.
  void BeginHandOver();
  // Control thread, after StopAll: what to send the successor; null when nothing was
  // handed over.
  std::unique_ptr<HandOverPackage> TakeHandOver();

  // Any thread. DMA memory for a frontend's buffers, mapped and registered for I/O on
  // every queue.
  absl::StatusOr<std::unique_ptr<DmaBuffer>> AllocateIoBuffer(uint64_t len);

 private:
  struct Ctrl;
  std::string PciDir(const std::string& bdf) const {
    return options_.sysfs_root + "/bus/pci/devices/" + bdf;
  }
  VfioManager(Multipath* mp, ControlPlane* plane, ControllerSupervisor* sup,
              std::vector<Worker*> workers, VfioManagerOptions options,
              std::unique_ptr<VfioContainer> container);
  absl::StatusOr<std::unique_ptr<Ctrl>> BringUp(const std::string& bdf);
  // A controller brought up (or adopted) joins: its namespaces, events, the supervisor.
  absl::Status Join(std::unique_ptr<Ctrl> c, absl::string_view how);
  absl::Status Adopt(const handover::ControllerState& cs);
  IoQueueOptions QueueOptions(const Ctrl& c, uint16_t worker) const;
  void HandOverOne(Ctrl* c);
  absl::Status CreateQueues(Ctrl* c, uint32_t max_transfer);
  absl::StatusOr<std::vector<NamespaceSpec>> Namespaces(Ctrl* c);
  absl::StatusOr<NamespaceSpec> IdentifyPath(Ctrl* c, uint32_t nsid);
  ControllerSpec SpecOf(const Ctrl& c) const;
  void Watch(Ctrl* c);
  std::vector<std::string> ConfiguredDevices() const;
  // Claims configured functions that appeared since (uevents say when to look).
  void Rescan();

  Multipath* const mp_;
  ControlPlane* const plane_;
  ControllerSupervisor* const sup_;
  const std::vector<Worker*> workers_;
  const VfioManagerOptions options_;
  // The container and the registry are shared with AllocateIoBuffer's callers.
  Mutex dma_mu_;
  std::unique_ptr<VfioContainer> container_ ABSL_PT_GUARDED_BY(dma_mu_);
  DmaRegistry registry_;
  int uevent_fd_ = -1;
  // The last outcome of attaching each function, so a retry logs only what changed.
  std::map<std::string, std::string> last_attempt_;
  // A hand-over coming in (until AdoptHandedOver) and going out (BeginHandOver to
  // TakeHandOver); control thread.
  std::unique_ptr<HandOverPackage> incoming_;
  std::vector<std::unique_ptr<DmaBuffer>> incoming_memory_;  // by mapping index
  std::unique_ptr<HandOverPackage> outgoing_;
};

}  // namespace umpath::vfio
