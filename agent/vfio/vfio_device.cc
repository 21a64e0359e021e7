#include "agent/vfio/vfio_device.h"

#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace umpath::vfio {

namespace {

absl::Status Errno(absl::string_view what) { return absl::ErrnoToStatus(errno, what); }

// Our IOVA window: above 4 GiB (clear of the low MSI window) and within the 39-bit
// address width of every IOMMU we meet, QEMU's emulated one included.
constexpr uint64_t kIovaBase = 1ull << 32;
constexpr uint64_t kIovaSize = (1ull << 38) - kIovaBase;
constexpr uint64_t kPage = 4096;

}  // namespace

absl::StatusOr<std::unique_ptr<VfioContainer>> VfioContainer::Open() {
  const int fd = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
  if (fd < 0) return Errno("open /dev/vfio/vfio (is vfio loaded?)");
  if (ioctl(fd, VFIO_GET_API_VERSION) != VFIO_API_VERSION) {
    close(fd);
    return absl::FailedPreconditionError("unexpected VFIO API version");
  }
  if (ioctl(fd, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) != 1) {
    close(fd);
    return absl::FailedPreconditionError(
        "no VFIO type1v2 IOMMU (load vfio_iommu_type1; vfio-pci does not pull it in)");
  }
  absl::StatusOr<IovaAllocator> iova = IovaAllocator::Create(kIovaBase, kIovaSize, kPage);
  if (!iova.ok()) {
    close(fd);
    return iova.status();
  }
  return std::unique_ptr<VfioContainer>(new VfioContainer(fd, std::move(*iova)));
}

absl::StatusOr<std::unique_ptr<VfioContainer>> VfioContainer::Adopt(int fd) {
  if (ioctl(fd, VFIO_GET_API_VERSION) != VFIO_API_VERSION ||
      ioctl(fd, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) != 1) {
    close(fd);
    return absl::FailedPreconditionError("the handed-over descriptor is not a type1v2 vfio container");
  }
  absl::StatusOr<IovaAllocator> iova = IovaAllocator::Create(kIovaBase, kIovaSize, kPage);
  if (!iova.ok()) {
    close(fd);
    return iova.status();
  }
  std::unique_ptr<VfioContainer> c(new VfioContainer(fd, std::move(*iova)));
  c->iommu_set_ = true;  // the predecessor's groups joined it
  return c;
}

absl::Status VfioContainer::AdoptMapping(void* host, uint64_t iova, uint64_t len) {
  if (absl::Status s = iova_.Reserve(iova, len); !s.ok()) return s;
  mappings_[iova] = Mapping{host, len};
  return absl::OkStatus();
}

absl::Status VfioContainer::DropMapping(uint64_t iova, uint64_t len) {
  // Never handed out again: the predecessor may unmap it itself, later.
  if (absl::Status s = iova_.Reserve(iova, len); !s.ok()) return s;
  vfio_iommu_type1_dma_unmap unmap{};
  unmap.argsz = sizeof unmap;
  unmap.iova = iova;
  unmap.size = len;
  if (ioctl(fd_, VFIO_IOMMU_UNMAP_DMA, &unmap) != 0) return Errno("VFIO_IOMMU_UNMAP_DMA");
  return absl::OkStatus();
}

std::vector<std::pair<uint64_t, uint64_t>> VfioContainer::Mappings() const {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const auto& [iova, m] : mappings_) out.emplace_back(iova, m.len);
  return out;
}

VfioContainer::~VfioContainer() { close(fd_); }

