#pragma once

// umpathctl's commands, as a library so tests can run them against a real server.

#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "umpath/v1/control.grpc.pb.h"
#include "umpath/v1alpha/simulator.grpc.pb.h"

namespace umpath::client {

struct CtlOptions {
  bool json = false;  // protobuf's JSON mapping instead of tables
  // watch: reconnect after a dropped stream, from the last revision seen.
  int watch_reconnects = 1000;
  // watch: stop after this many events (0: never); for tests and scripts.
  int watch_max_events = 0;
  // watch: a new connection to the agent for each reconnect (empty: the same stub).
  std::function<std::unique_ptr<v1::MultipathControl::StubInterface>()> reconnect;
  // sim: the simulator's service on the same connection (none: `sim` is unavailable).
  v1alpha::SimulatorControl::StubInterface* simulator = nullptr;
};

// Runs one command (args[0] is its name). Writes results to `out`, errors to `err` as
// "umpathctl: CODE: message". Returns the process exit code: 0, 2 for usage errors, or
// the gRPC status code of the failed call.
int RunCommand(v1::MultipathControl::StubInterface* stub, const std::vector<std::string>& args,
               const CtlOptions& options, std::ostream& out, std::ostream& err);

// The text `umpathctl help` prints.
std::string Usage();

// Where the command begins in argv: after umpathctl's own flags (absl parses those),
// each as --name=VALUE, or --name VALUE (-o json) where it is not a bool. What follows
// is the command's, its flags too (watch --since=N), which absl would refuse.
int CommandStart(int argc, char** argv);

}  // namespace umpath::client
