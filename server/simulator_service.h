#pragma once

// umpath.v1alpha.SimulatorControl: fault injection for the simulated backend
// (agent/sim), registered only when the agent runs one (--sim).

#include <string>
#include <vector>

#include "agent/sim/sim_backend.h"
#include "server/access.h"
#include "server/control_service.h"
#include "umpath/v1alpha/simulator.grpc.pb.h"

namespace umpath::server {

// The simulator as the service sees it; each call is handed to the control thread and
// answers through `done` (any thread, exactly once).
class SimulatorOps {
 public:
  virtual ~SimulatorOps() = default;
  virtual void Inject(const std::string& controller, const sim::SimFault& fault,
                      OpDone<absl::StatusOr<sim::SimControllerInfo>> done) = 0;
  virtual void Clear(const std::string& controller, OpDone<absl::StatusOr<sim::SimControllerInfo>> done) = 0;
  virtual void List(OpDone<absl::StatusOr<std::vector<sim::SimControllerInfo>>> done) = 0;
};

// The fault a request asks for; INVALID_ARGUMENT for a value out of range. What only
// the simulator knows (the controller, its namespaces) it checks itself.
absl::StatusOr<sim::SimFault> FaultFromProto(const umpath::v1alpha::InjectFaultRequest& req);

// Threading: handlers run on gRPC callback threads and only hand calls over.
class SimulatorService final : public umpath::v1alpha::SimulatorControl::CallbackService {
 public:
  SimulatorService(const AccessPolicy* access, SimulatorOps* ops) : access_(access), ops_(ops) {}

  using Ctx = grpc::CallbackServerContext;
  grpc::ServerUnaryReactor* ListSimulatedControllers(
      Ctx* ctx, const umpath::v1alpha::ListSimulatedControllersRequest* req,
      umpath::v1alpha::ListSimulatedControllersResponse* resp) override;
  grpc::ServerUnaryReactor* InjectFault(Ctx* ctx, const umpath::v1alpha::InjectFaultRequest* req,
                                        umpath::v1alpha::InjectFaultResponse* resp) override;
  grpc::ServerUnaryReactor* ClearFaults(Ctx* ctx, const umpath::v1alpha::ClearFaultsRequest* req,
                                        umpath::v1alpha::ClearFaultsResponse* resp) override;

 private:
  absl::Status Authorize(Ctx* ctx, Role need) const {
    return access_->Authorize(ctx->peer(), ctx->auth_context().get(), need);
  }
  const AccessPolicy* const access_;
  SimulatorOps* const ops_;
};

}  // namespace umpath::server
