// umpathctl: the command line for umpathd's control API. `umpathctl help` lists commands.
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "client/ctl.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, socket, "/run/umpath/umpathd.sock", "umpathd's Unix socket");
ABSL_FLAG(std::string, o, "table", "output: table or json (protobuf's JSON mapping)");

int main(int argc, char** argv) {
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  std::vector<std::string> args(positional.begin() + 1, positional.end());
  umpath::client::CtlOptions options;
  const std::string format = absl::GetFlag(FLAGS_o);
  if (format != "table" && format != "json") {
    std::cerr << "umpathctl: -o must be table or json\n";
    return 2;
  }
  options.json = format == "json";
  // Watch streams get a channel of their own (see ctl.h); one command, one channel.
  auto channel = grpc::CreateChannel("unix:" + absl::GetFlag(FLAGS_socket),
                                     grpc::InsecureChannelCredentials());
  auto stub = umpath::v1::MultipathControl::NewStub(channel);
  return umpath::client::RunCommand(stub.get(), args, options, std::cout, std::cerr);
}
