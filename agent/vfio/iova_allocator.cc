#include "agent/vfio/iova_allocator.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace umpath::vfio {

namespace {
bool PowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }
}  // namespace

absl::StatusOr<IovaAllocator> IovaAllocator::Create(uint64_t base, uint64_t size,
                                                    uint64_t granule) {
  if (!PowerOfTwo(granule) || base % granule != 0 || size % granule != 0 || size == 0 ||
      base + size < base) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "IOVA range 0x%x+0x%x with granule 0x%x is not granule-aligned or wraps", base, size,
        granule));
  }
  return IovaAllocator(base, size, granule);
}

absl::StatusOr<uint64_t> IovaAllocator::Allocate(uint64_t len, uint64_t align) {
  if (len == 0 || !PowerOfTwo(align) || align < granule_) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "IOVA allocation of 0x%x bytes aligned to 0x%x (granule 0x%x)", len, align, granule_));
  }
  const uint64_t need = Round(len);
  if (need < len) return absl::ResourceExhaustedError("IOVA allocation size overflows");
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    const uint64_t start = it->first, size = it->second;
    const uint64_t aligned = (start + align - 1) & ~(align - 1);
    if (aligned < start || aligned - start >= size || size - (aligned - start) < need) continue;
    free_.erase(it);
    if (aligned > start) free_[start] = aligned - start;  // the gap before stays free
    const uint64_t tail = start + size - (aligned + need);
    if (tail > 0) free_[aligned + need] = tail;
    allocated_[aligned] = need;
    free_bytes_ -= need;
    return aligned;
  }
  return absl::ResourceExhaustedError(absl::StrFormat(
      "no free IOVA range of 0x%x bytes aligned to 0x%x (0x%x bytes free in %d ranges)", need,
      align, free_bytes_, free_.size()));
}

absl::Status IovaAllocator::Reserve(uint64_t iova, uint64_t len) {
  if (len == 0 || iova % granule_ != 0 || len % granule_ != 0 || iova + len < iova) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "IOVA range 0x%x+0x%x is not whole granules of 0x%x", iova, len, granule_));
  }
  // The free range holding its start must hold all of it.
  auto it = free_.upper_bound(iova);
  if (it == free_.begin()) {
    return absl::FailedPreconditionError(absl::StrFormat("IOVA 0x%x+0x%x is not free", iova, len));
  }
  --it;
  const uint64_t start = it->first, size = it->second;
  if (iova + len > start + size) {
    return absl::FailedPreconditionError(absl::StrFormat("IOVA 0x%x+0x%x is not free", iova, len));
  }
  free_.erase(it);
  if (iova > start) free_[start] = iova - start;
  if (start + size > iova + len) free_[iova + len] = start + size - (iova + len);
  allocated_[iova] = len;
  free_bytes_ -= len;
  return absl::OkStatus();
}

absl::Status IovaAllocator::Free(uint64_t iova, uint64_t len) {
  auto it = allocated_.find(iova);
  if (it == allocated_.end() || it->second != Round(len)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("0x%x+0x%x is not an allocated IOVA range", iova, len));
  }
  uint64_t start = iova, size = it->second;
  allocated_.erase(it);
  free_bytes_ += size;
  // Coalesce with the free neighbours on both sides.
  auto next = free_.lower_bound(start);
  if (next != free_.end() && next->first == start + size) {
    size += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {
      start = prev->first;
      size += prev->second;
      free_.erase(prev);
    }
  }
  free_[start] = size;
  return absl::OkStatus();
}

}  // namespace umpath::vfio
