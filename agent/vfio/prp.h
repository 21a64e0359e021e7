#pragma once

// Physical Region Page entries for one command (NVMe Base 2.0, 4.1.1 "Physical Region
// Page Entry and List"): PRP1 is the buffer's first address (any dword-aligned offset);
// PRP2 is unused when the transfer ends in the first page, the second page when it ends
// there, and otherwise the address of a PRP list holding pages 2..n, whose last entry
// chains to the next list page when a page of entries is not enough.
//
// Hot path: no allocation, no absl::Status; the list pages come from the caller's
// per-command slot.

#include <cstdint>

namespace umpath::vfio {

struct PrpListPage {
  uint64_t iova = 0;
  uint64_t* host = nullptr;  // page_size bytes, where the entries are written
};

enum class PrpError : uint8_t { kNone, kEmpty, kUnaligned, kListTooSmall };

struct Prps {
  PrpError error = PrpError::kNone;
  uint64_t prp1 = 0;
  uint64_t prp2 = 0;
  uint32_t list_pages_used = 0;
};

// The PRP list pages a transfer of `len` bytes at `iova` needs (0 for up to two pages).
uint32_t PrpListPagesNeeded(uint64_t iova, uint64_t len, uint32_t page_size);

// `iova`..`iova + len` is IOVA-contiguous (a registered buffer). `page_size` is the
// controller's memory page size (CC.MPS), a power of two of at least 4096.
Prps BuildPrps(uint64_t iova, uint64_t len, uint32_t page_size, const PrpListPage* list,
               uint32_t list_count);

}  // namespace umpath::vfio
