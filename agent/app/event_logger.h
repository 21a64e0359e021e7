#pragma once

// The agent's log of what happened: one line per event (`event revision=... type=...`)
// and, every 10 s, one line per path whose I/O errors grew. Nothing per I/O.

#include <memory>
#include <thread>

#include "absl/status/statusor.h"
#include "agent/core/multipath.h"

namespace umpath::app {

// Threading: its own thread, which ends once the core's journal is closed
// (Multipath::Shutdown); the destructor joins it.
class EventLogger {
 public:
  static absl::StatusOr<std::unique_ptr<EventLogger>> Start(Multipath* mp);
  ~EventLogger();

 private:
  EventLogger() = default;
  std::thread thread_;
};

}  // namespace umpath::app
