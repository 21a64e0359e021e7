#pragma once

// Why a call failed, as a constant a client can switch on: AIP-193's ErrorInfo reason
// (domain umpath.io) and its metadata. It rides on the absl::Status as a payload from
// where the error is made (the core, a backend, the server) to the API's edge, which
// turns it into google.rpc.ErrorInfo (server/errors.cc). A status without one gets a
// reason from its code there.
//
// Every reason here is documented in proto/umpath/v1/control.proto ("Errors"); a test
// (server/errors_test.cc) holds the two lists equal. Metadata keys are lowerCamelCase.

#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace umpath {

namespace reason {
// INVALID_ARGUMENT
inline constexpr absl::string_view kInvalidName = "INVALID_NAME";          // field, expected
inline constexpr absl::string_view kValueOutOfRange = "VALUE_OUT_OF_RANGE";  // field, min, max
inline constexpr absl::string_view kInvalidValue = "INVALID_VALUE";        // field
inline constexpr absl::string_view kFieldTooLong = "FIELD_TOO_LONG";       // field, maxBytes
inline constexpr absl::string_view kInvalidFilter = "INVALID_FILTER";      // offset
inline constexpr absl::string_view kInvalidPageToken = "INVALID_PAGE_TOKEN";
inline constexpr absl::string_view kInvalidRequest = "INVALID_REQUEST";    // method
// NOT_FOUND
inline constexpr absl::string_view kHeadNotFound = "HEAD_NOT_FOUND";              // head
inline constexpr absl::string_view kPathNotFound = "PATH_NOT_FOUND";              // head, path
inline constexpr absl::string_view kControllerNotFound = "CONTROLLER_NOT_FOUND";  // controller
inline constexpr absl::string_view kSettingsNotFound = "SETTINGS_NOT_FOUND";      // head
// FAILED_PRECONDITION
inline constexpr absl::string_view kBackendMissing = "BACKEND_MISSING";    // backend, why
inline constexpr absl::string_view kDeviceInUse = "DEVICE_IN_USE";         // device, head, pids, mounts, holders
inline constexpr absl::string_view kRecoveryPending = "RECOVERY_PENDING";  // head, device
inline constexpr absl::string_view kHeadNotExportable = "HEAD_NOT_EXPORTABLE";  // head
inline constexpr absl::string_view kFilterAmbiguous = "FILTER_AMBIGUOUS";  // heads
inline constexpr absl::string_view kNotAttachedHere = "NOT_ATTACHED_HERE";  // controller
inline constexpr absl::string_view kStopBySignalOnly = "STOP_BY_SIGNAL_ONLY";
// UNAVAILABLE
inline constexpr absl::string_view kAgentStopping = "AGENT_STOPPING";
inline constexpr absl::string_view kControllerRetiring = "CONTROLLER_RETIRING";  // controller
inline constexpr absl::string_view kDeviceRetiring = "DEVICE_RETIRING";          // head, device
inline constexpr absl::string_view kConnectFailed = "CONNECT_FAILED";            // address
inline constexpr absl::string_view kSettingsNotSaved = "SETTINGS_NOT_SAVED";
// RESOURCE_EXHAUSTED
inline constexpr absl::string_view kTooManyWatchers = "TOO_MANY_WATCHERS";  // limit
inline constexpr absl::string_view kWatcherBehind = "WATCHER_BEHIND";      // lastRevision
inline constexpr absl::string_view kTooManyWaits = "TOO_MANY_WAITS";       // limit
inline constexpr absl::string_view kBufferBudgetTaken = "BUFFER_BUDGET_TAKEN";  // head
// OUT_OF_RANGE
inline constexpr absl::string_view kRevisionNotRetained = "REVISION_NOT_RETAINED";  // oldestRevision
// DEADLINE_EXCEEDED
inline constexpr absl::string_view kWaitTimedOut = "WAIT_TIMED_OUT";  // head
// PERMISSION_DENIED / UNAUTHENTICATED
inline constexpr absl::string_view kRoleMissing = "ROLE_MISSING";        // role
inline constexpr absl::string_view kCallerUnknown = "CALLER_UNKNOWN";
// UNIMPLEMENTED
inline constexpr absl::string_view kMethodUnknown = "METHOD_UNKNOWN";
inline constexpr absl::string_view kTlsUnsupported = "TLS_UNSUPPORTED";  // field
// ALREADY_EXISTS, inside the agent only: AttachController answers the controller that
// is there (CSI: attaching what is attached succeeds).
inline constexpr absl::string_view kControllerAttached = "CONTROLLER_ATTACHED";  // controller

// Each of the above, for the test that holds them documented.
inline constexpr absl::string_view kAll[] = {
    kInvalidName, kValueOutOfRange, kInvalidValue, kFieldTooLong, kInvalidFilter,
    kInvalidPageToken, kInvalidRequest, kHeadNotFound, kPathNotFound, kControllerNotFound,
    kSettingsNotFound, kBackendMissing, kDeviceInUse, kRecoveryPending, kHeadNotExportable,
    kFilterAmbiguous, kNotAttachedHere, kStopBySignalOnly, kAgentStopping, kControllerRetiring,
    kDeviceRetiring, kConnectFailed, kSettingsNotSaved, kTooManyWatchers, kWatcherBehind,
    kTooManyWaits, kBufferBudgetTaken, kRevisionNotRetained, kWaitTimedOut, kRoleMissing,
    kCallerUnknown, kMethodUnknown, kTlsUnsupported, kControllerAttached};
}  // namespace reason