absl::Status VfioContainer::SetIommu() {
  if (iommu_set_) return absl::OkStatus();
  if (ioctl(fd_, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) != 0) return Errno("VFIO_SET_IOMMU");
  iommu_set_ = true;
  // Every group left once (all paths gone) and the kernel dropped the mappings with the
  // IOMMU: the memory that outlived them gets its IOVAs back, so a buffer registered
  // for I/O stays valid across an outage.
  for (const auto& [iova, m] : mappings_) {
    if (absl::Status s = Map(m.host, iova, m.len); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status VfioContainer::Map(void* host, uint64_t iova, uint64_t len) {
  vfio_iommu_type1_dma_map map{};
  map.argsz = sizeof map;
  map.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
  map.vaddr = reinterpret_cast<uint64_t>(host);
  map.iova = iova;
  map.size = len;
  if (ioctl(fd_, VFIO_IOMMU_MAP_DMA, &map) != 0) return Errno("VFIO_IOMMU_MAP_DMA");
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> VfioContainer::MapDma(void* host, uint64_t len) {
  if (!iommu_set_) return absl::FailedPreconditionError("no group has joined the container");
  if (reinterpret_cast<uintptr_t>(host) % kPage != 0 || len == 0 || len % kPage != 0) {
    return absl::InvalidArgumentError("DMA memory must be whole, aligned pages");
  }
  absl::StatusOr<uint64_t> iova = iova_.Allocate(len, kPage);
  if (!iova.ok()) return iova.status();
  if (absl::Status s = Map(host, *iova, len); !s.ok()) {
    (void)iova_.Free(*iova, len);
    return s;
  }
  mappings_[*iova] = Mapping{host, len};
  return *iova;
}

absl::Status VfioContainer::UnmapDma(uint64_t iova, uint64_t len) {
  vfio_iommu_type1_dma_unmap unmap{};
  unmap.argsz = sizeof unmap;
  unmap.iova = iova;
  unmap.size = len;
  // With no group left the kernel already dropped the mapping; the IOVA is ours again.
  if (iommu_set_ && ioctl(fd_, VFIO_IOMMU_UNMAP_DMA, &unmap) != 0) {
    return Errno("VFIO_IOMMU_UNMAP_DMA");
  }
  mappings_.erase(iova);
  return iova_.Free(iova, len);
}

absl::StatusOr<std::unique_ptr<VfioDevice>> VfioDevice::Open(VfioContainer* container,
                                                            const std::string& bdf) {
  namespace fs = std::filesystem;
  const fs::path dev = fs::path("/sys/bus/pci/devices") / bdf;
  std::error_code ec;
  if (!fs::exists(dev, ec)) return absl::NotFoundError(absl::StrCat("no PCI device ", bdf));
  {
    std::ifstream cls(dev / "class");
    std::string text;
    cls >> text;
    if (text != "0x010802") {
      return absl::FailedPreconditionError(absl::StrCat(
          bdf, " is not an NVMe controller (PCI class ", text.empty() ? "unknown" : text,
          ", NVMe is 0x010802)"));
    }
  }
  const fs::path driver = fs::read_symlink(dev / "driver", ec);
  if (ec || driver.filename() != "vfio-pci") {
    return absl::FailedPreconditionError(absl::StrCat(
        bdf, " is bound to ", ec ? std::string("no driver") : driver.filename().string(),
        ", not vfio-pci"));
  }
  const fs::path group = fs::read_symlink(dev / "iommu_group", ec);
  if (ec) return absl::FailedPreconditionError(absl::StrCat(bdf, " has no IOMMU group"));

  std::unique_ptr<VfioDevice> d(new VfioDevice());
  d->bdf_ = bdf;
  const std::string group_path = absl::StrCat("/dev/vfio/", group.filename().string());
  d->group_fd_ = open(group_path.c_str(), O_RDWR | O_CLOEXEC);
  if (d->group_fd_ < 0) return Errno(absl::StrCat("open ", group_path));
  vfio_group_status status{};
  status.argsz = sizeof status;
  if (ioctl(d->group_fd_, VFIO_GROUP_GET_STATUS, &status) != 0) return Errno("VFIO_GROUP_GET_STATUS");
  if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "IOMMU group of ", bdf, " is not viable: bind all its devices to vfio-pci"));
  }
  int cfd = container->fd();
  if (ioctl(d->group_fd_, VFIO_GROUP_SET_CONTAINER, &cfd) != 0) return Errno("VFIO_GROUP_SET_CONTAINER");
  d->container_ = container;
  container->GroupJoined();
  if (absl::Status s = container->SetIommu(); !s.ok()) return s;
  d->device_fd_ = ioctl(d->group_fd_, VFIO_GROUP_GET_DEVICE_FD, bdf.c_str());
  if (d->device_fd_ < 0) return Errno("VFIO_GROUP_GET_DEVICE_FD");
  if (absl::Status s = d->MapRegisters(); !s.ok()) return s;
  // vfio-pci enables the device but leaves bus mastering to its user: without it the
  // controller cannot fetch a single command.
  if (absl::Status st = d->EnableBusMaster(); !st.ok()) return st;
  return d;
}

absl::StatusOr<std::unique_ptr<VfioDevice>> VfioDevice::Adopt(VfioContainer* container,
                                                             const std::string& bdf, int group_fd,
                                                             int device_fd) {
  std::unique_ptr<VfioDevice> d(new VfioDevice());
  d->bdf_ = bdf;
  d->group_fd_ = group_fd;
  d->device_fd_ = device_fd;
  vfio_group_status status{};
  status.argsz = sizeof status;
  if (ioctl(group_fd, VFIO_GROUP_GET_STATUS, &status) != 0) return Errno("VFIO_GROUP_GET_STATUS");
  if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE) || !(status.flags & VFIO_GROUP_FLAGS_CONTAINER_SET)) {
    return absl::FailedPreconditionError(
        absl::StrCat("the handed-over group of ", bdf, " is not viable or has no container"));
  }
  d->container_ = container;
  container->GroupJoined();
  vfio_device_info info{};
  info.argsz = sizeof info;
  if (ioctl(device_fd, VFIO_DEVICE_GET_INFO, &info) != 0 || !(info.flags & VFIO_DEVICE_FLAGS_PCI)) {
    return absl::FailedPreconditionError(absl::StrCat("the handed-over device of ", bdf, " is not a vfio PCI device"));
  }
  if (absl::Status s = d->MapRegisters(); !s.ok()) return s;
  return d;
}

