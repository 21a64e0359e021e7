#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/statusor.h"

namespace umpath {

// Memory the backends can DMA into (registered with vfio, say): the host pointer, kept
// alive by `owner`.
struct IoMemory {
  void* host = nullptr;
  std::shared_ptr<void> owner;
};
using IoMemoryAllocator = std::function<absl::StatusOr<IoMemory>(uint64_t bytes)>;

}  // namespace umpath
