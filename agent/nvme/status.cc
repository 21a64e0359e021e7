#include "agent/nvme/status.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace umpath::nvme {

absl::string_view AnaStateName(AnaState s) {
  switch (s) {
    case AnaState::kOptimized: return "optimized";
    case AnaState::kNonOptimized: return "non-optimized";
    case AnaState::kInaccessible: return "inaccessible";
    case AnaState::kPersistentLoss: return "persistent-loss";
    case AnaState::kChange: return "change";
  }
  return "reserved";
}

int64_t RetryDelayNanos(Status s, const std::array<uint16_t, 3>& crdt) {
  if (s.crd() == 0) return 0;
  return int64_t{crdt[s.crd() - 1]} * 100'000'000;
}

namespace {

absl::string_view CodeName(uint16_t code) {
  namespace sc = status_code;
  switch (code) {
    case sc::kSuccess: return "success";
    case sc::kInvalidOpcode: return "invalid opcode";
    case sc::kInvalidField: return "invalid field";
    case sc::kCommandIdConflict: return "command id conflict";
    case sc::kDataTransferError: return "data transfer error";
    case sc::kAbortedPowerLoss: return "aborted: power loss";
    case sc::kInternalError: return "internal error";
    case sc::kAbortRequested: return "abort requested";
    case sc::kAbortedSqDeleted: return "aborted: SQ deleted";
    case sc::kInvalidNamespace: return "invalid namespace or format";
    case sc::kLbaOutOfRange: return "LBA out of range";
    case sc::kCapacityExceeded: return "capacity exceeded";
    case sc::kNamespaceNotReady: return "namespace not ready";
    case sc::kWriteFault: return "write fault";
    case sc::kUnrecoveredReadError: return "unrecovered read error";
    case sc::kInternalPathError: return "path: internal path error";
    case sc::kAnaPersistentLoss: return "path: ANA persistent loss";
    case sc::kAnaInaccessible: return "path: ANA inaccessible";
    case sc::kAnaTransition: return "path: ANA transition";
    case sc::kControllerPathError: return "path: controller path error";
    case sc::kHostPathError: return "path: host path error";
    case sc::kHostAbortedCommand: return "path: host aborted command";
  }
  return "";
}

}  // namespace

std::string StatusToString(Status s) {
  std::string out = absl::StrFormat("0x%03x", s.code());
  absl::string_view name = CodeName(s.code());
  if (!name.empty()) absl::StrAppend(&out, " (", name, ")");
  if (s.dnr()) absl::StrAppend(&out, ", dnr");
  if (s.more()) absl::StrAppend(&out, ", more");
  if (s.crd()) absl::StrAppend(&out, ", crd ", s.crd());
  return out;
}

absl::string_view DispositionName(Disposition d) {
  switch (d) {
    case Disposition::kComplete: return "complete";
    case Disposition::kFailToCaller: return "fail-to-caller";
    case Disposition::kFailover: return "failover";
    case Disposition::kRetry: return "retry";
  }
  return "unknown";
}

}  // namespace umpath::nvme
