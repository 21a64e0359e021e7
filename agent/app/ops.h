#pragma once

// What the control API calls for attach, detach, reset, export and unexport, routed to
// the backend or frontend that owns the thing. Each call is handed over (controllers:
// to the control thread; block devices: to a thread of its own) and answers through
// its `done`.

#include <functional>
#include <string>

#include "agent/base/mutex.h"
#include "agent/control/control_plane.h"
#include "agent/control/supervisor.h"
#include "agent/export/exporter.h"
#include "agent/kernel/libnvme_backend.h"
#include "agent/vfio/vfio_manager.h"
#include "server/attachment_store.h"
#include "server/control_service.h"

namespace umpath::app {

// PCIe functions go to the vfio backend, kernel and fabrics controllers to the kernel
// backend (either may be absent); a reset to the supervisor. What is attached through
// the API is remembered (`remembered`, when given) and attached again by the next agent
// (ReattachRemembered); a detach forgets it. Kernel controllers claimed by name are not
// remembered: nvmeN names another controller after a reboot.
//
// Threading: any thread; the work runs on the control thread.
class BackendControllerOps final : public server::ControllerOps {
 public:
  BackendControllerOps(ControlPlane* plane, ControllerSupervisor* sup, vfio::VfioManager* vm,
                       kernel::LibnvmeBackend* kb, server::AttachmentStore* remembered = nullptr,
                       std::function<void(const std::string&)> log = nullptr)
      : plane_(plane), sup_(sup), vm_(vm), kb_(kb), remembered_(remembered), log_(std::move(log)) {}
  void Attach(const AttachSpec& spec, server::OpDone<absl::StatusOr<std::string>> done) override;
  void Detach(const std::string& controller, server::OpDone<absl::Status> done) override;
  void Reset(const std::string& controller, server::OpDone<absl::Status> done) override;
  // At start: attaches what the last agent had attached through the API; each outcome
  // is logged, and `done` runs once all are known.
  void ReattachRemembered(absl::AnyInvocable<void(int attached, int failed) &&> done);

 private:
  void AttachOnPlane(const AttachSpec& spec, server::OpDone<absl::StatusOr<std::string>> done);
  void Remember(const std::string& name, const AttachSpec& spec);
  void Log(const std::string& line) const {
    if (log_) log_(line);
  }
  ControlPlane* const plane_;
  ControllerSupervisor* const sup_;
  vfio::VfioManager* const vm_;
  kernel::LibnvmeBackend* const kb_;
  server::AttachmentStore* const remembered_;
  const std::function<void(const std::string&)> log_;
};

// The exporter may come later than the server (after a workload that drives the
// workers itself); until then calls say why not. The exporter hands the work to the
// control thread, and what blocks on the kernel to a thread of its own.
//
// Threading: any thread; the exporter is set once.
class UblkExportOps final : public server::ExportOps {
 public:
  explicit UblkExportOps(std::string why_not) : why_not_(std::move(why_not)) {}
  void Set(ublk::Exporter* e);
  void Unavailable(std::string why);
  void Export(const std::string& head, server::OpDone<absl::StatusOr<std::string>> done) override;
  void Unexport(const std::string& head, server::OpDone<absl::Status> done) override;
  std::optional<BufferBudgetInfo> Budget() override;

 private:
  ublk::Exporter* Get(std::string* why_not);
  Mutex mu_;
  std::string why_not_ ABSL_GUARDED_BY(mu_);
  ublk::Exporter* e_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace umpath::app
