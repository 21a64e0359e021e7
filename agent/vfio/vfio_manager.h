#pragma once

// The vfio backend of umpathd: claims NVMe functions bound to vfio-pci (binding them
// first when told to), brings each controller up, gives every worker one I/O queue pair
// on it, groups its namespaces into heads through the multipath core, and looks after
// it: asynchronous events (ANA change: the log is read again), command timeouts and
// fatal status (the controller is reset and its I/O fails over), and the kernel's
// release request on hot-unplug (the paths fail over and the device is let go).
//
// Threading: Attach/Detach/AllocateIoBuffer from any thread (serialized by a lock). The
// event thread Start() makes handles interrupts of the admin queues, release requests,
// resets, kernel uevents (a configured function that appears is claimed: hot-add) and a
// health check once a second; it sleeps in epoll_wait otherwise.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/base/mutex.h"
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
  uint16_t queue_depth = 256;
  int64_t io_timeout_ms = 30'000;
  // How often controller status is read (CSTS: fatal status, a device that is gone);
  // 0: never (command timeouts still catch a controller that stops answering).
  int health_interval_ms = 1000;
};

// Every NVMe function (class 0x010802) on the PCI bus, bound or not.
std::vector<std::string> ListNvmeFunctions();
// Binds `bdf` to vfio-pci through driver_override (its current driver let go first).
absl::Status BindToVfio(const std::string& bdf);

class VfioManager {
 public:
  static absl::StatusOr<std::unique_ptr<VfioManager>> Create(Multipath* mp,
                                                             std::vector<Worker*> workers,
                                                             VfioManagerOptions options);
  ~VfioManager();

  // Claims every configured device. A device that fails (not NVMe, not bound, bring-up
  // error) is reported in the result and the others still come up.
  std::vector<std::pair<std::string, absl::Status>> AttachConfigured();
  absl::Status Attach(const std::string& bdf);
  // Lets a controller go: its paths fail over, then the device is released.
  absl::Status Detach(const std::string& bdf, absl::string_view reason);

  // Starts a reset (the rest runs on the event thread). FAILED_PRECONDITION while one
  // is under way.
  absl::Status RequestReset(const std::string& bdf);

  // DMA memory for a frontend's buffers, mapped and registered for I/O on every queue.
  absl::StatusOr<std::unique_ptr<DmaBuffer>> AllocateIoBuffer(uint64_t len);

  void Start();
  // Detaches everything (paths removed, controllers shut down) and joins the thread.
  void Stop();


 private:
  struct Ctrl;
  VfioManager(Multipath* mp, std::vector<Worker*> workers, VfioManagerOptions options,
              std::unique_ptr<VfioContainer> container, int wake_fd, int epoll_fd);
  absl::Status AttachLocked(const std::string& bdf) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DetachLocked(Ctrl* c, std::string reason, bool device_gone) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartReset(Ctrl* c, std::string why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Fence(Ctrl* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishReset(Ctrl* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CheckNamespacesAfterReset(Ctrl* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReadAnaLog(Ctrl* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void HandleEvents(Ctrl* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CheckHealth() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Service() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Wake();
  void Loop();
  std::vector<std::string> ConfiguredDevices() const;
  // Claims configured functions that appeared since (uevents say when to look).
  void Rescan() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReadUevents() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Multipath* const mp_;
  const std::vector<Worker*> workers_;
  const VfioManagerOptions options_;
  std::unique_ptr<VfioContainer> container_;
  DmaRegistry registry_;
  const int wake_fd_, epoll_fd_;

  mutable Mutex mu_;
  std::vector<std::unique_ptr<Ctrl>> ctrls_ ABSL_GUARDED_BY(mu_);
  // Removed from the core; destroyed once every worker let go of their queue pairs.
  std::vector<std::unique_ptr<Ctrl>> retiring_ ABSL_GUARDED_BY(mu_);
  int uevent_fd_ = -1;
  bool rescan_ ABSL_GUARDED_BY(mu_) = false;
  // The last outcome of attaching each function, so a retry logs only what changed.
  std::map<std::string, std::string> last_attempt_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace umpath::vfio
