#pragma once

// The NVMe wire formats the core and the drivers share (NVM Express Base 2.0,
// section 4.2 "Submission Queue Entry" and 4.6 "Completion Queue Entry"). Identify
// data and the ANA log use libnvme's structures (nvme/types.h); these two entries are
// ours because the drivers build and reap them in the hot path.

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"

namespace umpath::nvme {

// A 64-byte submission queue entry, laid out as the controller reads it.
struct SubmissionEntry {
  uint8_t opcode = 0;
  uint8_t flags = 0;  // FUSE (1:0), PSDT (7:6)
  uint16_t cid = 0;
  uint32_t nsid = 0;
  uint32_t cdw2 = 0;
  uint32_t cdw3 = 0;
  uint64_t mptr = 0;
  uint64_t prp1 = 0;
  uint64_t prp2 = 0;
  uint32_t cdw10 = 0;
  uint32_t cdw11 = 0;
  uint32_t cdw12 = 0;
  uint32_t cdw13 = 0;
  uint32_t cdw14 = 0;
  uint32_t cdw15 = 0;
};
static_assert(sizeof(SubmissionEntry) == 64);
static_assert(offsetof(SubmissionEntry, prp1) == 24);
static_assert(offsetof(SubmissionEntry, cdw10) == 40);

// A 16-byte completion queue entry. Bit 0 of `status` is the phase tag; bits 15:1
// are the status field (see Status).
struct CompletionEntry {
  uint32_t dw0 = 0;  // command specific
  uint32_t dw1 = 0;
  uint16_t sq_head = 0;
  uint16_t sq_id = 0;
  uint16_t cid = 0;
  uint16_t status = 0;

  bool phase() const { return status & 1; }
};
static_assert(sizeof(CompletionEntry) == 16);
static_assert(offsetof(CompletionEntry, status) == 14);

enum class IoOpcode : uint8_t {
  kFlush = 0x00,
  kWrite = 0x01,
  kRead = 0x02,
  kWriteZeroes = 0x08,
  kDatasetManagement = 0x09,
};

enum class AdminOpcode : uint8_t {
  kDeleteIoSq = 0x00,
  kCreateIoSq = 0x01,
  kGetLogPage = 0x02,
  kDeleteIoCq = 0x04,
  kCreateIoCq = 0x05,
  kIdentify = 0x06,
  kAbort = 0x08,
  kSetFeatures = 0x09,
  kGetFeatures = 0x0a,
  kAsyncEventRequest = 0x0c,
};

// Status code type (SCT) in bits 10:8 of a 12-bit code, status code (SC) in bits 7:0.
namespace status_code {
inline constexpr uint16_t kSuccess = 0x000;
inline constexpr uint16_t kInvalidOpcode = 0x001;
inline constexpr uint16_t kInvalidField = 0x002;
inline constexpr uint16_t kCommandIdConflict = 0x003;
inline constexpr uint16_t kDataTransferError = 0x004;
inline constexpr uint16_t kAbortedPowerLoss = 0x005;
inline constexpr uint16_t kInternalError = 0x006;
inline constexpr uint16_t kAbortRequested = 0x007;
inline constexpr uint16_t kAbortedSqDeleted = 0x008;
inline constexpr uint16_t kInvalidNamespace = 0x00b;
inline constexpr uint16_t kNamespaceNotReady = 0x082;
inline constexpr uint16_t kLbaOutOfRange = 0x080;
inline constexpr uint16_t kCapacityExceeded = 0x081;
inline constexpr uint16_t kWriteFault = 0x280;
inline constexpr uint16_t kUnrecoveredReadError = 0x281;
// Type 3: path related status.
inline constexpr uint16_t kInternalPathError = 0x300;
inline constexpr uint16_t kAnaPersistentLoss = 0x301;
inline constexpr uint16_t kAnaInaccessible = 0x302;
inline constexpr uint16_t kAnaTransition = 0x303;
inline constexpr uint16_t kControllerPathError = 0x360;
inline constexpr uint16_t kHostPathError = 0x370;
inline constexpr uint16_t kHostAbortedCommand = 0x371;
}  // namespace status_code

// The status field of a completion: bits 15:1 of the CQE's status word, held as the
// one 15-bit value the controller wrote (cheap to copy and pass in a register) and
// decoded by the accessors. A default Status is success.
//   SC 7:0, SCT 10:8, CRD 12:11, M 13, DNR 14.
class Status {
 public:
  constexpr Status() = default;

  // `field` is the CQE's status word shifted right by one (the phase bit dropped), the
  // layout of the kernel's nvme_completion.status >> 1.
  static constexpr Status FromCompletionField(uint16_t field) {
    return Status(static_cast<uint16_t>(field & 0x7fff));
  }
  static constexpr Status FromCqe(const CompletionEntry& cqe) {
    return FromCompletionField(static_cast<uint16_t>(cqe.status >> 1));
  }
  // `code` is SCT and SC as one 11-bit value, e.g. 0x303 for ANA transition.
  static constexpr Status Make(uint16_t code, bool dnr = false, uint8_t crd = 0) {
    return Status(static_cast<uint16_t>((code & 0x7ff) | (crd & 0x3) << 11 | (dnr ? 1 << 14 : 0)));
  }

  constexpr uint16_t ToCompletionField() const { return field_; }
  constexpr uint8_t sc() const { return static_cast<uint8_t>(field_ & 0xff); }
  constexpr uint8_t sct() const { return static_cast<uint8_t>((field_ >> 8) & 0x7); }
  constexpr uint8_t crd() const { return static_cast<uint8_t>((field_ >> 11) & 0x3); }
  constexpr bool more() const { return (field_ >> 13) & 1; }
  constexpr bool dnr() const { return (field_ >> 14) & 1; }
  constexpr uint16_t code() const { return field_ & 0x7ff; }
  constexpr bool ok() const { return code() == 0; }

  friend constexpr bool operator==(Status, Status) = default;

 private:
  explicit constexpr Status(uint16_t field) : field_(field) {}
  uint16_t field_ = 0;
};
static_assert(sizeof(Status) == 2);

// ANA states (Base spec 8.1.1, the ANA group descriptor's state byte). Values 5..0xE
// are reserved and treated as not usable.
enum class AnaState : uint8_t {
  kOptimized = 0x1,
  kNonOptimized = 0x2,
  kInaccessible = 0x3,
  kPersistentLoss = 0x4,
  kChange = 0xf,
};

absl::string_view AnaStateName(AnaState s);

}  // namespace umpath::nvme
