#pragma once

// umpathctl's command line, as a library so tests can run it against a real server.

#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/output.h"
#include "umpath/v1/control.grpc.pb.h"
#include "umpath/v1alpha/simulator.grpc.pb.h"

namespace umpath::client {

struct CtlOptions {
  // The command line's -o, --no-headers and --timeout win over these.
  Format format = Format::kTable;
  bool no_headers = false;
  // The deadline of each call; zero: 30 s, and none for a watch.
  absl::Duration timeout = absl::ZeroDuration();
  // watch: reconnect after a dropped stream, from the last revision seen.
  int watch_reconnects = 1000;
  // watch: stop after this many events (0: never); for tests and scripts.
  int watch_max_events = 0;
  // watch: a new connection to the agent for each reconnect (empty: the same stub).
  std::function<std::unique_ptr<v1::MultipathControl::StubInterface>()> reconnect;
  // sim: the simulator's service on the same connection (none: `sim` is unavailable).
  v1alpha::SimulatorControl::StubInterface* simulator = nullptr;
};

// Runs one command line without umpathctl's name (args[0] is usually the command; the
// global flags may come before or after it, those that say where to connect are
// ignored: `stub` is the connection). Writes results to `out`, errors to `err` as
// "umpathctl: CODE: message". Returns the process exit code: 0, 2 for usage errors, 1
// for local errors, or the gRPC status code of the failed call.
int RunCommand(v1::MultipathControl::StubInterface* stub,
               const std::vector<std::string>& args, const CtlOptions& options,
               std::ostream& out, std::ostream& err);

// Where umpathctl's global flags say to connect.
struct ConnectFlags {
  std::string socket = "/run/umpath/umpathd.sock";
  std::string address;  // host:port of the mTLS listener instead of the socket
  std::string tls_cert_file, tls_key_file, tls_ca_file, tls_server_name;
};

// A connection made from ConnectFlags.
struct Connection {
  std::unique_ptr<v1::MultipathControl::StubInterface> stub;
  std::unique_ptr<v1alpha::SimulatorControl::StubInterface> simulator;
  // A new connection (a watch makes one for each reconnect).
  std::function<std::unique_ptr<v1::MultipathControl::StubInterface>()> reconnect;
};
using Connector = std::function<absl::StatusOr<Connection>(const ConnectFlags&)>;

// umpathctl's main: parses argv (argv[0] is the program), connects with `connect`
// unless the command needs no agent (help, completion), and runs the command.
int RunCommandLine(const std::vector<std::string>& argv, const Connector& connect,
                   std::ostream& out, std::ostream& err);

}  // namespace umpath::client
