// umpathctl: the command line for umpathd's control API. `umpathctl help` lists commands.
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/ctl.h"
#include "grpcpp/grpcpp.h"

namespace {

using umpath::client::ConnectFlags;
using umpath::client::Connection;

// Each channel has its own subchannels: a watch that reconnects after an agent restart
// gets a fresh one, not one still backing off from the attempts made while no agent
// listened (gRPC's reconnect backoff grows to seconds after a few failures).
grpc::ChannelArguments ChannelArgs() {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return args;
}

bool Slurp(const std::string& path, std::string* out) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return in.good() || !out->empty();
}

// One command, one channel; a watch makes a new one for each reconnect.
absl::StatusOr<Connection> Connect(const ConnectFlags& flags) {
  std::function<std::shared_ptr<grpc::Channel>()> make_channel;
  if (!flags.address.empty()) {
    grpc::SslCredentialsOptions tls;
    if (!Slurp(flags.tls_cert_file, &tls.pem_cert_chain) ||
        !Slurp(flags.tls_key_file, &tls.pem_private_key) ||
        !Slurp(flags.tls_ca_file, &tls.pem_root_certs)) {
      return absl::InvalidArgumentError(
          "--address needs readable --tls_cert_file, --tls_key_file and --tls_ca_file");
    }
    make_channel = [flags, tls] {
      grpc::ChannelArguments args = ChannelArgs();
      if (!flags.tls_server_name.empty())
        args.SetSslTargetNameOverride(flags.tls_server_name);
      return grpc::CreateCustomChannel(flags.address, grpc::SslCredentials(tls), args);
    };
  } else {
    make_channel = [socket = flags.socket] {
      return grpc::CreateCustomChannel("unix:" + socket,
                                       grpc::InsecureChannelCredentials(), ChannelArgs());
    };
  }
  std::shared_ptr<grpc::Channel> channel = make_channel();
  Connection c;
  c.stub = umpath::v1::MultipathControl::NewStub(channel);
  c.simulator = umpath::v1alpha::SimulatorControl::NewStub(channel);
  c.reconnect =
      [make_channel]() -> std::unique_ptr<umpath::v1::MultipathControl::StubInterface> {
    return umpath::v1::MultipathControl::NewStub(make_channel());
  };
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  return umpath::client::RunCommandLine(std::vector<std::string>(argv, argv + argc),
                                        Connect, std::cout, std::cerr);
}
