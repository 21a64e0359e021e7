// libFuzzer: ParseAnaLog never crashes or reads out of bounds, and whatever it accepts
// satisfies every rule it checks and survives a Build/Parse round trip.
#include <cstdint>
#include <cstdlib>

#include "agent/nvme/ana_log.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint32_t anagrpmax = data[0];  // the first byte picks ANAGRPMAX
  absl::Span<const uint8_t> log(data + 1, size - 1);
  absl::StatusOr<umpath::nvme::AnaLog> parsed = umpath::nvme::ParseAnaLog(log, anagrpmax);
  if (!parsed.ok()) {
    if (parsed.status().message().empty()) std::abort();
    return 0;
  }
  for (const auto& g : parsed->groups) {
    if (g.group_id == 0 || g.group_id > anagrpmax) std::abort();
    const auto state = static_cast<uint8_t>(g.state);
    if (state == 0 || state > 0xf) std::abort();
    for (size_t i = 1; i < g.nsids.size(); ++i) {
      if (g.nsids[i] <= g.nsids[i - 1]) std::abort();
    }
  }
  std::vector<uint8_t> again = umpath::nvme::BuildAnaLog(*parsed);
  absl::StatusOr<umpath::nvme::AnaLog> reparsed = umpath::nvme::ParseAnaLog(again, anagrpmax);
  if (!reparsed.ok() || !(*reparsed == *parsed)) std::abort();
  return 0;
}
