#include "server/control_service.h"

#include <algorithm>
#include <optional>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "agent/base/error_reason.h"
#include "agent/base/status_macros.h"
#include "agent/core/types.h"
#include "server/convert.h"
#include "server/head_filter.h"

namespace umpath::server {

namespace {

constexpr int kDefaultPageSize = 100;
constexpr int kMaxPageSize = 1000;

absl::StatusOr<int> PageSize(int requested) {
  if (requested < 0 || requested > kMaxPageSize) {
    return RangeError("page_size", 0, kMaxPageSize,
                      absl::StrCat("page_size ", requested, " is outside 0..", kMaxPageSize));
  }
  return requested == 0 ? kDefaultPageSize : requested;
}

bool Matches(const HeadInfo& h, v1::HeadFilter f) {
  switch (f) {
    case v1::HEAD_FILTER_NO_LIVE_PATH: return h.live_paths == 0;
    case v1::HEAD_FILTER_NO_SELECTABLE_PATH: return h.selectable_paths == 0;
    case v1::HEAD_FILTER_REMOVAL_PENDING: return h.removal_pending;
    default: return true;
  }
}

// The transports the backends know (vfio: pcie; kernel: the rest).
constexpr absl::string_view kTransports[] = {"pcie", "tcp", "rdma", "fc", "loop", "kernel"};

absl::Status ValidateAttach(const v1::AttachControllerRequest& req) {
  RETURN_IF_ERROR(CheckLength("transport", req.transport(), kMaxFieldBytes));
  RETURN_IF_ERROR(CheckLength("address", req.address(), kMaxFieldBytes));
  RETURN_IF_ERROR(CheckLength("service", req.service(), kMaxFieldBytes));
  RETURN_IF_ERROR(CheckLength("subsystem_nqn", req.subsystem_nqn(), kMaxFieldBytes));
  if (req.transport().empty() || req.address().empty()) {
    return FieldError(req.transport().empty() ? "transport" : "address",
                      "attach needs a transport and an address");
  }
  if (std::find(std::begin(kTransports), std::end(kTransports), req.transport()) ==
      std::end(kTransports)) {
    return FieldError("transport", absl::StrCat(
        "transport ", QuotePrefix(req.transport()), " is not one of ",
        absl::StrJoin(kTransports, ", ")));
  }
  return absl::OkStatus();
}

}  // namespace

ControlService::ControlService(Multipath* mp, const AccessPolicy* access, ServiceOptions options,
                               SettingsListener* settings)
    : mp_(mp), access_(access), options_(std::move(options)), settings_(settings),
      hub_(mp, options_.watch),
      waits_(mp, options_.waits) {}

ControlService::~ControlService() { FinishWatchers("the agent is shutting down"); }

absl::Status ControlService::Authorize(Ctx* ctx, Role need, Caller* out) const {
  return access_->Authorize(ctx->peer(), ctx->auth_context().get(), need, out);
}

absl::Status ControlService::HeadOut(const std::string& head, v1::Head* out) const {
  ASSIGN_OR_RETURN(HeadInfo info, mp_->GetHead(head));
  ToProto(info, out);
  return absl::OkStatus();
}

absl::Status ControlService::Persist(const std::string& head) {
  if (!settings_) return absl::OkStatus();
  absl::Status saved = settings_->OnHeadSettingsChanged([&] { return mp_->GetHead(head); });
  if (saved.ok()) return saved;
  // The setting is in effect (the head runs with it, watchers saw it) and stays in the
  // store's memory, so the next save that succeeds writes it; the caller learns that
  // until then a restart loses it. UNAVAILABLE: setting it again saves again.
  return WithReason(absl::UnavailableError(absl::StrCat(
                        "the setting is in effect but was not saved (", saved.message(),
                        "): a restart before a later save succeeds loses it; set it again to retry")),
                    reason::kSettingsNotSaved);
}

ControlService::Unary* ControlService::GetAgentInfo(Ctx* ctx, const v1::GetAgentInfoRequest*,
                                                    v1::GetAgentInfoResponse* resp) {
  Caller caller;
  if (absl::Status s = Authorize(ctx, Role::kViewer, &caller); !s.ok()) return Done(ctx, s);
  v1::AgentInfo* info = resp->mutable_agent_info();
  info->set_version(options_.version);
  info->set_revision(options_.revision);
  info->set_node(options_.node);
  for (const std::string& b : options_.backends) info->add_backends(b);
  info->set_max_delayed_removal_secs(kMaxDelayedRemovalSecs);
  info->set_max_watchers(static_cast<uint32_t>(options_.watch.max_watchers));
  info->set_max_watchers_per_caller(static_cast<uint32_t>(options_.watch.max_watchers_per_caller));
  info->set_max_message_bytes(options_.max_message_bytes);
  info->set_caller_role(std::string(RoleName(caller.role)));
  info->set_incarnation(mp_->journal().incarnation());
  if (options_.exports != nullptr) {
    if (std::optional<BufferBudgetInfo> b = options_.exports->Budget()) {
      info->set_pinned_buffer_bytes(b->pinned_bytes);
      info->set_max_pinned_bytes(b->budget_bytes);
      info->set_exportable_heads(b->exportable_heads);
    }
  }
  return Done(ctx, absl::OkStatus());
}

ControlService::Unary* ControlService::ListHeads(Ctx* ctx, const v1::ListHeadsRequest* req,
                                                 v1::ListHeadsResponse* resp) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(Authorize(ctx, Role::kViewer));
    ASSIGN_OR_RETURN(int size, PageSize(req->page_size()));
    ASSIGN_OR_RETURN(std::string after, ParseToken("heads", req->page_token()));
    if (!v1::HeadFilter_IsValid(req->filter())) {
      return FieldError("filter", absl::StrCat("unknown filter ", req->filter()));
    }
    ASSIGN_OR_RETURN(const HeadFilterExpression expr, HeadFilterExpression::Parse(req->filter_expression()));
    bool more = false;
    const v1::HeadFilter filter = req->filter();
    auto keep = [filter, &expr](const HeadInfo& h) { return Matches(h, filter) && expr.Matches(h); };
    for (const HeadInfo& h : mp_->ListHeadsPage(after, static_cast<size_t>(size), keep, &more)) {
      ToProto(h, resp->add_heads());
    }
    if (more) resp->set_next_page_token(MakeToken("heads", resp->heads(size - 1).name().substr(6)));
    return absl::OkStatus();
  }();
  return Done(ctx, s);
}

