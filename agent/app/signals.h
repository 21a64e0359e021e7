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

// Threading: made, waited for and destroyed on one thread; EndWait from any.
class TerminationSignals {
 public:
  // `on_signal` runs on the signal thread when one arrives (a workload stops early).
  explicit TerminationSignals(std::function<void()> on_signal = nullptr);
  ~TerminationSignals();  // ends the wait if no signal came
  // Until a signal comes, or EndWait.
  void Wait() {
    while (!signalled_.WaitFor(std::chrono::hours(24))) {
    }
  }
  // Any thread: Wait returns as after a signal (a stop asked through the API); a signal
  // that comes later is taken and changes nothing.
  void EndWait();
  int received() const { return signal_.load(); }  // 0: none (yet, or EndWait came first)
  // Until a signal has come, before or after EndWait.
  void WaitForSignal() {
    while (!done_.WaitFor(std::chrono::hours(24))) {
    }
  }

 private:
  std::function<void()> on_signal_;
  std::atomic<bool> ended_{false};  // a signal or EndWait came: the first one counts
  std::atomic<int> signal_{0};
  Notification signalled_;
  Notification done_;  // the signal thread's sigwait returned
  std::thread thread_;
};

}  // namespace umpath::app
