#pragma once

// The API's errors: every status umpath sends carries google.rpc.Status details with
// one google.rpc.ErrorInfo (AIP-193, domain umpath.io), its reason from the
// absl::Status (agent/base/error_reason.h) or, for one made without, from its code.

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "agent/base/error_reason.h"
#include "grpcpp/support/status.h"

namespace umpath::server {

inline constexpr absl::string_view kErrorDomain = "umpath.io";

// The gRPC status of an absl::Status, with its ErrorInfo.
grpc::Status ToGrpc(const absl::Status& s);

// `s` with an ErrorInfo whose reason comes from its code, unless it carries details
// already (what gRPC itself or another service made).
grpc::Status WithErrorInfo(grpc::Status s);

// The ErrorInfo in a status received (a client's view), if it has one.
std::optional<ErrorReason> ErrorInfoOf(const grpc::Status& s, std::string* domain = nullptr);

// The reason a status without one gets: its code's name (INVALID_ARGUMENT, ...).
absl::string_view FallbackReason(absl::StatusCode code);

}  // namespace umpath::server
