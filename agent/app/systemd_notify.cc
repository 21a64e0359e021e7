#include "agent/app/systemd_notify.h"

#include <systemd/sd-daemon.h>

#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace umpath::app {

SystemdNotifier SystemdNotifier::FromEnvironment() {
  SystemdNotifier n;
  const char* socket = std::getenv("NOTIFY_SOCKET");
  n.enabled_ = socket != nullptr && socket[0] != '\0';
  uint64_t usec = 0;
  if (n.enabled_ && sd_watchdog_enabled(/*unset_environment=*/0, &usec) > 0 && usec > 0) {
    // systemd's own advice (sd_watchdog_enabled(3)): ping at half the interval, so one
    // late timer does not cost a restart.
    n.watchdog_every_ = std::chrono::microseconds(usec / 2);
  }
  return n;
}

void SystemdNotifier::Send(const std::string& state) const {
  if (!enabled_) return;
  // A failure to notify is not the agent's failure: systemd says itself what it missed
  // (a start that times out, a watchdog that fires).
  if (const int r = sd_notify(/*unset_environment=*/0, state.c_str()); r < 0) {
    std::fprintf(stderr, "umpathd: sd_notify: error %d\n", -r);
  }
}

namespace {
// One line: STATUS= ends at the newline.
std::string StatusField(absl::string_view status) {
  return absl::StrCat("STATUS=", absl::StrReplaceAll(status, {{"\n", " "}}));
}
}  // namespace

void SystemdNotifier::Ready(absl::string_view status) const {
  Send(absl::StrCat("READY=1\n", StatusField(status)));
}

void SystemdNotifier::Watchdog(absl::string_view status) const {
  Send(absl::StrCat("WATCHDOG=1\n", StatusField(status)));
}

void SystemdNotifier::Stopping(absl::string_view status) const {
  Send(absl::StrCat("STOPPING=1\n", StatusField(status)));
}

}  // namespace umpath::app
