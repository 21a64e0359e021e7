#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "agent/nvme/wire.h"

namespace umpath::nvme {

// SEMANTICS.md "Completion disposition": what to do with a completed command.
enum class Disposition : uint8_t {
  kComplete,      // success: complete to the caller
  kFailToCaller,  // DNR, a spent retry budget, or an error no other path can fix
  kFailover,      // a path error: requeue on the head, the caller never sees it
  kRetry,         // retry on the same path after the Command Retry Delay
};

// Status code type 3 (path related status), as the kernel's nvme_is_path_error.
constexpr bool IsPathError(Status s) { return s.sct() == 0x3; }
// 0x301..0x303: the ANA state of this path changed; the ANA log should be re-read.
constexpr bool IsAnaError(Status s) {
  return s.code() >= status_code::kAnaPersistentLoss && s.code() <= status_code::kAnaTransition;
}

// Applies SEMANTICS.md's rules in their order. `retry_budget_spent` is true when the
// command has already been retried the maximum number of times. A queue pair that is
// gone completes its commands with kHostAbortedCommand, a path error, so they fail over.
constexpr Disposition Decide(Status s, bool retry_budget_spent) {
  if (s.ok()) return Disposition::kComplete;
  if (s.dnr() || retry_budget_spent) return Disposition::kFailToCaller;
  if (IsPathError(s)) return Disposition::kFailover;
  return Disposition::kRetry;
}

// The Command Retry Delay the status asks for, in nanoseconds: CRDT[crd-1] x 100 ms,
// 0 when CRD is 0 (the controller's Identify CRDT1..3 are in 100 ms units).
int64_t RetryDelayNanos(Status s, const std::array<uint16_t, 3>& crdt);

// "0x303 (path: ANA transition), dnr" and the like, for events and logs.
std::string StatusToString(Status s);
absl::string_view DispositionName(Disposition d);

}  // namespace umpath::nvme