ControlService::Unary* ControlService::GetHead(Ctx* ctx, const v1::GetHeadRequest* req,
                                               v1::GetHeadResponse* resp) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(Authorize(ctx, Role::kViewer));
    ASSIGN_OR_RETURN(std::string head, ParseHeadName(req->name()));
    return HeadOut(head, resp->mutable_head());
  }();
  return Done(ctx, s);
}

ControlService::Unary* ControlService::WaitHead(Ctx* ctx, const v1::WaitHeadRequest* req,
                                                v1::WaitHeadResponse* resp) {
  Caller caller;
  WaitTarget t;
  std::chrono::steady_clock::time_point deadline;
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(Authorize(ctx, Role::kViewer, &caller));
    if (req->name().empty() == req->filter_expression().empty()) {
      return FieldError("name", "name a head (heads/{head}) or give a filter_expression, not both");
    }
    if (!req->name().empty()) {
      ASSIGN_OR_RETURN(t.head, ParseHeadName(req->name()));
    } else {
      ASSIGN_OR_RETURN(t.filter, HeadFilterExpression::Parse(req->filter_expression()));
      t.filter_text = req->filter_expression().substr(0, 128);
    }
    if (req->condition() == v1::HEAD_CONDITION_UNSPECIFIED || !v1::HeadCondition_IsValid(req->condition())) {
      return FieldError("condition", "condition is HEAD_CONDITION_EXISTS, _SELECTABLE, _EXPORTED or _GONE");
    }
    t.condition = req->condition();
    if (req->timeout_secs() > 3600) {
      return RangeError("timeout_secs", 0, 3600,
                        absl::StrCat("timeout_secs is at most 3600, not ", req->timeout_secs()));
    }
    // The call's own deadline, a little early, so the answer says where the head was
    // before gRPC ends the call.
    const auto now_wall = std::chrono::system_clock::now();
    const auto now = std::chrono::steady_clock::now();
    const bool call_deadline = ctx->deadline() != std::chrono::system_clock::time_point::max();
    if (req->timeout_secs() == 0 && !call_deadline) {
      return FieldError("timeout_secs", "a wait has an end: set timeout_secs or a deadline on the call");
    }
    deadline = std::chrono::steady_clock::time_point::max();
    if (req->timeout_secs() != 0) deadline = now + std::chrono::seconds(req->timeout_secs());
    if (call_deadline) {
      const auto left = std::chrono::duration_cast<std::chrono::steady_clock::duration>(ctx->deadline() - now_wall);
      const auto margin = std::min<std::chrono::steady_clock::duration>(left / 10, std::chrono::milliseconds(500));
      deadline = std::min(deadline, now + std::max(left - margin, std::chrono::steady_clock::duration::zero()));
    }
    return absl::OkStatus();
  }();
  if (!s.ok()) return Done(ctx, s);
  return waits_.Open(ctx, caller, std::move(t), deadline, resp);
}

