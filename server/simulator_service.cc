#include "server/simulator_service.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/base/status_macros.h"
#include "server/convert.h"

namespace umpath::server {

namespace v1alpha = ::umpath::v1alpha;

namespace {

// "sim-0-1" or, as umpath.v1 names it, "controllers/sim-0-1".
absl::StatusOr<std::string> ControllerOf(const std::string& name) {
  RETURN_IF_ERROR(CheckLength("controller", name, kMaxNameBytes));
  if (absl::StartsWith(name, "controllers/")) return ParseControllerName(name);
  if (name.empty()) return absl::InvalidArgumentError("controller is empty (e.g. \"sim-0-1\")");
  return name;
}

absl::StatusOr<nvme::AnaState> AnaFromProto(v1::AnaState s) {
  switch (s) {
    case v1::ANA_STATE_OPTIMIZED: return nvme::AnaState::kOptimized;
    case v1::ANA_STATE_NON_OPTIMIZED: return nvme::AnaState::kNonOptimized;
    case v1::ANA_STATE_INACCESSIBLE: return nvme::AnaState::kInaccessible;
    case v1::ANA_STATE_PERSISTENT_LOSS: return nvme::AnaState::kPersistentLoss;
    case v1::ANA_STATE_CHANGE: return nvme::AnaState::kChange;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "ana_change.state ", static_cast<int>(s), " is not an ANA state (OPTIMIZED, NON_OPTIMIZED, "
          "INACCESSIBLE, PERSISTENT_LOSS or CHANGE)"));
  }
}

void ToProto(const sim::SimControllerInfo& in, v1alpha::SimulatedController* out) {
  out->set_name(in.name);
  out->set_subsystem_nqn(in.subsys_nqn);
  out->set_attached(in.attached);
  for (nvme::AnaState s : in.ana) out->add_ana_states(server::ToProto(s));
  if (in.error_status != 0 && in.errors_left != 0) {
    const nvme::Status st = nvme::Status::FromCompletionField(in.error_status);
    v1alpha::PathError* pe = out->mutable_path_error();
    pe->set_sct(st.sct());
    pe->set_sc(st.sc());
    pe->set_dnr(st.dnr());
    pe->set_count(in.errors_left < 0 ? 0 : static_cast<uint32_t>(in.errors_left));
  }
  out->set_errors_injected(in.errors_injected);
  out->set_stuck(in.stuck);
  out->set_latency_us(static_cast<uint32_t>(in.latency_ns / 1000));
  for (uint32_t nsid : in.detached_nsids) out->add_detached_nsids(nsid);
}

}  // namespace

absl::StatusOr<sim::SimFault> FaultFromProto(const v1alpha::InjectFaultRequest& req) {
  using K = sim::SimFault::Kind;
  sim::SimFault f;
  switch (req.fault_case()) {
    case v1alpha::InjectFaultRequest::kPathError: {
      const v1alpha::PathError& pe = req.path_error();
      if (pe.sct() > 7 || pe.sc() > 255) {
        return absl::InvalidArgumentError(absl::StrCat("path_error: sct is 0..7 and sc 0..255, not ",
                                                       pe.sct(), " and ", pe.sc()));
      }
      if (pe.sct() == 0 && pe.sc() == 0) {
        return absl::InvalidArgumentError("path_error: sct 0 sc 0 is success; give an error's status");
      }
      if (pe.count() > 1'000'000'000) return absl::InvalidArgumentError("path_error: count is at most 1e9");
      f.kind = K::kPathError;
      f.status_code = static_cast<uint16_t>(pe.sct() << 8 | pe.sc());
      f.dnr = pe.dnr();
      f.count = pe.count();
      f.nsid = pe.nsid();
      return f;
    }
    case v1alpha::InjectFaultRequest::kAnaChange: {
      f.kind = K::kAnaState;
      f.ana_group = req.ana_change().group();
      ASSIGN_OR_RETURN(f.ana_state, AnaFromProto(req.ana_change().state()));
      return f;
    }
    case v1alpha::InjectFaultRequest::kLoss:
      f.kind = K::kLoss;
      return f;
    case v1alpha::InjectFaultRequest::kControllerReturn:
      f.kind = K::kReturn;
      return f;
    case v1alpha::InjectFaultRequest::kStuck:
      f.kind = K::kStuck;
      return f;
    case v1alpha::InjectFaultRequest::kLatency:
      if (req.latency().latency_us() > 10'000'000) {
        return absl::InvalidArgumentError("latency.latency_us is 0..10000000 (10 s)");
      }
      f.kind = K::kLatency;
      f.latency_ns = int64_t{req.latency().latency_us()} * 1000;
      return f;
    case v1alpha::InjectFaultRequest::kNamespaceLoss:
      f.kind = K::kNamespaceLoss;
      f.nsid = req.namespace_loss().nsid();
      return f;
    case v1alpha::InjectFaultRequest::kNamespaceReturn:
      f.kind = K::kNamespaceReturn;
      f.nsid = req.namespace_return().nsid();
      return f;
    case v1alpha::InjectFaultRequest::FAULT_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(
      "no fault: set one of path_error, ana_change, loss, controller_return, stuck, latency, "
      "namespace_loss, namespace_return");
}

grpc::ServerUnaryReactor* SimulatorService::ListSimulatedControllers(
    Ctx* ctx, const v1alpha::ListSimulatedControllersRequest*, v1alpha::ListSimulatedControllersResponse* resp) {
  if (absl::Status s = Authorize(ctx, Role::kViewer); !s.ok()) return Done(ctx, s);
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  ops_->List([r, resp](absl::StatusOr<std::vector<sim::SimControllerInfo>> all) {
    if (all.ok()) {
      for (const sim::SimControllerInfo& c : *all) ToProto(c, resp->add_controllers());
    }
    r->Finish(ToGrpc(all.status()));
  });
  return r;
}

grpc::ServerUnaryReactor* SimulatorService::InjectFault(Ctx* ctx, const v1alpha::InjectFaultRequest* req,
                                                        v1alpha::InjectFaultResponse* resp) {
  absl::StatusOr<sim::SimFault> fault = [&]() -> absl::StatusOr<sim::SimFault> {
    RETURN_IF_ERROR(Authorize(ctx, Role::kAdmin));
    RETURN_IF_ERROR(ControllerOf(req->controller()).status());
    return FaultFromProto(*req);
  }();
  if (!fault.ok()) return Done(ctx, fault.status());
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  ops_->Inject(*ControllerOf(req->controller()), *fault, [r, resp](absl::StatusOr<sim::SimControllerInfo> c) {
    if (c.ok()) ToProto(*c, resp->mutable_controller());
    r->Finish(ToGrpc(c.status()));
  });
  return r;
}

grpc::ServerUnaryReactor* SimulatorService::ClearFaults(Ctx* ctx, const v1alpha::ClearFaultsRequest* req,
                                                        v1alpha::ClearFaultsResponse* resp) {
  absl::StatusOr<std::string> name = [&]() -> absl::StatusOr<std::string> {
    RETURN_IF_ERROR(Authorize(ctx, Role::kAdmin));
    return ControllerOf(req->controller());
  }();
  if (!name.ok()) return Done(ctx, name.status());
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  ops_->Clear(*name, [r, resp](absl::StatusOr<sim::SimControllerInfo> c) {
    if (c.ok()) ToProto(*c, resp->mutable_controller());
    r->Finish(ToGrpc(c.status()));
  });
  return r;
}

}  // namespace umpath::server
