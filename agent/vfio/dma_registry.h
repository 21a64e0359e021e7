#pragma once

// Which host memory the I/O queues may hand to a controller, and at which IOVA: the
// buffers a frontend (umpath-perf, the ublk export) registered at setup. The hot path
// translates a request's data pointer with no lock and no allocation.
//
// Threading: Add and Remove on the control thread (one writer); Translate from any
// worker. Regions are appended into a fixed table and published with a release store
// of the count; a removed region is emptied, never reused while I/O may use it (the
// owner removes a buffer only after its last I/O completed).

#include <atomic>
#include <cstdint>

#include "absl/status/status.h"

namespace umpath::vfio {

class DmaRegistry {
 public:
  static constexpr uint32_t kMaxRegions = 256;

  absl::Status Add(const void* host, uint64_t len, uint64_t iova) {
    const uint32_t n = count_.load(std::memory_order_relaxed);
    if (len == 0) return absl::InvalidArgumentError("an empty DMA region");
    if (n == kMaxRegions) {
      return absl::ResourceExhaustedError("the DMA registry is full (256 regions)");
    }
    regions_[n].host.store(reinterpret_cast<uintptr_t>(host), std::memory_order_relaxed);
    regions_[n].iova.store(iova, std::memory_order_relaxed);
    regions_[n].len.store(len, std::memory_order_relaxed);
    count_.store(n + 1, std::memory_order_release);
    return absl::OkStatus();
  }

  void Remove(const void* host) {
    const uint32_t n = count_.load(std::memory_order_relaxed);
    for (uint32_t i = 0; i < n; ++i) {
      if (regions_[i].host.load(std::memory_order_relaxed) ==
          reinterpret_cast<uintptr_t>(host)) {
        regions_[i].len.store(0, std::memory_order_release);
      }
    }
  }

  // The IOVA of [host, host + len) when one registered region holds all of it.
  bool Translate(const void* host, uint64_t len, uint64_t* iova) const {
    const uintptr_t p = reinterpret_cast<uintptr_t>(host);
    const uint32_t n = count_.load(std::memory_order_acquire);
    for (uint32_t i = 0; i < n; ++i) {
      const Region& r = regions_[i];
      const uintptr_t base = r.host.load(std::memory_order_relaxed);
      const uint64_t rlen = r.len.load(std::memory_order_relaxed);
      if (p >= base && p - base <= rlen && len <= rlen - (p - base) && rlen != 0) {
        *iova = r.iova.load(std::memory_order_relaxed) + (p - base);
        return true;
      }
    }
    return false;
  }

 private:
  struct Region {
    std::atomic<uintptr_t> host{0};
    std::atomic<uint64_t> iova{0};
    std::atomic<uint64_t> len{0};
  };
  Region regions_[kMaxRegions];
  std::atomic<uint32_t> count_{0};
};

}  // namespace umpath::vfio