ControlService::Unary* ControlService::ListControllers(Ctx* ctx,
                                                       const v1::ListControllersRequest* req,
                                                       v1::ListControllersResponse* resp) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(Authorize(ctx, Role::kViewer));
    ASSIGN_OR_RETURN(int size, PageSize(req->page_size()));
    ASSIGN_OR_RETURN(std::string after, ParseToken("controllers", req->page_token()));
    std::vector<ControllerInfo> all = mp_->ListControllers();
    std::sort(all.begin(), all.end(),
              [](const ControllerInfo& a, const ControllerInfo& b) { return a.name < b.name; });
    std::string last;
    for (const ControllerInfo& c : all) {
      if (!after.empty() && c.name <= after) continue;
      if (resp->controllers_size() == size) {
        resp->set_next_page_token(MakeToken("controllers", last));
        break;
      }
      ToProto(c, resp->add_controllers());
      last = c.name;
    }
    return absl::OkStatus();
  }();
  return Done(ctx, s);
}

ControlService::Unary* ControlService::GetController(Ctx* ctx,
                                                     const v1::GetControllerRequest* req,
                                                     v1::GetControllerResponse* resp) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(Authorize(ctx, Role::kViewer));
    ASSIGN_OR_RETURN(std::string name, ParseControllerName(req->name()));
    ASSIGN_OR_RETURN(ControllerInfo info, mp_->GetController(name));
    ToProto(info, resp->mutable_controller());
    return absl::OkStatus();
  }();
  return Done(ctx, s);
}

ControlService::Unary* ControlService::GetDefaults(Ctx* ctx, const v1::GetDefaultsRequest*,
                                                   v1::GetDefaultsResponse* resp) {
  absl::Status s = Authorize(ctx, Role::kViewer);
  if (s.ok()) ToProto(mp_->GetDefaults(), resp->mutable_defaults());
  return Done(ctx, s);
}

ControlService::Unary* ControlService::SetDelayedRemoval(Ctx* ctx,
                                                         const v1::SetDelayedRemovalRequest* req,
                                                         v1::SetDelayedRemovalResponse* resp) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(Authorize(ctx, Role::kAdmin));
    ASSIGN_OR_RETURN(std::string head, ParseHeadName(req->name()));
    std::optional<HeadInfo> removed;
    RETURN_IF_ERROR(mp_->SetDelayedRemoval(head, req->delayed_removal_secs(), &removed));
    if (!removed) {
      RETURN_IF_ERROR(Persist(head));
      return HeadOut(head, resp->mutable_head());
    }
    // The value ended a pending removal (0, or a deadline already past): the head went
    // with this call, which did what it was asked. The kept settings take the value, so
    // a head that comes back finds what was set last, and the answer is the head as it went.
    if (settings_ != nullptr) {
      HeadSettings patch;
      patch.delayed_removal_secs = static_cast<uint32_t>(req->delayed_removal_secs());
      if (absl::Status saved = settings_->Merge(head, patch); !saved.ok()) {
        return WithReason(absl::UnavailableError(absl::StrCat(
                              "the head was removed, but its setting was not saved (", saved.message(), ")")),
                          reason::kSettingsNotSaved);
      }
    }
    ToProto(*removed, resp->mutable_head());
    return absl::OkStatus();
  }();
  return Done(ctx, s);
}

