#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "agent/nvme/wire.h"

namespace umpath::nvme {

// One ANA group descriptor of the ANA log (log page 0x0C).
struct AnaGroupDescriptor {
  uint32_t group_id = 0;
  AnaState state = AnaState::kOptimized;
  uint64_t change_count = 0;
  std::vector<uint32_t> nsids;  // ascending

  friend bool operator==(const AnaGroupDescriptor&, const AnaGroupDescriptor&) = default;
};

struct AnaLog {
  uint64_t change_count = 0;
  std::vector<AnaGroupDescriptor> groups;

  const AnaGroupDescriptor* FindGroup(uint32_t group_id) const;
  // The state of the group that lists `nsid`, if any group does.
  std::optional<AnaState> StateOfNamespace(uint32_t nsid) const;

  friend bool operator==(const AnaLog&, const AnaLog&) = default;
};

// Parses an ANA log as read from a controller whose Identify Controller reports
// `anagrpmax`. SEMANTICS.md "ANA": the log is rejected as a whole, with an
// INVALID_ARGUMENT that names the descriptor and what is wrong, if
//   - it is shorter than its header, or a descriptor or its NSID list overruns it;
//   - a group id is 0, greater than ANAGRPMAX, or listed twice;
//   - a state is 0 or greater than 0xF;
//   - a descriptor's NSIDs are not strictly ascending, an NSID is 0, or one NSID is
//     in two groups.
// Bytes after the last descriptor are ignored (the read buffer is usually larger).
absl::StatusOr<AnaLog> ParseAnaLog(absl::Span<const uint8_t> log, uint32_t anagrpmax);

// The wire form of `log` (for tests, fuzz seeds and the fake controller). It writes
// what it is given, valid or not, so tests can build malformed logs.
std::vector<uint8_t> BuildAnaLog(const AnaLog& log);

}  // namespace umpath::nvme
