#pragma once

// What the control API calls for attach, detach, reset, export and unexport, routed to
// the backend or frontend that owns the thing.

#include <string>

#include "agent/base/mutex.h"
#include "agent/export/exporter.h"
#include "agent/kernel/libnvme_backend.h"
#include "agent/vfio/vfio_manager.h"
#include "server/control_service.h"

namespace umpath::app {

// PCIe functions go to the vfio backend, kernel and fabrics controllers to the kernel
// backend. Either may be absent.
class BackendControllerOps final : public server::ControllerOps {
 public:
  BackendControllerOps(vfio::VfioManager* vm, kernel::LibnvmeBackend* kb) : vm_(vm), kb_(kb) {}
  absl::StatusOr<std::string> Attach(const AttachSpec& spec) override;
  absl::Status Detach(const std::string& controller) override;
  absl::Status Reset(const std::string& controller) override;

 private:
  vfio::VfioManager* const vm_;
  kernel::LibnvmeBackend* const kb_;
};

// The exporter may come later than the server (after a workload that drives the
// workers itself); until then calls say why not.
//
// Threading: any thread; the exporter is set once.
class UblkExportOps final : public server::ExportOps {
 public:
  explicit UblkExportOps(std::string why_not) : why_not_(std::move(why_not)) {}
  void Set(ublk::Exporter* e);
  void Unavailable(std::string why);
  absl::StatusOr<std::string> Export(const std::string& head) override;
  absl::Status Unexport(const std::string& head) override;

 private:
  ublk::Exporter* Get(std::string* why_not);
  Mutex mu_;
  std::string why_not_ ABSL_GUARDED_BY(mu_);
  ublk::Exporter* e_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace umpath::app