ControlService::Unary* ControlService::SetDefaultDelayedRemoval(
    Ctx* ctx, const v1::SetDefaultDelayedRemovalRequest* req,
    v1::SetDefaultDelayedRemovalResponse* resp) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(Authorize(ctx, Role::kAdmin));
    RETURN_IF_ERROR(mp_->SetDefaultDelayedRemoval(req->delayed_removal_secs()));
    ToProto(mp_->GetDefaults(), resp->mutable_defaults());
    return absl::OkStatus();
  }();
  return Done(ctx, s);
}

ControlService::Unary* ControlService::SetIoFailTimeout(Ctx* ctx, const v1::SetIoFailTimeoutRequest* req,
                                                        v1::SetIoFailTimeoutResponse* resp) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(Authorize(ctx, Role::kAdmin));
    ASSIGN_OR_RETURN(std::string head, ParseHeadName(req->name()));
    RETURN_IF_ERROR(mp_->SetIoFailTimeout(head, req->io_fail_timeout_secs()));
    RETURN_IF_ERROR(Persist(head));
    return HeadOut(head, resp->mutable_head());
  }();
  return Done(ctx, s);
}

ControlService::Unary* ControlService::SetDefaultIoFailTimeout(
    Ctx* ctx, const v1::SetDefaultIoFailTimeoutRequest* req, v1::SetDefaultIoFailTimeoutResponse* resp) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(Authorize(ctx, Role::kAdmin));
    RETURN_IF_ERROR(mp_->SetDefaultIoFailTimeout(req->io_fail_timeout_secs()));
    ToProto(mp_->GetDefaults(), resp->mutable_defaults());
    return absl::OkStatus();
  }();
  return Done(ctx, s);
}

ControlService::Unary* ControlService::SetIoPolicy(Ctx* ctx, const v1::SetIoPolicyRequest* req,
                                                   v1::SetIoPolicyResponse* resp) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(Authorize(ctx, Role::kAdmin));
    ASSIGN_OR_RETURN(std::string head, ParseHeadName(req->name()));
    ASSIGN_OR_RETURN(IoPolicy policy, FromProto(req->io_policy()));
    RETURN_IF_ERROR(mp_->SetPolicy(head, IoPolicyName(policy)));
    RETURN_IF_ERROR(Persist(head));
    return HeadOut(head, resp->mutable_head());
  }();
  return Done(ctx, s);
}

ControlService::Unary* ControlService::SetDefaultIoPolicy(Ctx* ctx,
                                                          const v1::SetDefaultIoPolicyRequest* req,
                                                          v1::SetDefaultIoPolicyResponse* resp) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(Authorize(ctx, Role::kAdmin));
    ASSIGN_OR_RETURN(IoPolicy policy, FromProto(req->io_policy()));
    RETURN_IF_ERROR(mp_->SetDefaultPolicy(IoPolicyName(policy)));
    ToProto(mp_->GetDefaults(), resp->mutable_defaults());
    return absl::OkStatus();
  }();
  return Done(ctx, s);
}

