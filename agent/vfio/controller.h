#pragma once

// Controller bring-up over vfio (NVMe Base 2.0, 3.5.1 "Memory-based Controller
// Initialization"): disable, admin queue, enable, then admin commands by polling.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/nvme/identify.h"
#include "agent/vfio/queue.h"
#include "agent/vfio/regs.h"
#include "agent/vfio/vfio_device.h"

namespace umpath::vfio {

// Page-aligned memory mapped for DMA; unmapped and freed on destruction.
class DmaBuffer {
 public:
  static absl::StatusOr<std::unique_ptr<DmaBuffer>> Create(VfioContainer* c, uint64_t len);
  ~DmaBuffer();
  void* host() const { return host_; }
  uint64_t iova() const { return iova_; }
  uint64_t size() const { return len_; }

 private:
  DmaBuffer(VfioContainer* c, void* host, uint64_t iova, uint64_t len)
      : container_(c), host_(host), iova_(iova), len_(len) {}
  VfioContainer* container_;
  void* host_;
  uint64_t iova_, len_;
};

// Threading: the control thread. Admin commands are synchronous here (bring-up); the
// asynchronous admin path (AENs, ANA log) comes with the I/O queues.
class VfioController {
 public:
  static absl::StatusOr<std::unique_ptr<VfioController>> Open(VfioContainer* container,
                                                              const std::string& bdf);

  // Disable, set up the admin queue, enable; each wait bounded by CAP.TO. A fatal
  // status (CSTS.CFS) or a device that reads all ones is FAILED_PRECONDITION /
  // UNAVAILABLE.
  absl::Status Enable();
  // Disables the controller (shutdown of its queues is the controller's job then).
  absl::Status Disable();

  // One admin command, polled to completion within `timeout_ms`. A completion with an
  // error status is returned as an error naming it.
  absl::StatusOr<nvme::CompletionEntry> AdminCommand(nvme::SubmissionEntry sqe, int timeout_ms);

  absl::StatusOr<nvme::ControllerIdentity> IdentifyController();
  absl::StatusOr<std::vector<uint32_t>> ActiveNamespaces();
  absl::StatusOr<nvme::NamespaceIdentity> IdentifyNamespace(uint32_t nsid);
  absl::StatusOr<nvme::NamespaceIds> NamespaceIdDescriptors(uint32_t nsid);

  const regs::Cap& cap() const { return cap_; }
  VfioDevice& device() { return *device_; }

 private:
  VfioController() = default;
  absl::Status WaitReady(bool ready);
  absl::StatusOr<std::vector<uint8_t>> Identify(uint8_t cns, uint32_t nsid);

  VfioContainer* container_ = nullptr;
  std::unique_ptr<VfioDevice> device_;
  regs::Cap cap_;
  static constexpr uint16_t kAdminDepth = 32;
  std::unique_ptr<DmaBuffer> asq_, acq_, data_;
  std::unique_ptr<SubmissionRing> sq_;
  std::unique_ptr<CompletionRing> cq_;
  uint16_t next_cid_ = 0;
};

}  // namespace umpath::vfio
