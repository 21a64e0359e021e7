#pragma once

// What umpathd tells systemd (sd_notify(3)) when its unit is Type=notify:
//   READY=1 once the control socket listens and the kept state is loaded, so units
//     ordered After=umpathd.service find it answering;
//   WATCHDOG=1 from the control thread, every half of WatchdogSec=: a control thread
//     that hangs (a lock, a syscall that never returns) gets the agent restarted;
//   STOPPING=1 when a stop begins (a signal, StopAgent, a successor taking over), so
//     systemd counts TimeoutStopSec= from there;
//   STATUS= lines on each, for `systemctl status`.
// Outside systemd (no NOTIFY_SOCKET) nothing is sent and no timer runs.

#include <chrono>
#include <string>

#include "absl/strings/string_view.h"

namespace umpath::app {

// Threading: any thread; each message is one datagram of its own (sd_notify keeps no
// state), and the fields are set once, before threads start.
class SystemdNotifier {
 public:
  // Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID; leaves them set.
  static SystemdNotifier FromEnvironment();

  bool enabled() const { return enabled_; }
  // Half of WatchdogSec= as sd_watchdog_enabled reports it for this process (WATCHDOG_PID,
  // when set, must be this pid); zero when the watchdog is off.
  std::chrono::microseconds watchdog_every() const { return watchdog_every_; }

  void Ready(absl::string_view status) const;
  void Watchdog(absl::string_view status) const;
  void Stopping(absl::string_view status) const;

 private:
  void Send(const std::string& state) const;
  bool enabled_ = false;
  std::chrono::microseconds watchdog_every_{0};
};

}  // namespace umpath::app