namespace {

// heads/{head}/settings -> {head}.
absl::StatusOr<std::string> ParseSettingsName(absl::string_view name) {
  RETURN_IF_ERROR(CheckLength("name", name, kMaxNameBytes));
  if (absl::ConsumeSuffix(&name, "/settings")) {
    if (absl::StatusOr<std::string> head = ParseHeadName(name); head.ok()) return head;
  }
  return WithReason(absl::InvalidArgumentError(absl::StrCat(
                        "malformed settings name ", QuotePrefix(name), "; expected heads/{head}/settings")),
                    reason::kInvalidName, {{"field", "name"}, {"expected", "heads/{head}/settings"}});
}

void SettingsToProto(const std::string& head, const HeadSettings& in, bool present, v1::HeadSettings* out) {
  out->set_name(absl::StrCat("heads/", head, "/settings"));
  if (in.delayed_removal_secs) out->set_delayed_removal_secs(*in.delayed_removal_secs);
  if (in.policy) out->set_io_policy(ToProto(*in.policy));
  if (in.io_fail_timeout_secs) out->set_io_fail_timeout_secs(*in.io_fail_timeout_secs);
  if (in.export_wanted) out->set_export_(*in.export_wanted);
  if (in.volume) out->set_volume(*in.volume);
  out->set_head_present(present);
}

absl::StatusOr<HeadSettings> SettingsFromProto(const v1::HeadSettings& in) {
  HeadSettings out;
  if (in.has_delayed_removal_secs()) {
    RETURN_IF_ERROR(ValidateDelayedRemovalSecs(in.delayed_removal_secs()));
    out.delayed_removal_secs = in.delayed_removal_secs();
  }
  if (in.has_io_fail_timeout_secs()) {
    RETURN_IF_ERROR(ValidateIoFailTimeoutSecs(in.io_fail_timeout_secs()));
    out.io_fail_timeout_secs = in.io_fail_timeout_secs();
  }
  if (in.has_io_policy()) {
    ASSIGN_OR_RETURN(IoPolicy p, FromProto(in.io_policy()));
    out.policy = p;
  }
  if (in.has_export_()) out.export_wanted = in.export_();
  if (in.has_volume()) {
    RETURN_IF_ERROR(ValidateVolume(in.volume()));
    out.volume = in.volume();
  }
  if (!out.delayed_removal_secs && !out.io_fail_timeout_secs && !out.policy && !out.export_wanted &&
      !out.volume) {
    return FieldError("settings", "nothing to update: set delayed_removal_secs, io_policy, "
                                  "io_fail_timeout_secs, export or volume");
  }
  return out;
}

}  // namespace

absl::StatusOr<HeadSettings> ControlService::KeptSettings(const std::string& head) const {
  for (auto& [name, kept] : settings_->Kept()) {
    if (name == head) return kept;
  }
  return WithReason(absl::NotFoundError(absl::StrCat("no settings kept for heads/", head)),
                    reason::kSettingsNotFound, {{"head", head}});
}

ControlService::Unary* ControlService::UpdateHeadSettings(Ctx* ctx, const v1::UpdateHeadSettingsRequest* req,
                                                          v1::UpdateHeadSettingsResponse* resp) {
  std::string head;
  bool export_now = false;
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(Authorize(ctx, Role::kAdmin));
    ASSIGN_OR_RETURN(head, ParseSettingsName(req->settings().name()));
    ASSIGN_OR_RETURN(const HeadSettings patch, SettingsFromProto(req->settings()));
    if (settings_ == nullptr) {
      return WithReason(
          absl::FailedPreconditionError("this agent keeps no head settings (it was started without a settings file)"),
          reason::kBackendMissing, {{"backend", "settings_file"}});
    }
    if (patch.export_wanted.value_or(false) && options_.exports == nullptr) {
      return WithReason(absl::FailedPreconditionError(absl::StrCat(
                            "export needs the ublk frontend, and this agent has none (",
                            NoExportReason(), "); nothing was kept")),
                        reason::kBackendMissing, {{"backend", "ublk"}, {"why", NoExportReason()}});
    }
    if (!req->allow_missing() && absl::IsNotFound(mp_->GetHead(head).status())) {
      return WithReason(absl::NotFoundError(absl::StrCat(
                            "head heads/", head,
                            " not found; with allow_missing the settings are kept for when it appears")),
                        reason::kHeadNotFound, {{"head", head}});
    }
    // Kept first, then applied: a head that appears meanwhile takes them from the store
    // as it is created, and one that was there takes them here.
    if (absl::Status saved = settings_->Merge(head, patch); !saved.ok()) {
      return WithReason(absl::UnavailableError(absl::StrCat("the settings were not saved (", saved.message(),
                                                             "); nothing changed")),
                        reason::kSettingsNotSaved);
    }
    bool present = mp_->GetHead(head).ok();
    if (present) {
      absl::Status applied = [&]() -> absl::Status {
        if (patch.delayed_removal_secs) RETURN_IF_ERROR(mp_->SetDelayedRemoval(head, *patch.delayed_removal_secs));
        if (patch.io_fail_timeout_secs) RETURN_IF_ERROR(mp_->SetIoFailTimeout(head, *patch.io_fail_timeout_secs));
        if (patch.policy) RETURN_IF_ERROR(mp_->SetPolicy(head, IoPolicyName(*patch.policy)));
        if (patch.volume) RETURN_IF_ERROR(mp_->SetVolume(head, *patch.volume));
        return absl::OkStatus();
      }();
      if (absl::IsNotFound(applied)) present = false;  // removed meanwhile: kept for the next
      else RETURN_IF_ERROR(applied);
    }
    ASSIGN_OR_RETURN(const HeadSettings kept, KeptSettings(head));
    SettingsToProto(head, kept, present, resp->mutable_settings());
    export_now = present && patch.export_wanted.value_or(false);
    return absl::OkStatus();
  }();
  if (!s.ok() || !export_now) return Done(ctx, s);
  // As ExportHead: the answer once the device is there (or why it is not).
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  options_.exports->Export(head, [r](absl::StatusOr<ExportedDevice> device) { r->Finish(ToGrpc(device.status())); });
  return r;
}

