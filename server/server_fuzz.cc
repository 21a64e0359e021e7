// libFuzzer: arbitrary method paths and bodies through the real server, over its real
// Unix socket (accept, peer credentials, interceptor, handlers, core). Nothing may
// crash; every answer's message stays bounded; a path no service serves is
// UNIMPLEMENTED; the series of umpath_rpcs_total stay bounded by the methods served.
//
// Input: byte 0 picks the path (a served method, or the next byte's count of bytes as
// a path of the caller's own), the rest is the body.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/client_unary_call.h"
#include "server/control_server.h"
#include "server/metrics.h"
#include "server/protobuf_log.h"
#include "server/rpc_interceptor.h"
#include "server/testing/test_topology.h"

namespace {

using namespace umpath;
using namespace umpath::server;

struct Fixture {
  std::unique_ptr<Multipath> mp;
  RpcStats stats;
  std::unique_ptr<ControlServer> server;
  std::shared_ptr<grpc::Channel> channel;
  std::vector<std::string> methods;
};

Fixture* TheFixture() {
  static Fixture* f = [] {
    auto* fx = new Fixture();  // lives as long as the process
    auto mp = Multipath::Create(MultipathOptions{});
    if (!mp.ok()) std::abort();
    fx->mp = std::move(*mp);
    if (!testing::AddTestTopology(fx->mp.get(), 2, 3).ok()) std::abort();
    char dir[] = "/tmp/umpath-server-fuzz-XXXXXX";
    if (mkdtemp(dir) == nullptr) std::abort();
    ServerOptions o;
    o.socket_path = std::string(dir) + "/umpathd.sock";
    o.access.admin_uids = {getuid()};
    o.rpc_stats = &fx->stats;
    auto server = ControlServer::Create(fx->mp.get(), std::move(o));
    if (!server.ok()) std::abort();
    fx->server = std::move(*server);
    fx->channel = grpc::CreateChannel("unix:" + fx->server->socket_path(),
                                      grpc::InsecureChannelCredentials());
    fx->methods = MethodPaths("umpath.v1.MultipathControl");
    for (const std::string& m : MethodPaths("grpc.health.v1.Health")) fx->methods.push_back(m);
    return fx;
  }();
  return f;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  LimitProtobufLog([](const std::string&) {});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  Fixture* fx = TheFixture();
  std::string path;
  size_t at = 1;
  bool own = false;
  if (data[0] < fx->methods.size()) {
    path = fx->methods[data[0]];
  } else {
    const size_t n = std::min<size_t>(data[1], size - 2);
    path = "/" + std::string(reinterpret_cast<const char*>(data) + 2, n);
    at = 2 + n;
    own = true;
  }
  // Streams (WatchEvents, health Watch) answered as one message: a short deadline ends them.
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
  grpc::Slice body(std::string(reinterpret_cast<const char*>(data) + at, size - at));
  grpc::ByteBuffer request(&body, 1), response;
  const grpc::Status s = grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
      fx->channel.get(), grpc::internal::RpcMethod(path.c_str(), grpc::internal::RpcMethod::NORMAL_RPC),
      &ctx, request, &response);
  if (s.error_message().size() > 1024) std::abort();
  // A path of the caller's own that names no served method is never answered OK.
  if (own && s.ok() &&
      std::find(fx->methods.begin(), fx->methods.end(), path) == fx->methods.end() &&
      path != "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") {
    std::abort();
  }
  // Every served method (19 + 2 + reflection) times the codes, plus "unknown".
  if (fx->stats.Rows().size() > 24 * 17 + 17) std::abort();
  return 0;
}
