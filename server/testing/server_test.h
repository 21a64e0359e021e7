#pragma once

// The fixture of the server's tests (control_server_test.cc, watch_test.cc): the real
// server on a real Unix socket over a core with three heads on two controllers, driven
// by a real gRPC client.

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "agent/base/status_matchers.h"
#include "agent/core/multipath.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/client_unary_call.h"
#include "gtest/gtest.h"
#include "server/control_server.h"
#include "server/testing/test_topology.h"
#include "umpath/v1/control.grpc.pb.h"

namespace umpath::server {

// One unary call to any path with any body, as a client that owes the server nothing.
inline grpc::Status RawCall(grpc::Channel* channel, const std::string& path, const std::string& body) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  grpc::Slice slice(body);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  return grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
      channel, grpc::internal::RpcMethod(path.c_str(), grpc::internal::RpcMethod::NORMAL_RPC),
      &ctx, request, &response);
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/umpath-server-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    MultipathOptions mo;
    mo.journal_capacity = 64;
    mo.incarnation = "00000000000000aa";
    ASSERT_OK_AND_ASSIGN(mp_, Multipath::Create(mo));
    ASSERT_OK(testing::AddTestTopology(mp_.get(), 2, 3));
    head_ = "heads/nguid-ab000000000000000000000000000001";
  }
  void TearDown() override {
    server_.reset();
    mp_.reset();
    std::filesystem::remove_all(dir_);
  }

  void Start(AccessConfig access = Self(Role::kAdmin),
             std::chrono::milliseconds progress = std::chrono::milliseconds(10000),
             size_t queue_limit = 4096, std::function<void(ServerOptions&)> tweak = nullptr) {
    ServerOptions o;
    o.socket_path = dir_ + "/umpathd.sock";
    o.access = std::move(access);
    o.service.node = "node-a";
    o.service.watch.progress_interval = progress;
    o.service.watch.queue_limit = queue_limit;
    if (tweak) tweak(o);
    ASSERT_OK_AND_ASSIGN(server_, ControlServer::Create(mp_.get(), std::move(o), settings_));
    channel_ = grpc::CreateChannel("unix:" + server_->socket_path(),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::MultipathControl::NewStub(channel_);
  }

  static AccessConfig Self(Role role) {
    AccessConfig a;
    a.admin_uids.clear();
    if (role == Role::kAdmin) a.admin_uids.push_back(getuid());
    if (role == Role::kViewer) a.viewer_uids.push_back(getuid());
    return a;
  }

  template <typename Req, typename Resp>
  grpc::Status Call(grpc::Status (v1::MultipathControl::Stub::*m)(grpc::ClientContext*,
                                                                   const Req&, Resp*),
                    const Req& req, Resp* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return (stub_.get()->*m)(&ctx, req, resp);
  }

  v1::Head GetHead(const std::string& name) {
    v1::GetHeadRequest req;
    req.set_name(name);
    v1::GetHeadResponse resp;
    EXPECT_TRUE(Call(&v1::MultipathControl::Stub::GetHead, req, &resp).ok());
    return resp.head();
  }

  grpc::Status SetDelay(const std::string& head, int64_t secs) {
    v1::SetDelayedRemovalRequest req;
    req.set_name(head);
    req.set_delayed_removal_secs(secs);
    v1::SetDelayedRemovalResponse resp;
    return Call(&v1::MultipathControl::Stub::SetDelayedRemoval, req, &resp);
  }

  std::string dir_;
  SettingsListener* settings_ = nullptr;  // the server's, when a test keeps settings
  std::unique_ptr<Multipath> mp_;
  std::string head_;
  std::unique_ptr<ControlServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::MultipathControl::Stub> stub_;
};

}  // namespace umpath::server