ControlService::Unary* ControlService::ListHeadSettings(Ctx* ctx, const v1::ListHeadSettingsRequest* req,
                                                        v1::ListHeadSettingsResponse* resp) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(Authorize(ctx, Role::kViewer));
    ASSIGN_OR_RETURN(int size, PageSize(req->page_size()));
    ASSIGN_OR_RETURN(std::string after, ParseToken("settings", req->page_token()));
    if (settings_ == nullptr) return absl::OkStatus();
    for (const auto& [head, kept] : settings_->Kept()) {
      if (!after.empty() && head <= after) continue;
      if (resp->settings_size() == size) {
        resp->set_next_page_token(MakeToken("settings", after));
        break;
      }
      SettingsToProto(head, kept, mp_->GetHead(head).ok(), resp->add_settings());
      after = head;
    }
    return absl::OkStatus();
  }();
  return Done(ctx, s);
}

ControlService::Unary* ControlService::DeleteHeadSettings(Ctx* ctx, const v1::DeleteHeadSettingsRequest* req,
                                                          v1::DeleteHeadSettingsResponse*) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(Authorize(ctx, Role::kAdmin));
    ASSIGN_OR_RETURN(std::string head, ParseSettingsName(req->name()));
    if (settings_ == nullptr) return absl::OkStatus();  // nothing kept, nothing to forget
    if (absl::Status saved = settings_->Forget(head); !saved.ok()) {
      return WithReason(absl::UnavailableError(absl::StrCat(
                            "not forgotten: the settings file was not saved (", saved.message(), ")")),
                        reason::kSettingsNotSaved);
    }
    return absl::OkStatus();
  }();
  return Done(ctx, s);
}

ControlService::Unary* ControlService::FailPath(Ctx* ctx, const v1::FailPathRequest* req,
                                                v1::FailPathResponse* resp) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(Authorize(ctx, Role::kAdmin));
    ASSIGN_OR_RETURN(auto names, ParsePathName(req->name()));
    if (req->reason().size() > 1024) {
      return WithReason(absl::InvalidArgumentError("reason is longer than 1024 bytes"), reason::kFieldTooLong,
                        {{"field", "reason"}, {"maxBytes", "1024"}});
    }
    RETURN_IF_ERROR(mp_->FailPath(names.first, names.second, req->reason()));
    return HeadOut(names.first, resp->mutable_head());
  }();
  return Done(ctx, s);
}

ControlService::Unary* ControlService::ReinstatePath(Ctx* ctx, const v1::ReinstatePathRequest* req,
                                                     v1::ReinstatePathResponse* resp) {
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(Authorize(ctx, Role::kAdmin));
    ASSIGN_OR_RETURN(auto names, ParsePathName(req->name()));
    RETURN_IF_ERROR(mp_->ReinstatePath(names.first, names.second));
    return HeadOut(names.first, resp->mutable_head());
  }();
  return Done(ctx, s);
}

