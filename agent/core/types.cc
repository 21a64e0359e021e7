#include "agent/core/types.h"

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "agent/base/error_reason.h"

namespace umpath {

absl::string_view ControllerStateName(ControllerState s) {
  switch (s) {
    case ControllerState::kNew: return "new";
    case ControllerState::kLive: return "live";
    case ControllerState::kResetting: return "resetting";
    case ControllerState::kConnecting: return "connecting";
    case ControllerState::kDeleting: return "deleting";
    case ControllerState::kDead: return "dead";
  }
  return "unknown";
}

absl::string_view IoPolicyName(IoPolicy p) {
  switch (p) {
    case IoPolicy::kNuma: return "numa";
    case IoPolicy::kRoundRobin: return "round-robin";
    case IoPolicy::kQueueDepth: return "queue-depth";
  }
  return "unknown";
}

absl::StatusOr<IoPolicy> ParseIoPolicy(absl::string_view name) {
  for (IoPolicy p : {IoPolicy::kNuma, IoPolicy::kRoundRobin, IoPolicy::kQueueDepth}) {
    if (name == IoPolicyName(p)) return p;
  }
  return FieldError("io_policy", absl::StrCat("unknown I/O policy \"", name,
                                              "\"; expected one of: numa, round-robin, queue-depth"));
}

namespace {

absl::Status ValidateSeconds(absl::string_view what, int64_t secs, uint32_t max) {
  if (secs < 0 || secs > max) {
    return RangeError(what, 0, max, absl::StrCat(what, " ", secs, " is out of range; allowed 0..", max));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> ParseSeconds(absl::string_view what, absl::string_view text, uint32_t max) {
  absl::string_view t = absl::StripAsciiWhitespace(text);
  bool digits = !t.empty() && t.size() <= 12;
  for (char c : t) digits = digits && absl::ascii_isdigit(static_cast<unsigned char>(c));
  int64_t v = 0;
  if (!digits || !absl::SimpleAtoi(t, &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " \"", text, "\" is not a number of seconds; allowed 0..", max));
  }
  if (absl::Status s = ValidateSeconds(what, v, max); !s.ok()) return s;
  return static_cast<uint32_t>(v);
}

}  // namespace

absl::Status ValidateDelayedRemovalSecs(int64_t secs) {
  return ValidateSeconds("delayed_removal_secs", secs, kMaxDelayedRemovalSecs);
}

absl::StatusOr<uint32_t> ParseDelayedRemovalSecs(absl::string_view text) {
  return ParseSeconds("delayed_removal_secs", text, kMaxDelayedRemovalSecs);
}

absl::Status ValidateIoFailTimeoutSecs(int64_t secs) {
  return ValidateSeconds("io_fail_timeout_secs", secs, kMaxIoFailTimeoutSecs);
}

absl::StatusOr<uint32_t> ParseIoFailTimeoutSecs(absl::string_view text) {
  return ParseSeconds("io_fail_timeout_secs", text, kMaxIoFailTimeoutSecs);
}

absl::Status ValidateVolume(absl::string_view volume) {
  if (volume.size() > kMaxVolumeBytes) {
    return FieldError("volume", absl::StrCat("volume is ", volume.size(), " bytes long; at most ",
                                             kMaxVolumeBytes, " are allowed"));
  }
  for (char c : volume) {
    if (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' ||
        c == ':' || c == '/') {
      continue;
    }
    return FieldError("volume", absl::StrCat("volume may hold letters, digits and \"-._:/\" only, not \"",
                                             absl::CHexEscape(absl::string_view(&c, 1)), "\""));
  }
  return absl::OkStatus();
}

}  // namespace umpath
