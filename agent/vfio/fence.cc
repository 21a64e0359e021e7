#include "agent/vfio/fence.h"

#include "absl/strings/str_cat.h"

namespace umpath::vfio {

absl::string_view FenceOutcomeName(FenceOutcome o) {
  switch (o) {
    case FenceOutcome::kDisabled: return "disabled";
    case FenceOutcome::kFunctionReset: return "bus master cleared and function reset";
    case FenceOutcome::kReleased: return "function released";
  }
  return "unknown";
}

FenceOutcome FenceController(FenceOps& ops, const FenceRequest& request, std::string* detail) {
  if (ops.Gone()) {
    ops.Release();
    *detail = "registers read all ones";
    return FenceOutcome::kReleased;
  }
  // A controller that still answers aborts its queues' commands itself, as the kernel
  // has it deleted before a disable (QEMU's NVMe crashes on a disable with reads in
  // flight; SPDK #3088 saw drives brick). Either way the disable below is the fence.
  if (request.delete_queues && !ops.Fatal()) (void)ops.DeleteIoQueues();
  if (request.shutdown_notify) (void)ops.ShutdownNotify();
  const absl::Status disabled = ops.Disable();
  if (disabled.ok()) {
    *detail = "CC.EN=0, CSTS.RDY=0";
    if (request.release) {
      ops.Release();
      *detail += ", function released";
    }
    return FenceOutcome::kDisabled;
  }
  if (disabled.code() == absl::StatusCode::kUnavailable || ops.Gone()) {
    ops.Release();
    *detail = absl::StrCat("gone while disabling (", disabled.message(), ")");
    return FenceOutcome::kReleased;
  }
  // RDY stayed 1 past CAP.TO: the controller may still fetch and execute commands and
  // DMA. Take DMA away from it, then reset the function.
  const absl::Status bm = ops.ClearBusMaster();
  const absl::Status flr = bm.ok() ? ops.ResetFunction() : bm;
  if (bm.ok() && flr.ok()) {
    *detail = absl::StrCat(disabled.message(), "; bus master cleared, function reset");
    if (request.release) {
      ops.Release();
      *detail += ", function released";
    }
    return FenceOutcome::kFunctionReset;
  }
  ops.Release();
  *detail = absl::StrCat(disabled.message(), "; ", flr.message(), "; function released");
  return FenceOutcome::kReleased;
}

FenceResult FenceForSupervisor(FenceOps& ops, const FenceAsk& ask) {
  FenceRequest r;
  r.release = ask.release;
  r.shutdown_notify = ask.shutdown_notify;
  FenceResult out;
  const FenceOutcome o = FenceController(ops, r, &out.detail);
  out.released = o == FenceOutcome::kReleased;
  out.detail = absl::StrCat(FenceOutcomeName(o), ": ", out.detail);
  return out;
}

}  // namespace umpath::vfio
