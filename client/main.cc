// umpathctl: the command line for umpathd's control API. `umpathctl help` lists commands.
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "client/ctl.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, socket, "/run/umpath/umpathd.sock", "umpathd's Unix socket");
ABSL_FLAG(std::string, address, "",
          "host:port of umpathd's mTLS listener instead of the socket (with the --tls_* files)");
ABSL_FLAG(std::string, tls_cert_file, "", "this client's certificate (PEM), for --address");
ABSL_FLAG(std::string, tls_key_file, "", "its private key (PEM)");
ABSL_FLAG(std::string, tls_ca_file, "", "the CA (PEM) the server's certificate chains to");
ABSL_FLAG(std::string, tls_server_name, "", "the name to expect in the server's certificate");
ABSL_FLAG(std::string, o, "table", "output: table or json (protobuf's JSON mapping)");

// Each channel has its own subchannels: a watch that reconnects after an agent restart
// gets a fresh one, not one still backing off from the attempts made while no agent
// listened (gRPC's reconnect backoff grows to seconds after a few failures).
static grpc::ChannelArguments ChannelArgs() {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return args;
}

int main(int argc, char** argv) {
  // umpathctl's flags come before the command; those after it are the command's.
  const int command = umpath::client::CommandStart(argc, argv);
  std::vector<char*> own(argv, argv + command);
  if (command > 1 && std::string(argv[command - 1]) == "--") own.pop_back();
  absl::ParseCommandLine(static_cast<int>(own.size()), own.data());
  std::vector<std::string> args(argv + command, argv + argc);
  umpath::client::CtlOptions options;
  const std::string format = absl::GetFlag(FLAGS_o);
  if (format != "table" && format != "json") {
    std::cerr << "umpathctl: -o must be table or json\n";
    return 2;
  }
  options.json = format == "json";
  // One command, one channel; a watch makes a new one for each reconnect.
  std::function<std::shared_ptr<grpc::Channel>()> make_channel;
  if (const std::string address = absl::GetFlag(FLAGS_address); !address.empty()) {
    auto slurp = [](const std::string& path, std::string* out) {
      std::ifstream in(path);
      std::stringstream ss;
      ss << in.rdbuf();
      *out = ss.str();
      return in.good() || !out->empty();
    };
    grpc::SslCredentialsOptions tls;
    if (!slurp(absl::GetFlag(FLAGS_tls_cert_file), &tls.pem_cert_chain) ||
        !slurp(absl::GetFlag(FLAGS_tls_key_file), &tls.pem_private_key) ||
        !slurp(absl::GetFlag(FLAGS_tls_ca_file), &tls.pem_root_certs)) {
      std::cerr << "umpathctl: --address needs readable --tls_cert_file, --tls_key_file and "
                   "--tls_ca_file\n";
      return 2;
    }
    make_channel = [address, tls] {
      grpc::ChannelArguments args = ChannelArgs();
      if (!absl::GetFlag(FLAGS_tls_server_name).empty()) {
        args.SetSslTargetNameOverride(absl::GetFlag(FLAGS_tls_server_name));
      }
      return grpc::CreateCustomChannel(address, grpc::SslCredentials(tls), args);
    };
  } else {
    make_channel = [socket = absl::GetFlag(FLAGS_socket)] {
      return grpc::CreateCustomChannel("unix:" + socket, grpc::InsecureChannelCredentials(),
                                       ChannelArgs());
    };
  }
  options.reconnect = [make_channel]() -> std::unique_ptr<umpath::v1::MultipathControl::StubInterface> {
    return umpath::v1::MultipathControl::NewStub(make_channel());
  };
  std::shared_ptr<grpc::Channel> channel = make_channel();
  auto stub = umpath::v1::MultipathControl::NewStub(channel);
  auto simulator = umpath::v1alpha::SimulatorControl::NewStub(channel);
  options.simulator = simulator.get();
  return umpath::client::RunCommand(stub.get(), args, options, std::cout, std::cerr);
}
