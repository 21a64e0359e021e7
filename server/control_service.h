#pragma once

// umpath.v1.MultipathControl over the core's control API.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/functional/any_invocable.h"
#include "agent/base/build_info.h"
#include "agent/core/multipath.h"
#include "agent/kernel/connect_options.h"
#include "server/access.h"
#include "server/head_waits.h"
#include "server/watch.h"
#include "umpath/v1/control.grpc.pb.h"

namespace umpath::server {

// The backends' side of attach, detach and reset (vfio: PCI addresses), and the block
// device frontend's export. Asynchronous: a handler hands the call over and finishes
// its reactor when `done` runs (on any thread, exactly once), so no gRPC thread waits
// on a reset, a connect or a block device.
template <typename T>
using OpDone = absl::AnyInvocable<void(T) &&>;

class ControllerOps {
 public:
  virtual ~ControllerOps() = default;
  struct AttachSpec {
    std::string transport, address, service, subsystem_nqn;
    kernel::ConnectOptions fabrics;  // validated; key files by path only
  };
  // The attached controller's name.
  virtual void Attach(const AttachSpec& spec, OpDone<absl::StatusOr<std::string>> done) = 0;
  virtual void Detach(const std::string& controller, OpDone<absl::Status> done) = 0;
  virtual void Reset(const std::string& controller, OpDone<absl::Status> done) = 0;
};

// The block-device frontend (ublk), as the service sees it.
class ExportOps {
 public:
  virtual ~ExportOps() = default;
  // The device (its path, dev_t, diskseq and by-id link); idempotent.
  virtual void Export(const std::string& head, OpDone<absl::StatusOr<ExportedDevice>> done) = 0;
  virtual void Unexport(const std::string& head, OpDone<absl::Status> done) = 0;
  // The I/O buffers' budget; none while there are no block devices. Any thread.
  virtual std::optional<BufferBudgetInfo> Budget() { return std::nullopt; }
};

// The agent's own stop (StopAgent), as the service sees it.
class StopOps {
 public:
  virtual ~StopOps() = default;
  struct Request {
    bool remove = false;  // remove the block devices, not hand them over
    bool force = false;   // even those in use
    std::string caller;   // who asked, for the log
  };
  // OK once the stop is decided: the agent stops right after this answer. FAILED_
  // PRECONDITION (nothing changed) where the stop would remove a block device in use and
  // is not forced; UNAVAILABLE where the agent is stopping already.
  virtual void Stop(const Request& request, OpDone<absl::Status> done) = 0;
};

struct ServiceOptions {
  std::string version = kBuildVersion;
  std::string revision = kBuildRevision;  // the commit built from
  std::string node;
  std::vector<std::string> backends;  // present and usable: "vfio", "kernel", "ublk"
  uint32_t max_message_bytes = 4 << 20;
  WatchOptions watch;
  WaitOptions waits;
  ControllerOps* controllers = nullptr;  // none: attach/detach/reset say so
  ExportOps* exports = nullptr;          // none: export/unexport say so, and why
  StopOps* stop = nullptr;               // none: StopAgent says this agent stops by signal only
  std::string no_export_reason;
};

// Called after a per-head setting changed through the API (to persist it). `read` gives
// the head as it is now; the listener calls it under its own lock, so of two concurrent
// changes the one saved last is the newer (a head read before taking the lock could be
// older than one saved meanwhile). It may take the core's lock: a listener's lock comes
// before the core's. The save's outcome is returned to the caller of the set RPC.
class SettingsListener {
 public:
  virtual ~SettingsListener() = default;
  virtual absl::Status OnHeadSettingsChanged(
      absl::FunctionRef<absl::StatusOr<HeadInfo>()> read) = 0;
  // Settings kept by head id whether or not the head exists (UpdateHeadSettings): the
  // fields `patch` has replace those kept; saved before it returns.
  virtual absl::Status Merge(const std::string& head, const HeadSettings& patch) = 0;
  // Forgets them; OK when nothing was kept.
  virtual absl::Status Forget(const std::string& head) = 0;
  // Every head's kept settings, in id order.
  virtual std::vector<std::pair<std::string, HeadSettings>> Kept() const = 0;
};

// Threading: every handler runs on a gRPC callback thread and calls only the core's
// thread-safe control API; WatchEvents streams live on the WatchHub.
//
// WatchEvents is a raw method: its reactor writes messages serialized by the hub (each
// event once for every watcher), and parses its request itself. On the wire, and so for
// clients and reflection, it is the same typed method.
class ControlService final : public v1::MultipathControl::WithRawCallbackMethod_WatchEvents<
                                v1::MultipathControl::CallbackService> {
 public:
  ControlService(Multipath* mp, const AccessPolicy* access, ServiceOptions options,
                 SettingsListener* settings = nullptr);
  ~ControlService() override;

  // Graceful shutdown, step one: ends every watcher (UNAVAILABLE, with a resume point)
  // and every WaitHead.
  void FinishWatchers(absl::string_view why) {
    hub_.FinishAll(why);
    waits_.FinishAll(why);
  }
  size_t waits() const { return waits_.active(); }
  size_t watchers() const { return hub_.active(); }
  WatchEndCounts watcher_ends() const { return hub_.ends(); }
  // How many events the watchers' messages needed serialized (each once, for all).
  uint64_t events_serialized() const { return hub_.events_serialized(); }

  using Ctx = grpc::CallbackServerContext;
  using Unary = grpc::ServerUnaryReactor;

  Unary* GetAgentInfo(Ctx*, const v1::GetAgentInfoRequest*, v1::GetAgentInfoResponse*) override;
  Unary* ListHeads(Ctx*, const v1::ListHeadsRequest*, v1::ListHeadsResponse*) override;
  Unary* GetHead(Ctx*, const v1::GetHeadRequest*, v1::GetHeadResponse*) override;
  Unary* WaitHead(Ctx*, const v1::WaitHeadRequest*, v1::WaitHeadResponse*) override;
  Unary* ListControllers(Ctx*, const v1::ListControllersRequest*,
                         v1::ListControllersResponse*) override;
  Unary* GetController(Ctx*, const v1::GetControllerRequest*,
                       v1::GetControllerResponse*) override;
  Unary* GetDefaults(Ctx*, const v1::GetDefaultsRequest*, v1::GetDefaultsResponse*) override;
  Unary* SetDelayedRemoval(Ctx*, const v1::SetDelayedRemovalRequest*,
                           v1::SetDelayedRemovalResponse*) override;
  Unary* SetDefaultDelayedRemoval(Ctx*, const v1::SetDefaultDelayedRemovalRequest*,
                                  v1::SetDefaultDelayedRemovalResponse*) override;
  Unary* SetIoPolicy(Ctx*, const v1::SetIoPolicyRequest*, v1::SetIoPolicyResponse*) override;
  Unary* SetIoFailTimeout(Ctx*, const v1::SetIoFailTimeoutRequest*, v1::SetIoFailTimeoutResponse*) override;
  Unary* SetDefaultIoFailTimeout(Ctx*, const v1::SetDefaultIoFailTimeoutRequest*,
                                 v1::SetDefaultIoFailTimeoutResponse*) override;
  Unary* SetDefaultIoPolicy(Ctx*, const v1::SetDefaultIoPolicyRequest*,
                            v1::SetDefaultIoPolicyResponse*) override;
  Unary* UpdateHeadSettings(Ctx*, const v1::UpdateHeadSettingsRequest*, v1::UpdateHeadSettingsResponse*) override;
  Unary* ListHeadSettings(Ctx*, const v1::ListHeadSettingsRequest*, v1::ListHeadSettingsResponse*) override;
  Unary* DeleteHeadSettings(Ctx*, const v1::DeleteHeadSettingsRequest*, v1::DeleteHeadSettingsResponse*) override;
  Unary* FailPath(Ctx*, const v1::FailPathRequest*, v1::FailPathResponse*) override;
  Unary* ReinstatePath(Ctx*, const v1::ReinstatePathRequest*, v1::ReinstatePathResponse*) override;
  Unary* AttachController(Ctx*, const v1::AttachControllerRequest*,
                          v1::AttachControllerResponse*) override;
  Unary* DetachController(Ctx*, const v1::DetachControllerRequest*,
                          v1::DetachControllerResponse*) override;
  Unary* ResetController(Ctx*, const v1::ResetControllerRequest*,
                         v1::ResetControllerResponse*) override;
  Unary* ExportHead(Ctx*, const v1::ExportHeadRequest*, v1::ExportHeadResponse*) override;
  Unary* UnexportHead(Ctx*, const v1::UnexportHeadRequest*, v1::UnexportHeadResponse*) override;
  Unary* StopAgent(Ctx*, const v1::StopAgentRequest*, v1::StopAgentResponse*) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* WatchEvents(Ctx*,
                                                          const grpc::ByteBuffer*) override;

 private:
  // OK if the caller holds `need`; PERMISSION_DENIED / UNAUTHENTICATED otherwise.
  absl::Status Authorize(Ctx* ctx, Role need, Caller* caller = nullptr) const;
  absl::Status HeadOut(const std::string& head, v1::Head* out) const;
  // The controller an attach/detach/reset call names, once the caller may and a backend
  // is present.
  absl::StatusOr<std::string> BackendController(Ctx* ctx, const std::string& name,
                                                absl::string_view verb) const;
  // The head an export call names, once the caller may and a frontend is present.
  absl::StatusOr<std::string> ExportTarget(Ctx* ctx, const std::string& name,
                                           absl::string_view verb) const;
  absl::Status Persist(const std::string& head);
  // Why this agent exports nothing, for the errors that say so.
  std::string NoExportReason() const;
  absl::StatusOr<HeadSettings> KeptSettings(const std::string& head) const;

  Multipath* const mp_;
  const AccessPolicy* const access_;
  const ServiceOptions options_;
  SettingsListener* const settings_;
  WatchHub hub_;
  HeadWaits waits_;
};

}  // namespace umpath::server
