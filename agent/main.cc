// umpathd: the node agent. Flags, or a config file of flags
// (--flagfile=/etc/umpath/umpathd.flags); everything else is the Agent's.
#include <cstdio>
#include <string>

#include "absl/flags/parse.h"
#include "agent/app/agent.h"
#include "agent/app/config.h"
#include "agent/app/signals.h"

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  umpath::app::TerminationSignals signals;  // before any other thread
  absl::StatusOr<umpath::app::AgentConfig> config = umpath::app::AgentConfigFromFlags();
  if (!config.ok()) {
    std::fprintf(stderr, "umpathd: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  absl::StatusOr<std::unique_ptr<umpath::app::Agent>> agent =
      umpath::app::Agent::Create(*std::move(config));
  if (!agent.ok()) {
    std::fprintf(stderr, "umpathd: %s\n", std::string(agent.status().message()).c_str());
    return absl::IsInvalidArgument(agent.status()) ? 2 : 1;
  }
  signals.Wait();
  std::fprintf(stderr, "umpathd: signal %d, shutting down\n", signals.received());
  return 0;  // the Agent stops as it goes out of scope
}