// Attach, detach and reset go to the backends (vfio here; kernel/fabrics: issue 7);
// export needs ublk (issue 6). Without one, say which.
ControlService::Unary* ControlService::AttachController(Ctx* ctx,
                                                        const v1::AttachControllerRequest* req,
                                                        v1::AttachControllerResponse* resp) {
  ControllerOps::AttachSpec spec{req->transport(), req->address(), req->service(), req->subsystem_nqn(), {}};
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(Authorize(ctx, Role::kAdmin));
    // The arguments first (AIP-193): a malformed request is INVALID_ARGUMENT whatever
    // this agent's backends.
    RETURN_IF_ERROR(ValidateAttach(*req));
    ASSIGN_OR_RETURN(spec.fabrics, ConnectOptionsFromProto(*req));
    if (!options_.controllers) {
      return WithReason(absl::FailedPreconditionError(absl::StrCat(
                            "attaching a controller (transport \"", req->transport(),
                            "\") needs the vfio or kernel backend, and this agent has none")),
                        reason::kBackendMissing, {{"backend", "vfio,kernel"}});
    }
    return absl::OkStatus();
  }();
  if (!s.ok()) return Done(ctx, s);
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  options_.controllers->Attach(
      spec,
      [this, r, resp](absl::StatusOr<std::string> name) {
        absl::Status st = name.status();
        if (st.ok()) {
          absl::StatusOr<ControllerInfo> info = mp_->GetController(*name);
          if (info.ok()) ToProto(*info, resp->mutable_controller());
          st = info.status();
        }
        r->Finish(ToGrpc(st));
      });
  return r;
}

// An existing controller named in a request, for an admin caller, with a backend to act.
absl::StatusOr<std::string> ControlService::BackendController(Ctx* ctx, const std::string& name,
                                                              absl::string_view verb) const {
  RETURN_IF_ERROR(Authorize(ctx, Role::kAdmin));
  ASSIGN_OR_RETURN(std::string id, ParseControllerName(name));
  RETURN_IF_ERROR(mp_->GetController(id).status());
  if (!options_.controllers) {
    return WithReason(absl::FailedPreconditionError(absl::StrCat(
                          verb, " controller ", id, " needs its backend (vfio or kernel), and this agent has none")),
                      reason::kBackendMissing, {{"backend", "vfio,kernel"}});
  }
  return id;
}

std::string ControlService::NoExportReason() const {
  return options_.no_export_reason.empty() ? "not configured" : options_.no_export_reason;
}

ControlService::Unary* ControlService::DetachController(Ctx* ctx,
                                                        const v1::DetachControllerRequest* req,
                                                        v1::DetachControllerResponse*) {
  absl::StatusOr<std::string> name = BackendController(ctx, req->name(), "detaching");
  // Detaching what is not attached is done already (CSI: removing what is gone is OK);
  // the backend still hears of it when it remembers the controller for the next start.
  if (absl::IsNotFound(name.status()) && options_.controllers) {
    name = ParseControllerName(req->name());
  } else if (absl::IsNotFound(name.status())) {
    return Done(ctx, absl::OkStatus());
  }
  if (!name.ok()) return Done(ctx, name.status());
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  options_.controllers->Detach(*name, [r](absl::Status st) {
    r->Finish(ToGrpc(absl::IsNotFound(st) ? absl::OkStatus() : st));
  });
  return r;
}

ControlService::Unary* ControlService::ResetController(Ctx* ctx,
                                                       const v1::ResetControllerRequest* req,
                                                       v1::ResetControllerResponse* resp) {
  absl::StatusOr<std::string> name = BackendController(ctx, req->name(), "resetting");
  if (!name.ok()) return Done(ctx, name.status());
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  options_.controllers->Reset(*name, [this, r, resp, id = *name](absl::Status st) {
    if (st.ok()) {
      absl::StatusOr<ControllerInfo> info = mp_->GetController(id);
      if (info.ok()) ToProto(*info, resp->mutable_controller());
      st = info.status();
    }
    r->Finish(ToGrpc(st));
  });
  return r;
}

