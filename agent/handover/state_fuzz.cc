// libFuzzer: DecodeState never crashes, and whatever it accepts keeps its own rules
// (every index in range, each descriptor named once) and survives an Encode/Decode
// round trip unchanged.
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>

#include "agent/handover/state.h"

using umpath::handover::State;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const size_t fds = data[0] % 64;  // the first byte: how many descriptors came
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  absl::StatusOr<State> s = umpath::handover::DecodeState(text, fds);
  if (!s.ok()) {
    if (s.status().message().empty()) std::abort();
    return 0;
  }
  std::set<int> named;
  auto fd = [&](int i) {
    if (i < 0 || static_cast<size_t>(i) >= fds || !named.insert(i).second) std::abort();
  };
  fd(s->container_fd);
  for (const auto& m : s->mappings) {
    if (m.fd >= 0) fd(m.fd);
  }
  for (const auto& c : s->controllers) {
    fd(c.group_fd);
    fd(c.device_fd);
    for (int m : {c.admin_sq, c.admin_cq, c.admin_data}) {
      if (m < 0 || static_cast<size_t>(m) >= s->mappings.size() || s->mappings[m].fd < 0) std::abort();
    }
    if (c.admin.sq_tail >= c.admin_depth || c.admin.cq_head >= c.admin_depth) std::abort();
    for (const auto& q : c.queues) {
      if (q.memory < 0 || static_cast<size_t>(q.memory) >= s->mappings.size()) std::abort();
      if (q.ring.sq_tail >= q.depth || q.ring.cq_head >= q.depth) std::abort();
    }
  }
  if (named.size() != fds) std::abort();
  absl::StatusOr<State> again = umpath::handover::DecodeState(umpath::handover::Encode(*s), fds);
  if (!again.ok() || umpath::handover::Encode(*again) != umpath::handover::Encode(*s)) std::abort();
  return 0;
}
