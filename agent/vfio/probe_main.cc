// umpath-vfio-probe: opens NVMe controllers through vfio, reads their registers through
// the mapped BAR0 and maps DMA memory. The lab runs it in the guest to prove the vfio
// layer on QEMU's controllers. Usage: umpath-vfio-probe BDF...
#include <sys/mman.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "agent/vfio/regs.h"
#include "agent/vfio/vfio_device.h"

int main(int argc, char** argv) {
  using namespace umpath::vfio;
  if (argc < 2) {
    std::fprintf(stderr, "usage: umpath-vfio-probe BDF...\n");
    return 2;
  }
  auto container = VfioContainer::Open();
  if (!container.ok()) {
    std::fprintf(stderr, "umpath-vfio-probe: %s\n", container.status().ToString().c_str());
    return 1;
  }
  std::vector<std::unique_ptr<VfioDevice>> devices;
  int failures = 0;
  for (int i = 1; i < argc; ++i) {
    auto dev = VfioDevice::Open(container->get(), argv[i]);
    if (!dev.ok()) {
      std::printf("umpath-vfio-probe: %s: %s\n", argv[i], dev.status().ToString().c_str());
      ++failures;
      continue;
    }
    const regs::Cap cap{(*dev)->Read64(regs::kCap)};
    std::printf("umpath-vfio-probe: %s bar0=%llu cap=0x%016llx vs=0x%08x csts=0x%08x "
                "mqes=%u to_ms=%u dstrd=%u mps=%u..%u\n",
                argv[i], static_cast<unsigned long long>((*dev)->bar0_size()),
                static_cast<unsigned long long>(cap.raw), (*dev)->Read32(regs::kVs),
                (*dev)->Read32(regs::kCsts), cap.mqes(), cap.timeout_ms(), cap.doorbell_stride(),
                cap.mps_min(), cap.mps_max());
    devices.push_back(std::move(*dev));
  }
  // Ordinary anonymous memory, pinned and mapped: no hugepages.
  const size_t len = 64 * 4096;
  void* mem = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  auto iova = (*container)->MapDma(mem, len);
  if (!iova.ok()) {
    std::printf("umpath-vfio-probe: DMA map: %s\n", iova.status().ToString().c_str());
    return 1;
  }
  auto again = (*container)->MapDma(mem, 4096);  // the same pages twice, at another IOVA
  std::printf("umpath-vfio-probe: dma %zu bytes at iova 0x%llx; second map %s\n", len,
              static_cast<unsigned long long>(*iova), again.ok() ? "ok" : again.status().ToString().c_str());
  if (!(*container)->UnmapDma(*iova, len).ok()) ++failures;
  std::printf("umpath-vfio-probe: %zu devices opened, %d failures\n", devices.size(), failures);
  return failures == 0 ? 0 : 1;
}
