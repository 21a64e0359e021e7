// umpathd: the node agent. Flags, or a config file of flags
// (--flagfile=/etc/umpath/umpathd.flags); everything else is the Agent's. It runs until
// SIGTERM (or SIGINT) or StopAgent, and exits 0, or 1 when it could not start, 2 on a
// bad configuration, 3 after StopAgent removed its block devices (kExitRemovedThroughApi).
#include <cstdio>
#include <string>

#include "absl/flags/parse.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "agent/app/agent.h"
#include "agent/app/config.h"
#include "agent/app/signals.h"
#include "agent/app/systemd_notify.h"
#include "agent/base/build_info.h"
#include "server/protobuf_log.h"

int main(int argc, char** argv) {
  // Debian's libabsl is built without NDEBUG, so absl::Mutex (every lock in gRPC) records
  // each acquisition in a process-wide lock graph to detect deadlocks: about 5% of the
  // agent's CPU when it fans events out to 1,000 watchers (perf, umpath_server_bench).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  absl::FlagsUsageConfig usage;
  usage.version_string = [] {
    return absl::StrCat("umpathd ", umpath::kBuildVersion, " (revision ", umpath::kBuildRevision, ")\n");
  };
  absl::SetFlagsUsageConfig(usage);
  absl::ParseCommandLine(argc, argv);
  // Before any thread parses a request: a caller's non-UTF-8 strings would each log a
  // libprotobuf ERROR line otherwise.
  umpath::server::LimitProtobufLog(
      [](const std::string& line) { std::fprintf(stderr, "umpathd: %s\n", line.c_str()); });
  umpath::app::TerminationSignals signals;  // before any other thread
  const umpath::app::SystemdNotifier systemd = umpath::app::SystemdNotifier::FromEnvironment();
  absl::StatusOr<umpath::app::AgentConfig> config = umpath::app::AgentConfigFromFlags();
  if (!config.ok()) {
    std::fprintf(stderr, "umpathd: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  const bool linger = config->linger_after_handover;
  absl::StatusOr<std::unique_ptr<umpath::app::Agent>> agent = umpath::app::Agent::Create(
      *std::move(config), {.on_stop_requested = [&signals] { signals.EndWait(); }});
  if (!agent.ok()) {
    std::fprintf(stderr, "umpathd: %s\n", std::string(agent.status().message()).c_str());
    return absl::IsInvalidArgument(agent.status()) ? 2 : 1;
  }
  umpath::app::Agent& a = **agent;
  if (systemd.watchdog_every().count() > 0) {
    a.KeepAlive(systemd.watchdog_every(), [&systemd, &a] { systemd.Watchdog(a.StatusLine()); });
  }
  // Created: the socket listens, the kept settings are loaded.
  if (systemd.enabled()) systemd.Ready(a.StatusLine());
  signals.Wait();
  const umpath::app::StopChoice::Decided stop = a.DecideStop(absl::StrCat("signal ", signals.received()));
  systemd.Stopping(absl::StrCat("stopping: ", stop.by, " (block devices: ",
                                umpath::ublk::StopModeName(stop.mode), ")"));
  std::fprintf(stderr, "umpathd: %s, shutting down (block devices: %s)\n", stop.by.c_str(),
               std::string(umpath::ublk::StopModeName(stop.mode)).c_str());
  agent->reset();  // the Agent stops
  if (stop.for_successor && linger) {
    std::fprintf(stderr, "umpathd: handed over to a successor; waiting for SIGTERM (--linger_after_handover)\n");
    signals.WaitForSignal();
  }
  return stop.exit_status();
}
