#pragma once

// Our own IOVA space for one vfio container: ordinary memory is pinned and mapped with
// VFIO_IOMMU_MAP_DMA at addresses this allocator hands out (no hugepages needed).

#include <cstdint>
#include <map>

#include "absl/status/statusor.h"

namespace umpath::vfio {

// First fit over [base, base + size), in units of `granule` bytes (the IOMMU page), with
// neighbours coalesced on free. Threading: none; the control thread owns it (DMA memory
// is set up at bring-up, never per I/O).
class IovaAllocator {
 public:
  // `granule` must be a power of two; base and size multiples of it.
  static absl::StatusOr<IovaAllocator> Create(uint64_t base, uint64_t size, uint64_t granule);

  // `len` rounded up to the granule; `align` a power of two, at least the granule.
  // RESOURCE_EXHAUSTED when no free range fits.
  absl::StatusOr<uint64_t> Allocate(uint64_t len, uint64_t align);
  // Takes exactly [iova, iova + len) (an IOVA another process mapped in the container
  // this one inherits); FAILED_PRECONDITION unless all of it is free, INVALID_ARGUMENT
  // unless it is whole granules.
  absl::Status Reserve(uint64_t iova, uint64_t len);
  // INVALID_ARGUMENT unless [iova, iova + len) is exactly an allocated range.
  absl::Status Free(uint64_t iova, uint64_t len);

  uint64_t free_bytes() const { return free_bytes_; }
  size_t free_ranges() const { return free_.size(); }

 private:
  IovaAllocator(uint64_t base, uint64_t size, uint64_t granule)
      : granule_(granule), free_bytes_(size) {
    free_[base] = size;
  }
  uint64_t Round(uint64_t len) const { return (len + granule_ - 1) & ~(granule_ - 1); }

  uint64_t granule_;
  uint64_t free_bytes_;
  std::map<uint64_t, uint64_t> free_;       // start -> length
  std::map<uint64_t, uint64_t> allocated_;  // start -> length
};

}  // namespace umpath::vfio
