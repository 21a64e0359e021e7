#include "server/control_server.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"

namespace umpath::server {

namespace health = ::grpc::health::v1;

// grpc.health.v1 compiled from our copy of health.proto, so reflection describes it.
// Threading: status_ is read by gRPC threads and written by Shutdown.
class HealthService final : public health::Health::CallbackService {
 public:
  void SetServing(bool serving) { serving_.store(serving); }

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* ctx,
                                  const health::HealthCheckRequest* req,
                                  health::HealthCheckResponse* resp) override {
    grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
    if (!req->service().empty() && req->service() != "umpath.v1.MultipathControl") {
      r->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                             absl::StrCat("unknown service \"", req->service(), "\"")));
      return r;
    }
    resp->set_status(serving_.load() ? health::HealthCheckResponse::SERVING
                                     : health::HealthCheckResponse::NOT_SERVING);
    r->Finish(grpc::Status::OK);
    return r;
  }

 private:
  std::atomic<bool> serving_{true};
};

absl::StatusOr<std::unique_ptr<ControlServer>> ControlServer::Create(Multipath* mp,
                                                                     ServerOptions options,
                                                                     SettingsListener* settings) {
  std::unique_ptr<ControlServer> s(new ControlServer(std::move(options)));
  const ServerOptions& o = s->options_;
  s->access_ = std::make_unique<AccessPolicy>(o.access, &s->peers_);
  s->service_ = std::make_unique<ControlService>(mp, s->access_.get(), o.service, settings);
  s->health_ = std::make_unique<HealthService>();
  absl::StatusOr<std::unique_ptr<UnixListener>> listener =
      UnixListener::Create(o.socket_path, o.socket_mode, o.socket_gid, &s->peers_);
  if (!listener.ok()) return listener.status();
  s->listener_ = std::move(*listener);

  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.RegisterService(s->service_.get());
  builder.RegisterService(s->health_.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(o.service.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(o.service.max_message_bytes));
  // Watch streams live long: keep their connections checked, and let clients do so.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, o.keepalive_time_ms);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  s->server_ = builder.BuildAndStart();
  if (!s->server_) return absl::InternalError("the gRPC server did not start");
  s->listener_->Start(s->server_.get());
  return s;
}

ControlServer::ControlServer(ServerOptions options) : options_(std::move(options)) {}

ControlServer::~ControlServer() { Shutdown(); }

void ControlServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  // Create may have failed part way: shut down what exists.
  if (health_) health_->SetServing(false);
  if (listener_) listener_->Stop();
  if (service_) service_->FinishWatchers("the agent is shutting down");
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    server_->Wait();
  }
}

}  // namespace umpath::server
