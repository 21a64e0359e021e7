// umpath-vfio-probe: opens NVMe controllers through vfio, reads their registers through
// the mapped BAR0 and maps DMA memory. The lab runs it in the guest to prove the vfio
// layer on QEMU's controllers. Usage: umpath-vfio-probe BDF...
#include <sys/mman.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "agent/core/multipath.h"
#include "agent/vfio/controller.h"
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
  std::vector<std::unique_ptr<VfioController>> devices;
  int failures = 0;
  for (int i = 1; i < argc; ++i) {
    auto ctrl = VfioController::Open(container->get(), argv[i]);
    if (!ctrl.ok()) {
      std::printf("umpath-vfio-probe: %s: %s\n", argv[i], ctrl.status().ToString().c_str());
      ++failures;
      continue;
    }
    VfioDevice& dev = (*ctrl)->device();
    const regs::Cap cap = (*ctrl)->cap();
    std::printf("umpath-vfio-probe: %s bar0=%llu cap=0x%016llx vs=0x%08x csts=0x%08x "
                "mqes=%u to_ms=%u dstrd=%u mps=%u..%u\n",
                argv[i], static_cast<unsigned long long>(dev.bar0_size()),
                static_cast<unsigned long long>(cap.raw), dev.Read32(regs::kVs),
                dev.Read32(regs::kCsts), cap.mqes(), cap.timeout_ms(), cap.doorbell_stride(),
                cap.mps_min(), cap.mps_max());
    // Bring-up and identity: what grouping paths into heads stands on.
    absl::Status enabled = (*ctrl)->Enable();
    auto id = enabled.ok() ? (*ctrl)->IdentifyController()
                           : absl::StatusOr<umpath::nvme::ControllerIdentity>(enabled);
    auto nsids = id.ok() ? (*ctrl)->ActiveNamespaces()
                         : absl::StatusOr<std::vector<uint32_t>>(id.status());
    if (!nsids.ok()) {
      std::printf("umpath-vfio-probe: %s: bring-up: %s\n", argv[i], nsids.status().ToString().c_str());
      ++failures;
      devices.push_back(std::move(*ctrl));  // its group stays in the container
      continue;
    }
    std::printf("umpath-vfio-probe: %s enabled cntlid=%u serial=%s model=\"%s\" subnqn=%s "
                "nn=%u cmic=0x%x mdts=%u namespaces=%zu\n",
                argv[i], id->cntlid, id->serial.c_str(), id->model.c_str(),
                id->subsys_nqn.c_str(), id->nn, id->cmic, id->mdts, nsids->size());
    for (uint32_t nsid : *nsids) {
      auto ns = (*ctrl)->IdentifyNamespace(nsid);
      auto ids = (*ctrl)->NamespaceIdDescriptors(nsid);
      if (!ns.ok() || !ids.ok()) {
        std::printf("umpath-vfio-probe: %s nsid %u: %s\n", argv[i], nsid,
                    (ns.ok() ? ids.status() : ns.status()).ToString().c_str());
        ++failures;
        continue;
      }
      std::printf("umpath-vfio-probe: %s nsid %u blocks=%llu block_size=%u shared=%d ids=%s "
                  "head=%s\n",
                  argv[i], nsid, static_cast<unsigned long long>(ns->size_blocks),
                  ns->block_size, ns->shared, ids->ToString().c_str(),
                  umpath::HeadNameFor(id->subsys_nqn, nsid, *ids).c_str());
    }
    if (absl::Status s = (*ctrl)->Disable(); !s.ok()) {
      std::printf("umpath-vfio-probe: %s: disable: %s\n", argv[i], s.ToString().c_str());
      ++failures;
    }
    devices.push_back(std::move(*ctrl));
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
