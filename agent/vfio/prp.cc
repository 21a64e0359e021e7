#include "agent/vfio/prp.h"

namespace umpath::vfio {

namespace {

uint64_t PagesSpanned(uint64_t iova, uint64_t len, uint32_t page_size) {
  const uint64_t offset = iova & (page_size - 1);
  return (offset + len + page_size - 1) / page_size;
}

}  // namespace

uint32_t PrpListPagesNeeded(uint64_t iova, uint64_t len, uint32_t page_size) {
  const uint64_t pages = PagesSpanned(iova, len, page_size);
  if (pages <= 2) return 0;
  const uint64_t per_page = page_size / sizeof(uint64_t);
  uint64_t entries = pages - 1;
  uint32_t list_pages = 1;
  // Every list page but the last gives its final entry to the chain pointer.
  while (entries > per_page) {
    entries -= per_page - 1;
    ++list_pages;
  }
  return list_pages;
}

Prps BuildPrps(uint64_t iova, uint64_t len, uint32_t page_size, const PrpListPage* list,
               uint32_t list_count) {
  Prps out;
  if (len == 0) {
    out.error = PrpError::kEmpty;
    return out;
  }
  if (iova & 3) {  // PRP entries are dword aligned
    out.error = PrpError::kUnaligned;
    return out;
  }
  const uint64_t mask = page_size - 1;
  const uint64_t first_page = iova & ~mask;
  const uint64_t pages = PagesSpanned(iova, len, page_size);
  out.prp1 = iova;
  if (pages == 1) return out;
  if (pages == 2) {
    out.prp2 = first_page + page_size;
    return out;
  }
  const uint32_t needed = PrpListPagesNeeded(iova, len, page_size);
  if (needed > list_count) {
    out.error = PrpError::kListTooSmall;
    return out;
  }
  const uint64_t per_page = page_size / sizeof(uint64_t);
  uint64_t next_data = first_page + page_size;  // page 2 of the transfer
  uint64_t remaining = pages - 1;
  for (uint32_t p = 0; p < needed; ++p) {
    uint64_t* entries = list[p].host;
    const bool last = p + 1 == needed;
    const uint64_t data_here = last ? remaining : per_page - 1;
    for (uint64_t e = 0; e < data_here; ++e, next_data += page_size) entries[e] = next_data;
    remaining -= data_here;
    if (!last) entries[per_page - 1] = list[p + 1].iova;
  }
  out.prp2 = list[0].iova;
  out.list_pages_used = needed;
  return out;
}

}  // namespace umpath::vfio