absl::Status VfioDevice::MapRegisters() {
  const std::string& bdf = bdf_;
  VfioDevice* d = this;
  vfio_region_info region{};
  region.argsz = sizeof region;
  region.index = VFIO_PCI_BAR0_REGION_INDEX;
  if (ioctl(d->device_fd_, VFIO_DEVICE_GET_REGION_INFO, &region) != 0) {
    return Errno("VFIO_DEVICE_GET_REGION_INFO BAR0");
  }
  if (!(region.flags & VFIO_REGION_INFO_FLAG_MMAP) || region.size < 0x2000) {
    return absl::FailedPreconditionError(
        absl::StrCat("BAR0 of ", bdf, " is not mmap-able or too small (", region.size, " B)"));
  }
  vfio_region_info config{};
  config.argsz = sizeof config;
  config.index = VFIO_PCI_CONFIG_REGION_INDEX;
  if (ioctl(d->device_fd_, VFIO_DEVICE_GET_REGION_INFO, &config) != 0) {
    return Errno("VFIO_DEVICE_GET_REGION_INFO config");
  }
  d->command_at_ = static_cast<off_t>(config.offset) + 0x04;  // PCI_COMMAND
  void* bar = mmap(nullptr, region.size, PROT_READ | PROT_WRITE, MAP_SHARED, d->device_fd_,
                   static_cast<off_t>(region.offset));
  if (bar == MAP_FAILED) return Errno("mmap BAR0");
  d->bar0_ = static_cast<volatile uint8_t*>(bar);
  d->bar0_size_ = region.size;
  return absl::OkStatus();
}

VfioDevice::~VfioDevice() {
  if (bar0_) munmap(const_cast<uint8_t*>(bar0_), bar0_size_);
  if (device_fd_ >= 0) close(device_fd_);
  if (group_fd_ >= 0) close(group_fd_);
  if (container_) container_->GroupLeft();
}

