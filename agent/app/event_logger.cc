#include "agent/app/event_logger.h"

#include <chrono>
#include <cstdio>

#include "agent/core/error_summary.h"

namespace umpath::app {

absl::StatusOr<std::unique_ptr<EventLogger>> EventLogger::Start(Multipath* mp) {
  absl::StatusOr<std::shared_ptr<EventSubscription>> sub =
      mp->journal().Subscribe(mp->journal().current_revision(), 1 << 16, nullptr);
  if (!sub.ok()) return sub.status();
  std::unique_ptr<EventLogger> l(new EventLogger());
  l->thread_ = std::thread([sub = *sub, mp] {
    IoErrorSummary io_errors;
    auto next_summary = std::chrono::steady_clock::now();
    for (;;) {
      sub->WaitForEvents(std::chrono::seconds(1));
      if (const auto now = std::chrono::steady_clock::now(); now >= next_summary) {
        next_summary = now + std::chrono::seconds(10);
        for (const std::string& line : io_errors.Update(mp->ListHeads())) {
          std::fprintf(stderr, "umpathd: %s\n", line.c_str());
        }
      }
      absl::StatusOr<std::vector<Event>> events = sub->Take(256);
      if (!events.ok()) {
        if (events.status().code() != absl::StatusCode::kCancelled) {
          std::fprintf(stderr, "umpathd: event log: %s\n",
                       std::string(events.status().message()).c_str());
        }
        return;
      }
      for (const Event& e : *events) std::fprintf(stderr, "event %s\n", e.ToString().c_str());
    }
  });
  return l;
}

EventLogger::~EventLogger() {
  if (thread_.joinable()) thread_.join();
}

}  // namespace umpath::app
