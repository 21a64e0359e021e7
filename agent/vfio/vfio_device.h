#pragma once

// vfio-pci through the container/group API: the container owns the IOMMU mappings
// (our own IOVA space, ordinary pinned memory), a device gives its BAR0 mapped.

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/vfio/iova_allocator.h"

namespace umpath::vfio {

// Threading: the control thread only (bring-up, DMA setup, teardown).
class VfioContainer {
 public:
  // Opens /dev/vfio/vfio and checks the API version and the type1v2 IOMMU. The IOMMU is
  // chosen when the first group joins (VFIO_SET_IOMMU needs a group).
  static absl::StatusOr<std::unique_ptr<VfioContainer>> Open();
  // A container another process made and handed over (its descriptor; its groups
  // joined and its IOMMU set). Each of the predecessor's mappings must then be adopted
  // (AdoptMapping) or dropped (DropMapping): this one's IOVAs go around them.
  static absl::StatusOr<std::unique_ptr<VfioContainer>> Adopt(int fd);
  ~VfioContainer();

  // Pins and maps `len` bytes at `host` (page aligned) for device reads and writes; the
  // IOVA comes from our allocator.
  absl::StatusOr<uint64_t> MapDma(void* host, uint64_t len);
  absl::Status UnmapDma(uint64_t iova, uint64_t len);
  // A hand-over's mappings: one whose memory came (`host`: this process's view of it)
  // is kept as it is and freed like one of ours; one whose memory did not is unmapped,
  // and its IOVA never used again (the predecessor may yet unmap it itself).
  absl::Status AdoptMapping(void* host, uint64_t iova, uint64_t len);
  absl::Status DropMapping(uint64_t iova, uint64_t len);
  // Every mapping: IOVA and length.
  std::vector<std::pair<uint64_t, uint64_t>> Mappings() const;

  int fd() const { return fd_; }
  bool iommu_set() const { return iommu_set_; }
  // After a group joined with none before it: sets the IOMMU and maps again whatever is
  // still mapped from before the last group left.
  absl::Status SetIommu();
  void GroupJoined() { ++groups_; }
  void GroupLeft();

 private:
  VfioContainer(int fd, IovaAllocator iova) : fd_(fd), iova_(std::move(iova)) {}
  absl::Status Map(void* host, uint64_t iova, uint64_t len);
  struct Mapping {
    void* host;
    uint64_t len;
  };
  const int fd_;
  IovaAllocator iova_;
  std::map<uint64_t, Mapping> mappings_;  // by IOVA: what SetIommu maps again
  bool iommu_set_ = false;
  int groups_ = 0;
};

class VfioDevice {
 public:
  // `bdf` like 0000:01:00.0, an NVMe function (class 0x010802) bound to vfio-pci.
  // NOT_FOUND for no such device; FAILED_PRECONDITION when it is not NVMe, not bound to
  // vfio-pci (naming the driver it has), or its group is not viable.
  static absl::StatusOr<std::unique_ptr<VfioDevice>> Open(VfioContainer* container,
                                                          const std::string& bdf);
  // A device another process opened and handed over with `container` (its group and
  // device descriptors, owned from now on): BAR0 mapped again, nothing written to it.
  static absl::StatusOr<std::unique_ptr<VfioDevice>> Adopt(VfioContainer* container,
                                                           const std::string& bdf, int group_fd,
                                                           int device_fd);
  ~VfioDevice();

  uint32_t Read32(uint32_t offset) const;
  uint64_t Read64(uint32_t offset) const;
  void Write32(uint32_t offset, uint32_t value);
  void Write64(uint32_t offset, uint64_t value);
  volatile uint32_t* Register32(uint32_t offset) const;

  // Interrupts (VFIO_DEVICE_SET_IRQS): how many vectors an index has (0 when the kernel
  // or device has none), and eventfds that the kernel signals for vectors 0..n-1.
  // `index` is VFIO_PCI_MSIX_IRQ_INDEX or VFIO_PCI_REQ_IRQ_INDEX (the release request).
  uint32_t IrqCount(uint32_t index) const;
  // Memory space and bus mastering on in PCI_COMMAND (at open, and again by a reset:
  // a function whose bus mastering was turned off cannot reach its queues).
  absl::Status EnableBusMaster();
  // Clears Bus Master Enable in PCI COMMAND: the function can no longer DMA.
  absl::Status ClearBusMaster();
  // A function-level (or bus) reset through vfio (VFIO_DEVICE_RESET); vfio-pci saves
  // and restores the config space around it.
  absl::Status ResetFunction();
  absl::Status SetIrqEventfds(uint32_t index, const std::vector<int>& fds);
  absl::Status DisableIrqs(uint32_t index);

  const std::string& bdf() const { return bdf_; }
  uint64_t bar0_size() const { return bar0_size_; }
  int device_fd() const { return device_fd_; }
  int group_fd() const { return group_fd_; }

 private:
  VfioDevice() = default;
  // BAR0 mapped, PCI_COMMAND found.
  absl::Status MapRegisters();
  std::string bdf_;
  VfioContainer* container_ = nullptr;
  int group_fd_ = -1;
  int device_fd_ = -1;
  volatile uint8_t* bar0_ = nullptr;
  off_t command_at_ = 0;
  uint64_t bar0_size_ = 0;
};

}  // namespace umpath::vfio
