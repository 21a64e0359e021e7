#include "agent/app/ops.h"

#include "absl/strings/str_cat.h"

namespace umpath::app {

absl::StatusOr<std::string> BackendControllerOps::Attach(const AttachSpec& spec) {
  if (spec.transport == "pcie") {
    if (vm_ == nullptr) {
      return absl::FailedPreconditionError(
          "this agent has no vfio backend (start it with --vfio_devices)");
    }
    if (absl::Status s = vm_->Attach(spec.address); !s.ok()) return s;
    return spec.address;
  }
  if (kb_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "transport \"", spec.transport, "\" needs the kernel backend, off here (--kernel=false)"));
  }
  return kb_->Attach(spec.transport, spec.address, spec.service, spec.subsystem_nqn);
}

absl::Status BackendControllerOps::Detach(const std::string& controller) {
  if (kb_ != nullptr && kb_->Owns(controller)) return kb_->Detach(controller, "detached through the API");
  if (vm_ != nullptr) return vm_->Detach(controller, "detached through the API");
  return absl::NotFoundError(absl::StrCat("controller ", controller, " not found"));
}

absl::Status BackendControllerOps::Reset(const std::string& controller) {
  if (kb_ != nullptr && kb_->Owns(controller)) return kb_->RequestReset(controller);
  if (vm_ != nullptr) return vm_->RequestReset(controller);
  return absl::NotFoundError(absl::StrCat("controller ", controller, " not found"));
}

void UblkExportOps::Set(ublk::Exporter* e) {
  MutexLock l(&mu_);
  e_ = e;
}

void UblkExportOps::Unavailable(std::string why) {
  MutexLock l(&mu_);
  why_not_ = std::move(why);
}

ublk::Exporter* UblkExportOps::Get(std::string* why_not) {
  MutexLock l(&mu_);
  *why_not = why_not_;
  return e_;
}

absl::StatusOr<std::string> UblkExportOps::Export(const std::string& head) {
  std::string why_not;
  ublk::Exporter* e = Get(&why_not);
  if (e == nullptr) return absl::FailedPreconditionError(why_not);
  return e->Export(head);
}

absl::Status UblkExportOps::Unexport(const std::string& head) {
  std::string why_not;
  ublk::Exporter* e = Get(&why_not);
  if (e == nullptr) return absl::FailedPreconditionError(why_not);
  return e->Unexport(head);
}

}  // namespace umpath::app
