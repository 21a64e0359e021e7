#pragma once

// What exporter.cc and exporter_stop.cc share, and nothing else includes.

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "agent/base/error_reason.h"
#include "agent/export/exporter.h"

namespace umpath::ublk {
namespace exporter_internal {

constexpr absl::string_view kStopping = "the agent is stopping";

// DEVICE_IN_USE, with who uses the device(s) as UblkDriver::Users says it ("pid 812
// (fio)", "mounted at /mnt", "held by dm-0") split into the ErrorInfo's metadata.
inline absl::Status InUse(absl::Status s, absl::string_view devices, absl::string_view heads,
                          const std::vector<std::string>& users) {
  std::vector<std::string> pids, mounts, holders;
  for (absl::string_view u : users) {
    if (absl::ConsumePrefix(&u, "pid ")) {
      pids.emplace_back(u.substr(0, u.find(' ')));
    } else if (absl::ConsumePrefix(&u, "mounted at ")) {
      mounts.emplace_back(u);
    } else if (absl::ConsumePrefix(&u, "held by ")) {
      holders.emplace_back(u);
    }
  }
  return WithReason(std::move(s), reason::kDeviceInUse,
                    {{"device", devices},
                     {"head", heads},
                     {"pids", absl::StrJoin(pids, ",")},
                     {"mounts", absl::StrJoin(mounts, ",")},
                     {"holders", absl::StrJoin(holders, ",")}});
}

}  // namespace exporter_internal

// A caller's `done`, answered exactly once: by the exporter, or UNAVAILABLE when the
// work is dropped because the agent stops.
template <typename T>
class Exporter::Answer {
 public:
  explicit Answer(Done<T> done) : done_(std::move(done)) {}
  ~Answer() {
    if (done_) std::move(done_)(AgentStoppingError(exporter_internal::kStopping));
  }
  void operator()(T value) {
    Done<T> d = std::move(done_);
    done_ = nullptr;
    if (d) std::move(d)(std::move(value));
  }

 private:
  Done<T> done_;
};

}  // namespace umpath::ublk