absl::StatusOr<std::string> ControlService::ExportTarget(Ctx* ctx, const std::string& name,
                                                         absl::string_view verb) const {
  RETURN_IF_ERROR(Authorize(ctx, Role::kAdmin));
  ASSIGN_OR_RETURN(std::string head, ParseHeadName(name));
  if (options_.exports == nullptr) {
    RETURN_IF_ERROR(mp_->GetHead(head).status());
    return WithReason(absl::FailedPreconditionError(absl::StrCat(
                          verb, " a head needs the ublk frontend, and this agent has none (",
                          NoExportReason(), ")")),
                      reason::kBackendMissing, {{"backend", "ublk"}, {"why", NoExportReason()}});
  }
  return head;
}

ControlService::Unary* ControlService::ExportHead(Ctx* ctx, const v1::ExportHeadRequest* req,
                                                  v1::ExportHeadResponse* resp) {
  absl::StatusOr<std::string> head = ExportTarget(ctx, req->name(), "exporting");
  if (!head.ok()) return Done(ctx, head.status());
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  options_.exports->Export(*head, [r, resp](absl::StatusOr<ExportedDevice> device) {
    if (device.ok()) ToProto(*device, resp);
    r->Finish(ToGrpc(device.status()));
  });
  return r;
}

ControlService::Unary* ControlService::UnexportHead(Ctx* ctx, const v1::UnexportHeadRequest* req,
                                                    v1::UnexportHeadResponse*) {
  absl::StatusOr<std::string> head = ExportTarget(ctx, req->name(), "unexporting");
  // Unexporting what is not exported (a head that is gone, an agent without ublk, whose
  // heads are never exported) is done already: CSI's unstage may come twice.
  if (absl::IsNotFound(head.status()) || ReasonIs(head.status(), reason::kBackendMissing)) {
    return Done(ctx, absl::OkStatus());
  }
  if (!head.ok()) return Done(ctx, head.status());
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  options_.exports->Unexport(*head, [r](absl::Status st) {
    const bool done = absl::IsNotFound(st) || ReasonIs(st, reason::kBackendMissing);
    r->Finish(ToGrpc(done ? absl::OkStatus() : st));
  });
  return r;
}

ControlService::Unary* ControlService::StopAgent(Ctx* ctx, const v1::StopAgentRequest* req,
                                                 v1::StopAgentResponse*) {
  Caller caller;
  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(Authorize(ctx, Role::kAdmin, &caller));
    if (req->mode() != v1::STOP_MODE_HAND_OVER && req->mode() != v1::STOP_MODE_REMOVE) {
      return FieldError("mode",
          absl::StrCat("mode must be STOP_MODE_HAND_OVER or STOP_MODE_REMOVE, not ",
                       v1::StopMode_IsValid(req->mode()) ? v1::StopMode_Name(req->mode())
                                                         : absl::StrCat(req->mode())));
    }
    if (options_.stop == nullptr) {
      return WithReason(absl::FailedPreconditionError("this agent stops by signal only (SIGTERM)"),
                        reason::kStopBySignalOnly);
    }
    return absl::OkStatus();
  }();
  if (!s.ok()) return Done(ctx, s);
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  options_.stop->Stop({req->mode() == v1::STOP_MODE_REMOVE, req->force(), caller.identity},
                      [r](absl::Status st) { r->Finish(ToGrpc(st)); });
  return r;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* ControlService::WatchEvents(
    Ctx* ctx, const grpc::ByteBuffer* raw) {
  // A reactor that only answers the error.
  class Refused final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
   public:
    explicit Refused(const absl::Status& s) { Finish(ToGrpc(s)); }
    void OnDone() override { delete this; }
  };
  Caller caller;
  if (absl::Status s = Authorize(ctx, Role::kViewer, &caller); !s.ok()) return new Refused(s);
  // What gRPC does for a typed method; its failure would be UNIMPLEMENTED without a message.
  grpc::ByteBuffer body(*raw);  // shares the bytes; parsing consumes its copy
  v1::WatchEventsRequest req;
  if (!grpc::SerializationTraits<v1::WatchEventsRequest>::Deserialize(&body, &req).ok()) {
    return new Refused(WithReason(
        absl::InvalidArgumentError("the request is not a valid WatchEvents request (not protobuf, or a "
                                   "string field that is not UTF-8)"),
        reason::kInvalidRequest, {{"method", "WatchEvents"}}));
  }
  return hub_.Open(ctx, caller, req);
}

}  // namespace umpath::server
