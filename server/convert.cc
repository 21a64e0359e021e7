#include "server/convert.h"

#include <tuple>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/base/error_reason.h"
#include "agent/base/status_macros.h"
#include "google/protobuf/timestamp.pb.h"

namespace umpath::server {

namespace {

constexpr absl::string_view kHeads = "heads/";
constexpr absl::string_view kControllers = "controllers/";

// An id is one non-empty path segment of printable characters.
bool ValidId(absl::string_view id) {
  if (id.empty() || id.size() > 512) return false;
  for (char c : id) {
    if (c == '/' || static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return false;
  }
  return true;
}

void SetTime(int64_t wall_nanos, google::protobuf::Timestamp* t) {
  t->set_seconds(wall_nanos / 1'000'000'000);
  t->set_nanos(static_cast<int32_t>(wall_nanos % 1'000'000'000));
}

}  // namespace

absl::Status CheckLength(absl::string_view field, absl::string_view value, size_t max) {
  if (value.size() <= max) return absl::OkStatus();
  return WithReason(absl::InvalidArgumentError(absl::StrCat(field, " is ", value.size(),
                                                           " bytes, over the limit of ", max, ": ",
                                                           QuotePrefix(value))),
                    reason::kFieldTooLong, {{"field", field}, {"maxBytes", absl::StrCat(max)}});
}

absl::StatusOr<std::string> ParseHeadName(absl::string_view name) {
  RETURN_IF_ERROR(CheckLength("name", name, kMaxNameBytes));
  if (absl::StartsWith(name, kHeads)) {
    absl::string_view id = name.substr(kHeads.size());
    if (ValidId(id)) return std::string(id);
  }
  return WithReason(absl::InvalidArgumentError(absl::StrCat("malformed head name ", QuotePrefix(name),
                                                           "; expected heads/{head}")),
                    reason::kInvalidName, {{"field", "name"}, {"expected", "heads/{head}"}});
}

absl::StatusOr<std::pair<std::string, std::string>> ParsePathName(absl::string_view name) {
  RETURN_IF_ERROR(CheckLength("name", name, kMaxNameBytes));
  std::vector<absl::string_view> parts = absl::StrSplit(name, '/');
  if (parts.size() == 4 && parts[0] == "heads" && parts[2] == "paths" && ValidId(parts[1]) &&
      ValidId(parts[3])) {
    return std::make_pair(std::string(parts[1]), std::string(parts[3]));
  }
  return WithReason(absl::InvalidArgumentError(absl::StrCat("malformed path name ", QuotePrefix(name),
                                                           "; expected heads/{head}/paths/{path}")),
                    reason::kInvalidName, {{"field", "name"}, {"expected", "heads/{head}/paths/{path}"}});
}

absl::StatusOr<std::string> ParseControllerName(absl::string_view name) {
  RETURN_IF_ERROR(CheckLength("name", name, kMaxNameBytes));
  if (absl::StartsWith(name, kControllers)) {
    absl::string_view id = name.substr(kControllers.size());
    if (ValidId(id)) return std::string(id);
  }
  return WithReason(absl::InvalidArgumentError(absl::StrCat("malformed controller name ", QuotePrefix(name),
                                                           "; expected controllers/{controller}")),
                    reason::kInvalidName, {{"field", "name"}, {"expected", "controllers/{controller}"}});
}

// Page tokens are the last name returned, opaque to the client.
std::string MakeToken(absl::string_view kind, absl::string_view last) {
  return absl::WebSafeBase64Escape(absl::StrCat(kind, ":", last));
}

absl::StatusOr<std::string> ParseToken(absl::string_view kind, absl::string_view token) {
  std::string raw;
  if (token.empty()) return std::string();
  if (absl::WebSafeBase64Unescape(token, &raw) && absl::StartsWith(raw, absl::StrCat(kind, ":"))) {
    return raw.substr(kind.size() + 1);
  }
  return WithReason(absl::InvalidArgumentError("page_token was not returned by this call"),
                    reason::kInvalidPageToken);
}

absl::StatusOr<kernel::ConnectOptions> ConnectOptionsFromProto(const v1::AttachControllerRequest& req) {
  kernel::ConnectOptions o;
  if (req.has_ctrl_loss_tmo_secs()) o.ctrl_loss_tmo_secs = req.ctrl_loss_tmo_secs();
  if (req.has_reconnect_delay_secs()) o.reconnect_delay_secs = req.reconnect_delay_secs();
  if (req.has_keep_alive_tmo_secs()) o.keep_alive_tmo_secs = req.keep_alive_tmo_secs();
  for (const auto& [field, value, to] :
       {std::tuple<absl::string_view, const std::string&, std::string*>{"host_traddr", req.host_traddr(),
                                                                        &o.host_traddr},
        {"host_iface", req.host_iface(), &o.host_iface},
        {"hostnqn", req.hostnqn(), &o.host_nqn},
        {"tls_key_file", req.tls_key_file(), &o.tls_key_file},
        {"dhchap_secret_file", req.dhchap_secret_file(), &o.dhchap_secret_file},
        {"dhchap_ctrl_secret_file", req.dhchap_ctrl_secret_file(), &o.dhchap_ctrl_secret_file}}) {
    RETURN_IF_ERROR(CheckLength(field, value, kMaxFieldBytes));
    *to = value;
  }
  RETURN_IF_ERROR(kernel::ValidateConnectOptions(req.transport(), o));
  return o;
}

std::string HeadName(absl::string_view head) { return absl::StrCat(kHeads, head); }
std::string PathName(absl::string_view head, absl::string_view path) {
  return absl::StrCat(kHeads, head, "/paths/", path);
}
std::string ControllerName(absl::string_view c) { return absl::StrCat(kControllers, c); }

v1::IoPolicy ToProto(IoPolicy p) {
  switch (p) {
    case IoPolicy::kNuma: return v1::IO_POLICY_NUMA;
    case IoPolicy::kRoundRobin: return v1::IO_POLICY_ROUND_ROBIN;
    case IoPolicy::kQueueDepth: return v1::IO_POLICY_QUEUE_DEPTH;
  }
  return v1::IO_POLICY_UNSPECIFIED;
}

absl::StatusOr<IoPolicy> FromProto(v1::IoPolicy p) {
  switch (p) {
    case v1::IO_POLICY_NUMA: return IoPolicy::kNuma;
    case v1::IO_POLICY_ROUND_ROBIN: return IoPolicy::kRoundRobin;
    case v1::IO_POLICY_QUEUE_DEPTH: return IoPolicy::kQueueDepth;
    default: break;
  }
  return FieldError("io_policy",
      absl::StrCat("io_policy ", static_cast<int>(p),
                   " is not one of IO_POLICY_NUMA, IO_POLICY_ROUND_ROBIN, "
                   "IO_POLICY_QUEUE_DEPTH"));
}

v1::AnaState ToProto(nvme::AnaState s) {
  switch (s) {
    case nvme::AnaState::kOptimized: return v1::ANA_STATE_OPTIMIZED;
    case nvme::AnaState::kNonOptimized: return v1::ANA_STATE_NON_OPTIMIZED;
    case nvme::AnaState::kInaccessible: return v1::ANA_STATE_INACCESSIBLE;
    case nvme::AnaState::kPersistentLoss: return v1::ANA_STATE_PERSISTENT_LOSS;
    case nvme::AnaState::kChange: return v1::ANA_STATE_CHANGE;
  }
  return v1::ANA_STATE_UNSPECIFIED;  // reserved values
}

v1::ControllerState ToProto(ControllerState s) {
  switch (s) {
    case ControllerState::kNew: return v1::CONTROLLER_STATE_NEW;
    case ControllerState::kLive: return v1::CONTROLLER_STATE_LIVE;
    case ControllerState::kResetting: return v1::CONTROLLER_STATE_RESETTING;
    case ControllerState::kConnecting: return v1::CONTROLLER_STATE_CONNECTING;
    case ControllerState::kDeleting: return v1::CONTROLLER_STATE_DELETING;
    case ControllerState::kDead: return v1::CONTROLLER_STATE_DEAD;
  }
  return v1::CONTROLLER_STATE_UNSPECIFIED;
}

// The API's event types are the journal's, in the same order, from 1.
v1::EventType ToProto(EventType t) { return static_cast<v1::EventType>(static_cast<int>(t) + 1); }

absl::StatusOr<EventType> FromProto(v1::EventType t) {
  const int i = static_cast<int>(t) - 1;
  if (i < 0 || i >= kEventTypeCount) {
    return RangeError("types", 1, kEventTypeCount,
                      absl::StrCat("event type ", static_cast<int>(t), " is not one of 1..", kEventTypeCount));
  }
  return static_cast<EventType>(i);
}

void ToProto(const HeadInfo& in, v1::Head* out) {
  out->set_name(HeadName(in.name));
  out->set_uid(in.uid);
  out->set_subsystem_nqn(in.subsys_nqn);
  out->set_nsid(in.nsid);
  out->set_nguid(in.nguid);
  out->set_eui64(in.eui64);
  out->set_uuid(in.uuid);
  out->set_size_blocks(in.size_blocks);
  out->set_block_size(in.block_size);
  out->set_io_policy(ToProto(in.policy));
  out->set_delayed_removal_secs(in.delayed_removal_secs);
  out->set_removal_pending(in.removal_pending);
  if (in.removal_pending) SetTime(in.removal_deadline_wall_nanos, out->mutable_removal_deadline());
  if (in.created_wall_nanos) SetTime(in.created_wall_nanos, out->mutable_create_time());
  out->set_live_paths(in.live_paths);
  out->set_selectable_paths(in.selectable_paths);
  out->set_waiting_ios(in.waiting_ios);
  out->set_export_device(in.export_device);
  out->set_export_major(in.export_ids.major);
  out->set_export_minor(in.export_ids.minor);
  out->set_export_diskseq(in.export_ids.diskseq);
  out->set_export_by_id_link(in.export_ids.by_id_link);
  out->set_volume(in.volume);
  out->set_io_fail_timeout_secs(in.io_fail_timeout_secs);
  out->set_failing_fast(in.failing_fast);
  for (const PathInfo& p : in.paths) {
    v1::Path* path = out->add_paths();
    path->set_name(PathName(in.name, p.name));
    path->set_controller(ControllerName(p.controller));
    path->set_nsid(p.nsid);
    path->set_ana_group_id(p.ana_group_id);
    path->set_ana_state(ToProto(p.ana_state));
    path->set_controller_state(ToProto(p.controller_state));
    path->set_ana_pending(p.ana_pending);
    path->set_ready(p.ready);
    path->set_admin_failed(p.admin_failed);
    path->set_usable(p.usable);
    path->set_selectable(p.selectable);
    path->set_numa_node(p.numa_node);
    v1::PathCounters* c = path->mutable_counters();
    c->set_submitted(p.counters.submitted);
    c->set_completed(p.counters.completed);
    c->set_errors(p.counters.errors);
    c->set_failovers(p.counters.failovers);
    c->set_retries(p.counters.retries);
    c->set_bytes(p.counters.bytes);
    c->set_in_flight(p.counters.in_flight);
  }
}

void ToProto(const ExportedDevice& in, v1::ExportHeadResponse* out) {
  out->set_device(in.path);
  out->set_major(in.ids.major);
  out->set_minor(in.ids.minor);
  out->set_diskseq(in.ids.diskseq);
  out->set_by_id_link(in.ids.by_id_link);
}

void ToProto(const ControllerInfo& in, v1::Controller* out) {
  out->set_name(ControllerName(in.name));
  out->set_subsystem_nqn(in.subsys_nqn);
  out->set_transport(in.transport);
  out->set_address(in.address);
  out->set_state(ToProto(in.state));
  out->set_numa_node(in.numa_node);
  out->set_ana_supported(in.ana_supported);
  out->set_anagrpmax(in.anagrpmax);
  out->set_anatt_secs(in.anatt_secs);
  out->set_anatt_timer_armed(in.anatt_timer_armed);
  out->set_cqt_ms(in.cqt_ms);
  out->set_fenced_ios(in.fenced_ios);
  out->set_stray_completions(in.stray_completions);
  for (const std::string& h : in.heads) out->add_heads(HeadName(h));
}

void ToProto(const Defaults& in, v1::Defaults* out) {
  out->set_io_policy(ToProto(in.policy));
  out->set_delayed_removal_secs(in.delayed_removal_secs);
  out->set_io_fail_timeout_secs(in.io_fail_timeout_secs);
}

void ToProto(const Event& in, v1::Event* out) {
  out->set_revision(in.revision);
  SetTime(in.wall_nanos, out->mutable_time());
  out->set_type(ToProto(in.type));
  if (!in.head.empty()) out->set_head(HeadName(in.head));
  if (!in.head.empty() && !in.path.empty()) out->set_path(PathName(in.head, in.path));
  if (!in.controller.empty()) out->set_controller(ControllerName(in.controller));
  out->set_from(in.from);
  out->set_to(in.to);
  out->set_reason(in.reason);
  if (in.deadline_wall_nanos) SetTime(in.deadline_wall_nanos, out->mutable_removal_deadline());
}

}  // namespace umpath::server
