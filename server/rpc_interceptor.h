#pragma once

// The interceptor every RPC of every server passes: it names the method for the
// metrics and gives the two answers gRPC leaves without a message a clear one.
//
// A caller picks the `:path`; only the methods a server serves get a label value of
// their own, every other path is "unknown" (one series, one rate-limited log line,
// however many names are tried). gRPC answers both an unknown path and a body its
// handler cannot parse (not protobuf, or a proto3 string that is not UTF-8) with
// UNIMPLEMENTED and no message; the second becomes INVALID_ARGUMENT.

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "grpcpp/support/server_interceptor.h"

namespace umpath::server {

class RpcStats;

// The label of every method a server does not serve.
inline constexpr absl::string_view kUnknownMethod = "unknown";

// The full paths ("/umpath.v1.MultipathControl/GetHead") of a service's methods, from
// the generated descriptor pool (none for a service not linked in).
std::vector<std::string> MethodPaths(absl::string_view service);

// `methods`: the full paths this server serves. `stats` may be null (nothing counted).
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeRpcInterceptorFactory(
    RpcStats* stats, const std::vector<std::string>& methods);

}  // namespace umpath::server
