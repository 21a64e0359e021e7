#pragma once

// The one place SIGINT and SIGTERM are taken: blocked in every thread (create this
// before any other thread), waited for on a thread of its own, never by a handler.
// SIGPIPE is ignored: a broken pipe is an error to return, never a reason to die (in
// the lab umpathd died of SIGPIPE, exit status 141, as an NVMe/TCP port went away: most
// likely the kernel host's inline send from our worker's task, without MSG_NOSIGNAL).

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

#include "agent/base/mutex.h"

namespace umpath::app {

class TerminationSignals {
 public:
  // `on_signal` runs on the signal thread when one arrives (a workload stops early).
  explicit TerminationSignals(std::function<void()> on_signal = nullptr);
  ~TerminationSignals();  // ends the wait if no signal came
  void Wait() {
    while (!signalled_.WaitFor(std::chrono::hours(24))) {
    }
  }
  int received() const { return signal_.load(); }  // 0: none (yet)

 private:
  std::function<void()> on_signal_;
  std::atomic<int> signal_{0};
  Notification signalled_;
  std::thread thread_;
};

}  // namespace umpath::app
