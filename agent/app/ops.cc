#include "agent/app/ops.h"

#include <memory>

#include "absl/strings/str_cat.h"

namespace umpath::app {

namespace {

constexpr absl::string_view kStopping = "the agent is stopping";

// `done` is called exactly once: by the task, or here when the plane no longer runs
// tasks.
template <typename T, typename Fn>
void OnPlane(ControlPlane* plane, server::OpDone<T> done, Fn fn) {
  auto shared = std::make_shared<server::OpDone<T>>(std::move(done));
  if (!plane->Post([shared, fn = std::move(fn)]() mutable { fn(std::move(*shared)); })) {
    std::move (*shared)(absl::UnavailableError(kStopping));
  }
}

}  // namespace

void BackendControllerOps::Attach(const AttachSpec& spec,
                                  server::OpDone<absl::StatusOr<std::string>> done) {
  OnPlane(plane_, std::move(done), [this, spec](server::OpDone<absl::StatusOr<std::string>> d) {
    AttachOnPlane(spec, std::move(d));
  });
}

void BackendControllerOps::AttachOnPlane(const AttachSpec& spec,
                                         server::OpDone<absl::StatusOr<std::string>> done) {
  if (spec.transport == "pcie") {
    if (vm_ == nullptr) {
      return std::move(done)(absl::FailedPreconditionError(
          "this agent has no vfio backend (start it with --vfio_devices)"));
    }
    if (absl::Status s = vm_->Attach(spec.address); !s.ok()) return std::move(done)(s);
    return std::move(done)(spec.address);
  }
  if (kb_ == nullptr) {
    return std::move(done)(absl::FailedPreconditionError(absl::StrCat(
        "transport \"", spec.transport, "\" needs the kernel backend, off here (--kernel=false)")));
  }
  kb_->Attach(spec.transport, spec.address, spec.service, spec.subsystem_nqn, std::move(done));
}

void BackendControllerOps::Detach(const std::string& controller, server::OpDone<absl::Status> done) {
  OnPlane(plane_, std::move(done), [this, controller](server::OpDone<absl::Status> d) {
    if (kb_ != nullptr && kb_->Owns(controller)) {
      return kb_->Detach(controller, "detached through the API", std::move(d));
    }
    std::move(d)(sup_->Detach(controller, "detached through the API"));
  });
}

void BackendControllerOps::Reset(const std::string& controller, server::OpDone<absl::Status> done) {
  OnPlane(plane_, std::move(done), [this, controller](server::OpDone<absl::Status> d) {
    std::move(d)(sup_->Reset(controller, "reset requested through the API"));
  });
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

void UblkExportOps::Export(const std::string& head,
                           server::OpDone<absl::StatusOr<std::string>> done) {
  std::string why_not;
  ublk::Exporter* e = Get(&why_not);
  if (e == nullptr) return std::move(done)(absl::FailedPreconditionError(why_not));
  e->Export(head, std::move(done));
}

std::optional<BufferBudgetInfo> UblkExportOps::Budget() {
  MutexLock l(&mu_);
  if (e_ == nullptr || !e_->pooled()) return std::nullopt;
  const ublk::PinnedMemory m = e_->Pinned();
  return BufferBudgetInfo{m.bytes, m.budget_bytes, m.buffer_bytes, m.heads_left};
}

void UblkExportOps::Unexport(const std::string& head, server::OpDone<absl::Status> done) {
  std::string why_not;
  ublk::Exporter* e = Get(&why_not);
  if (e == nullptr) return std::move(done)(absl::FailedPreconditionError(why_not));
  e->Unexport(head, std::move(done));
}

}  // namespace umpath::app
