#pragma once

// Between the core's plain values and the API's messages, and the API's resource names.

#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/core/event_journal.h"
#include "agent/base/quote.h"
#include "agent/core/info.h"
#include "agent/kernel/connect_options.h"
#include "grpcpp/grpcpp.h"
#include "server/errors.h"
#include "umpath/v1/control.pb.h"

namespace umpath::server {

namespace v1 = ::umpath::v1;

// The longest resource name a request may carry ("heads/{head}/paths/{path}" and the
// rest): a head named from a SUBNQN (ns{nsid}.{nqn}, the NQN up to 223 bytes) fits
// with room to spare. Checked before anything else looks at the name, so a longer one
// is INVALID_ARGUMENT with a bounded message, never repeated whole.
inline constexpr size_t kMaxNameBytes = 512;
// The other strings a caller sends (attach: transport, address, service, NQN, options).
inline constexpr size_t kMaxFieldBytes = 256;

// A unary call's reactor, finished with `s`.
inline grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx, const absl::Status& s) {
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  r->Finish(ToGrpc(s));
  return r;
}

// INVALID_ARGUMENT naming the field, its length and a bounded prefix when `value` is
// longer than `max` bytes.
absl::Status CheckLength(absl::string_view field, absl::string_view value, size_t max);

// At most `max` bytes of a caller's string, C-escaped and quoted (agent/base/quote.h).
using ::umpath::QuotePrefix;

// "heads/{head}" -> head; INVALID_ARGUMENT naming the expected form otherwise.
absl::StatusOr<std::string> ParseHeadName(absl::string_view name);
// "heads/{head}/paths/{path}" -> {head, path}.
absl::StatusOr<std::pair<std::string, std::string>> ParsePathName(absl::string_view name);
// "controllers/{controller}" -> controller.
absl::StatusOr<std::string> ParseControllerName(absl::string_view name);

// An attach's fabrics options (AttachControllerRequest fields 5..13): each string's
// length first (kMaxFieldBytes), then kernel::ValidateConnectOptions for the request's
// transport, which reads the key files it names to check them. Nothing is connected.
absl::StatusOr<kernel::ConnectOptions> ConnectOptionsFromProto(const v1::AttachControllerRequest& req);

// List page tokens: the last name returned under `kind`, opaque to the client.
std::string MakeToken(absl::string_view kind, absl::string_view last);
// "" for no token; INVALID_ARGUMENT for a token this call did not make.
absl::StatusOr<std::string> ParseToken(absl::string_view kind, absl::string_view token);

std::string HeadName(absl::string_view head);
std::string PathName(absl::string_view head, absl::string_view path);
std::string ControllerName(absl::string_view controller);

v1::IoPolicy ToProto(IoPolicy p);
// INVALID_ARGUMENT for UNSPECIFIED and values this version does not know.
absl::StatusOr<IoPolicy> FromProto(v1::IoPolicy p);
v1::AnaState ToProto(nvme::AnaState s);
v1::ControllerState ToProto(ControllerState s);
v1::EventType ToProto(EventType t);
absl::StatusOr<EventType> FromProto(v1::EventType t);

void ToProto(const HeadInfo& in, v1::Head* out);
void ToProto(const ExportedDevice& in, v1::ExportHeadResponse* out);
void ToProto(const ControllerInfo& in, v1::Controller* out);
void ToProto(const Defaults& in, v1::Defaults* out);
void ToProto(const Event& in, v1::Event* out);

}  // namespace umpath::server