absl::Status VfioDevice::EnableBusMaster() {
  uint16_t command = 0;
  if (pread(device_fd_, &command, sizeof command, command_at_) != sizeof command) {
    return Errno("read PCI_COMMAND");
  }
  command |= 0x0002 | 0x0004;  // memory space, bus master
  if (pwrite(device_fd_, &command, sizeof command, command_at_) != sizeof command) {
    return Errno("write PCI_COMMAND");
  }
  return absl::OkStatus();
}

absl::Status VfioDevice::ClearBusMaster() {
  uint16_t command = 0;
  if (pread(device_fd_, &command, sizeof command, command_at_) != sizeof command) {
    return Errno("read PCI_COMMAND");
  }
  command &= static_cast<uint16_t>(~0x0004);  // bus master
  if (pwrite(device_fd_, &command, sizeof command, command_at_) != sizeof command) {
    return Errno("write PCI_COMMAND");
  }
  return absl::OkStatus();
}

absl::Status VfioDevice::ResetFunction() {
  if (ioctl(device_fd_, VFIO_DEVICE_RESET) != 0) return Errno("VFIO_DEVICE_RESET");
  return absl::OkStatus();
}

uint32_t VfioDevice::IrqCount(uint32_t index) const {
  vfio_irq_info info{};
  info.argsz = sizeof info;
  info.index = index;
  if (ioctl(device_fd_, VFIO_DEVICE_GET_IRQ_INFO, &info) != 0) return 0;
  return (info.flags & VFIO_IRQ_INFO_EVENTFD) ? info.count : 0;
}

absl::Status VfioDevice::SetIrqEventfds(uint32_t index, const std::vector<int>& fds) {
  if (fds.empty()) return absl::InvalidArgumentError("no eventfds");
  std::vector<uint8_t> buf(sizeof(vfio_irq_set) + sizeof(int32_t) * fds.size());
  auto* set = reinterpret_cast<vfio_irq_set*>(buf.data());
  set->argsz = static_cast<uint32_t>(buf.size());
  set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  set->index = index;
  set->start = 0;
  set->count = static_cast<uint32_t>(fds.size());
  for (size_t i = 0; i < fds.size(); ++i) {
    const int32_t fd = fds[i];
    std::memcpy(set->data + i * sizeof(int32_t), &fd, sizeof fd);
  }
  if (ioctl(device_fd_, VFIO_DEVICE_SET_IRQS, set) != 0) {
    return Errno(absl::StrCat("VFIO_DEVICE_SET_IRQS index ", index, " count ", fds.size()));
  }
  return absl::OkStatus();
}

absl::Status VfioDevice::DisableIrqs(uint32_t index) {
  vfio_irq_set set{};
  set.argsz = sizeof set;
  set.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
  set.index = index;
  set.start = 0;
  set.count = 0;
  if (ioctl(device_fd_, VFIO_DEVICE_SET_IRQS, &set) != 0) return Errno("VFIO_DEVICE_SET_IRQS off");
  return absl::OkStatus();
}

void VfioContainer::GroupLeft() {
  // The kernel drops the container's IOMMU, and every mapping, with its last group.
  if (--groups_ == 0) iommu_set_ = false;
}

volatile uint32_t* VfioDevice::Register32(uint32_t offset) const {
  return reinterpret_cast<volatile uint32_t*>(bar0_ + offset);
}
uint32_t VfioDevice::Read32(uint32_t offset) const { return *Register32(offset); }
uint64_t VfioDevice::Read64(uint32_t offset) const {
  // Two dword reads, low first: not every controller (or IOMMU path) takes 64-bit MMIO.
  const uint64_t lo = Read32(offset);
  const uint64_t hi = Read32(offset + 4);
  return lo | hi << 32;
}
void VfioDevice::Write32(uint32_t offset, uint32_t value) { *Register32(offset) = value; }
void VfioDevice::Write64(uint32_t offset, uint64_t value) {
  Write32(offset, static_cast<uint32_t>(value));
  Write32(offset + 4, static_cast<uint32_t>(value >> 32));
}

}  // namespace umpath::vfio