// The payload's key on an absl::Status.
inline constexpr absl::string_view kErrorReasonPayload = "type.umpath.io/umpath.ErrorReason";

struct ErrorReason {
  std::string reason;
  std::vector<std::pair<std::string, std::string>> metadata;
};

namespace error_reason_internal {
// Length-prefixed strings ("6:reason"), so that any byte may appear in a value.
inline void Put(std::string& out, absl::string_view s) { absl::StrAppend(&out, s.size(), ":", s); }
inline bool Take(absl::string_view& in, std::string* s) {
  const size_t colon = in.find(':');
  size_t n = 0;
  if (colon == absl::string_view::npos || !absl::SimpleAtoi(in.substr(0, colon), &n) ||
      n > in.size() - colon - 1) {
    return false;
  }
  *s = std::string(in.substr(colon + 1, n));
  in.remove_prefix(colon + 1 + n);
  return true;
}
}  // namespace error_reason_internal

// `s` with `why` and its metadata attached (replacing any earlier reason). An OK status
// stays OK.
inline absl::Status WithReason(
    absl::Status s, absl::string_view why,
    std::initializer_list<std::pair<absl::string_view, absl::string_view>> metadata = {}) {
  if (s.ok()) return s;
  std::string enc;
  error_reason_internal::Put(enc, why);
  for (const auto& [k, v] : metadata) {
    error_reason_internal::Put(enc, k);
    error_reason_internal::Put(enc, v);
  }
  s.SetPayload(kErrorReasonPayload, absl::Cord(enc));
  return s;
}

// The reason attached to `s`, if any.
inline std::optional<ErrorReason> ReasonOf(const absl::Status& s) {
  absl::optional<absl::Cord> p = s.GetPayload(kErrorReasonPayload);
  if (!p) return std::nullopt;
  const std::string flat(*p);
  absl::string_view in = flat;
  ErrorReason out;
  if (!error_reason_internal::Take(in, &out.reason)) return std::nullopt;
  while (!in.empty()) {
    std::string k, v;
    if (!error_reason_internal::Take(in, &k) || !error_reason_internal::Take(in, &v)) break;
    out.metadata.emplace_back(std::move(k), std::move(v));
  }
  return out;
}

// `s` with `what: ` before its message, its reason (and any other payload) kept.
inline absl::Status Prefixed(absl::string_view what, const absl::Status& s) {
  if (s.ok()) return s;
  absl::Status out(s.code(), absl::StrCat(what, ": ", s.message()));
  s.ForEachPayload([&out](absl::string_view url, const absl::Cord& p) { out.SetPayload(url, p); });
  return out;
}

// Whether `s` carries reason `why`.
inline bool ReasonIs(const absl::Status& s, absl::string_view why) {
  std::optional<ErrorReason> r = ReasonOf(s);
  return r && r->reason == why;
}
// A metadata value of `s`'s reason, "" when absent.
inline std::string ReasonMetadata(const absl::Status& s, absl::string_view key) {
  if (std::optional<ErrorReason> r = ReasonOf(s)) {
    for (const auto& [k, v] : r->metadata) {
      if (k == key) return v;
    }
  }
  return "";
}

// The ones made in many places.
inline absl::Status HeadNotFoundError(absl::string_view head) {
  return WithReason(absl::NotFoundError(absl::StrCat("head ", head, " not found")),
                    reason::kHeadNotFound, {{"head", head}});
}
inline absl::Status PathNotFoundError(absl::string_view head, absl::string_view path) {
  return WithReason(absl::NotFoundError(absl::StrCat("head ", head, " has no path ", path)),
                    reason::kPathNotFound, {{"head", head}, {"path", path}});
}
inline absl::Status ControllerNotFoundError(absl::string_view controller,
                                            absl::string_view message = {}) {
  return WithReason(absl::NotFoundError(message.empty()
                                            ? absl::StrCat("controller ", controller, " not found")
                                            : std::string(message)),
                    reason::kControllerNotFound, {{"controller", controller}});
}
inline absl::Status AgentStoppingError(absl::string_view message) {
  return WithReason(absl::UnavailableError(message), reason::kAgentStopping);
}
// INVALID_ARGUMENT for a request's field: INVALID_VALUE, or VALUE_OUT_OF_RANGE with
// the range.
inline absl::Status FieldError(absl::string_view field, absl::string_view message) {
  return WithReason(absl::InvalidArgumentError(message), reason::kInvalidValue, {{"field", field}});
}
inline absl::Status RangeError(absl::string_view field, int64_t min, int64_t max,
                               absl::string_view message) {
  return WithReason(absl::InvalidArgumentError(message), reason::kValueOutOfRange,
                    {{"field", field}, {"min", absl::StrCat(min)}, {"max", absl::StrCat(max)}});
}

}  // namespace umpath
