#pragma once

#include <cstdint>
#include <string>


#include "absl/strings/string_view.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace umpath {

// SEMANTICS.md "Objects": a controller's lifecycle, as the kernel's nvme_ctrl_state.
enum class ControllerState : uint8_t { kNew, kLive, kResetting, kConnecting, kDeleting, kDead };
absl::string_view ControllerStateName(ControllerState s);

enum class IoPolicy : uint8_t { kNuma, kRoundRobin, kQueueDepth };
absl::string_view IoPolicyName(IoPolicy p);
// Accepts "numa", "round-robin", "queue-depth"; anything else is INVALID_ARGUMENT
// naming the accepted values.
absl::StatusOr<IoPolicy> ParseIoPolicy(absl::string_view name);

// umpath bounds delayed_removal_secs (the kernel's kstrtouint has none and its
// secs * HZ wraps in 32 bits).
inline constexpr uint32_t kMaxDelayedRemovalSecs = 86400;
absl::Status ValidateDelayedRemovalSecs(int64_t secs);
// For values that arrive as text (config files, flags): digits only, in range.
absl::StatusOr<uint32_t> ParseDelayedRemovalSecs(absl::string_view text);
// io_fail_timeout_secs (SEMANTICS "Fast fail"): the same range, 0 meaning no limit of its
// own (I/O waits for the removal deadline).
inline constexpr uint32_t kMaxIoFailTimeoutSecs = 86400;
absl::Status ValidateIoFailTimeoutSecs(int64_t secs);
absl::StatusOr<uint32_t> ParseIoFailTimeoutSecs(absl::string_view text);
// A head's volume label (issue 20: joins umpath_head_info with a PersistentVolume): at
// most 253 bytes (a DNS subdomain, as Kubernetes object names) of letters, digits and
// "-._:/", so it is one token in the settings file and needs no quoting anywhere; empty
// means none. INVALID_ARGUMENT otherwise.
inline constexpr size_t kMaxVolumeBytes = 253;
absl::Status ValidateVolume(absl::string_view volume);

}  // namespace umpath
