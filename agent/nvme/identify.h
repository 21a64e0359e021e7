#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace umpath::nvme {

// Lowercase hex of `bytes`, no separators: "ab00...".
std::string HexString(absl::Span<const uint8_t> bytes);
// The canonical 8-4-4-4-12 form of a 16-byte UUID.
std::string UuidString(const std::array<uint8_t, 16>& uuid);

// An NQN as the device or sysfs gave it, made safe for proto3 `string` fields, logs and
// head names (issue 17 item 7a): printable ASCII other than '\\' and '/' is kept, every
// other byte becomes "\\xHH". The escape is one-to-one (a '\\' is itself escaped), so two
// NQNs are equal exactly when their printable forms are: paths still group into heads
// by it, and a head named after it is one path segment the API can address.
std::string PrintableNqn(absl::string_view raw);

// A namespace's globally unique identifiers. All-zero values mean "not reported"
// and are kept empty.
struct NamespaceIds {
  std::optional<std::array<uint8_t, 16>> nguid;
  std::optional<std::array<uint8_t, 8>> eui64;
  std::optional<std::array<uint8_t, 16>> uuid;

  bool empty() const { return !nguid && !eui64 && !uuid; }
  std::string ToString() const;  // "nguid=..., eui64=..., uuid=..." or "none"

  friend bool operator==(const NamespaceIds&, const NamespaceIds&) = default;
};

// Parses the Namespace Identification Descriptor list (Identify CNS 03h, 4096 bytes).
// INVALID_ARGUMENT if a descriptor overruns the buffer, has the wrong length for its
// type, or repeats a type. Unknown types are skipped; the list ends at a zero type.
absl::StatusOr<NamespaceIds> ParseNamespaceIdDescriptors(absl::Span<const uint8_t> data);

// What the agent needs from Identify Controller (CNS 01h).
struct ControllerIdentity {
  uint16_t vid = 0;
  uint16_t cntlid = 0;
  uint32_t version = 0;
  std::string serial;
  std::string model;
  std::string firmware;
  std::string subsys_nqn;      // PrintableNqn of SUBNQN: what names, logs and the API see
  std::string subsys_nqn_raw;  // SUBNQN's bytes, to compare with sysfs and configured NQNs
  uint8_t cmic = 0;
  bool multi_controller = false;  // CMIC bit 1: the subsystem may have more controllers
  bool ana_supported = false;     // CMIC bit 3
  uint8_t mdts = 0;               // 2^mdts minimum pages; 0 is no limit
  uint8_t anatt_secs = 0;
  uint8_t anacap = 0;
  uint32_t anagrpmax = 0;
  uint32_t nanagrpid = 0;
  std::array<uint16_t, 3> crdt{};  // 100 ms units
  // Command Quiesce Time (NVMe 2.1, bytes 387:386), ms: how long after a controller is
  // fenced a command it held may still be executing; 0 when not reported.
  uint16_t cqt_ms = 0;
  uint32_t nn = 0;                 // number of namespaces
  uint32_t mnan = 0;               // maximum number of allowed namespaces; 0 not reported
  uint16_t oncs = 0;
  bool volatile_write_cache = false;
};

// Parses a 4096-byte Identify Controller structure. INVALID_ARGUMENT when the size is
// wrong, the subsystem NQN is not NUL-terminated, the queue entry sizes do not admit
// 64-byte SQEs and 16-byte CQEs, or ANA is claimed with ANAGRPMAX 0 or NANAGRPID >
// ANAGRPMAX.
absl::StatusOr<ControllerIdentity> ParseIdentifyController(absl::Span<const uint8_t> data);

// The full size of the controller's ANA log (log page 0Ch, NVMe Base 2.0 5.16.1.13), from
// its own fields as the kernel sizes it: the header, NANAGRPID group descriptors, and one
// NSID for each namespace it may have attached (MNAN; NN when MNAN is 0 or larger).
// 64-bit: a controller may claim 2^32 - 1 of each; the reader bounds what it reads.
uint64_t AnaLogBytes(const ControllerIdentity& c);

// What the agent needs from Identify Namespace (CNS 00h).
struct NamespaceIdentity {
  uint64_t size_blocks = 0;
  uint64_t capacity_blocks = 0;
  uint32_t block_size = 0;
  uint16_t metadata_size = 0;
  uint32_t ana_group_id = 0;
  bool shared = false;  // NMIC bit 0
  NamespaceIds ids;     // NGUID and EUI64 from this structure
};

// Parses a 4096-byte Identify Namespace structure. NOT_FOUND for an inactive
// namespace (all zero, NSZE 0); INVALID_ARGUMENT for a wrong size, a format index
// beyond NLBAF, or an LBA data size outside 512 B..64 KiB.
absl::StatusOr<NamespaceIdentity> ParseIdentifyNamespace(absl::Span<const uint8_t> data);

}  // namespace umpath::nvme
