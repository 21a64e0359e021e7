#include "server/control_server.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "server/convert.h"
#include "server/metrics.h"
#include "server/rpc_interceptor.h"
#include "server/simulator_service.h"

namespace umpath::server {

namespace health = ::grpc::health::v1;

namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, absl::string_view what) {
  if (path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("tcp_address needs ", what, " (mTLS only)"));
  }
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  if (!in || text.str().empty()) {
    return absl::FailedPreconditionError(absl::StrCat("cannot read ", what, " ", path));
  }
  return text.str();
}

// libgrpc++_reflection registers its plugin for every ServerBuilder when it is loaded
// (a static initializer calls InitProtoReflectionServerBuilderPlugin), so a server
// gets reflection unless it takes the plugin out: this option puts exactly one in, or
// none.
class ReflectionOption final : public grpc::ServerBuilderOption {
 public:
  explicit ReflectionOption(bool on) : on_(on) {}
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->erase(std::remove_if(plugins->begin(), plugins->end(),
                                  [](const std::unique_ptr<grpc::ServerBuilderPlugin>& p) {
                                    return dynamic_cast<grpc::reflection::ProtoServerReflectionPlugin*>(
                                               p.get()) != nullptr;
                                  }),
                   plugins->end());
    if (on_) plugins->push_back(std::make_unique<grpc::reflection::ProtoServerReflectionPlugin>());
  }

 private:
  const bool on_;
};

// gRPC's sync server (reflection is a sync bidi stream) holds one OS thread per open
// call and has no limit of its own; past the quota a call is RESOURCE_EXHAUSTED. The
// callback services (ours, health) do not take from it.
void LimitSyncThreads(grpc::ServerBuilder& b, const std::string& name, int max_threads) {
  grpc::ResourceQuota quota(name);
  quota.SetMaxThreads(max_threads);
  b.SetResourceQuota(quota);  // takes a reference of its own
}

constexpr char kReflectionMethod[] = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
// The health server has no sync service: the quota is there should one ever be added.
constexpr int kHealthSyncThreads = 2;
// A HealthCheckRequest is a service name.
constexpr int kHealthMaxMessageBytes = 4096;

// Every server counts its calls by method; a path it does not serve is "unknown".
void Intercept(grpc::ServerBuilder& b, RpcStats* stats, const std::vector<std::string>& methods) {
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
  creators.push_back(MakeRpcInterceptorFactory(stats, methods));
  b.experimental().SetInterceptorCreators(std::move(creators));
}

}  // namespace

// grpc.health.v1 compiled from our copy of health.proto, so reflection describes it.
// Threading: gRPC threads call Check and Watch; SetServing comes from Shutdown.
class HealthService final : public health::Health::CallbackService {
 public:
  ~HealthService() override { SetServing(false); }

  void SetServing(bool serving) {
    MutexLock lock(&mu_);
    if (serving_ == serving) return;
    serving_ = serving;
    // Watchers are told, and on the way down their streams end so shutdown never waits.
    for (HealthWatch* w : watches_) w->Send(Status(), /*last=*/!serving);
    if (!serving) watches_.clear();
  }

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* ctx,
                                  const health::HealthCheckRequest* req,
                                  health::HealthCheckResponse* resp) override {
    grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
    if (!Known(req->service())) {
      r->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                             absl::StrCat("unknown service ", QuotePrefix(req->service()))));
      return r;
    }
    MutexLock lock(&mu_);
    resp->set_status(Status());
    r->Finish(grpc::Status::OK);
    return r;
  }

  grpc::ServerWriteReactor<health::HealthCheckResponse>* Watch(
      grpc::CallbackServerContext*, const health::HealthCheckRequest* req) override {
    auto* w = new HealthWatch(this);
    MutexLock lock(&mu_);
    if (!Known(req->service())) {
      // The protocol: an unknown service is reported, and the stream stays open.
      w->Send(health::HealthCheckResponse::SERVICE_UNKNOWN, false);
    } else {
      w->Send(Status(), /*last=*/!serving_);
    }
    if (serving_) watches_.push_back(w);
    return w;
  }

 private:
  // One Watch stream: at most one write in flight; the newest status wins.
  class HealthWatch final : public grpc::ServerWriteReactor<health::HealthCheckResponse> {
   public:
    explicit HealthWatch(HealthService* owner) : owner_(owner) {}
    void Send(health::HealthCheckResponse::ServingStatus status, bool last) {
      MutexLock lock(&mu_);
      if (finished_) return;
      pending_ = status;
      has_pending_ = true;
      finish_after_ = finish_after_ || last;
      Flush();
    }
    void OnWriteDone(bool ok) override {
      MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) return FinishOnce(grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed"));
      Flush();
    }
    void OnCancel() override {
      owner_->Forget(this);
      MutexLock lock(&mu_);
      FinishOnce(grpc::Status::CANCELLED);
    }
    void OnDone() override {
      owner_->Forget(this);
      delete this;
    }

   private:
    void Flush() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      if (writing_ || finished_) return;
      if (has_pending_) {
        has_pending_ = false;
        msg_.set_status(pending_);
        writing_ = true;
        StartWrite(&msg_);
        return;
      }
      if (finish_after_) FinishOnce(grpc::Status::OK);
    }
    void FinishOnce(const grpc::Status& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      if (finished_) return;
      finished_ = true;
      Finish(s);
    }

    HealthService* const owner_;
    Mutex mu_;
    health::HealthCheckResponse msg_ ABSL_GUARDED_BY(mu_);
    health::HealthCheckResponse::ServingStatus pending_ ABSL_GUARDED_BY(mu_) =
        health::HealthCheckResponse::UNKNOWN;
    bool has_pending_ ABSL_GUARDED_BY(mu_) = false;
    bool writing_ ABSL_GUARDED_BY(mu_) = false;
    bool finish_after_ ABSL_GUARDED_BY(mu_) = false;
    bool finished_ ABSL_GUARDED_BY(mu_) = false;
  };

  static bool Known(const std::string& service) {
    return service.empty() || service == "umpath.v1.MultipathControl";
  }
  health::HealthCheckResponse::ServingStatus Status() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return serving_ ? health::HealthCheckResponse::SERVING
                    : health::HealthCheckResponse::NOT_SERVING;
  }
  void Forget(HealthWatch* w) {
    MutexLock lock(&mu_);
    watches_.erase(std::remove(watches_.begin(), watches_.end(), w), watches_.end());
  }

  mutable Mutex mu_;
  bool serving_ ABSL_GUARDED_BY(mu_) = true;
  std::vector<HealthWatch*> watches_ ABSL_GUARDED_BY(mu_);
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

  grpc::ServerBuilder builder;
  builder.RegisterService(s->service_.get());
  builder.RegisterService(s->health_.get());
  builder.SetOption(std::make_unique<ReflectionOption>(true));
  LimitSyncThreads(builder, "umpathd-control", o.max_sync_threads);
  builder.SetMaxReceiveMessageSize(static_cast<int>(o.service.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(o.service.max_message_bytes));
  // Watch streams live long: keep their connections checked, and let clients do so.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, o.keepalive_time_ms);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  std::vector<std::string> methods = MethodPaths(v1::MultipathControl::service_full_name());
  const std::vector<std::string> health_methods = MethodPaths(health::Health::service_full_name());
  methods.insert(methods.end(), health_methods.begin(), health_methods.end());
  if (o.simulator != nullptr) {
    s->simulator_ = std::make_unique<SimulatorService>(s->access_.get(), o.simulator);
    builder.RegisterService(s->simulator_.get());
    const std::vector<std::string> sim_methods =
        MethodPaths(umpath::v1alpha::SimulatorControl::service_full_name());
    methods.insert(methods.end(), sim_methods.begin(), sim_methods.end());
  }
  methods.push_back(kReflectionMethod);
  Intercept(builder, o.rpc_stats, methods);
  if (!o.tcp_address.empty()) {
    absl::StatusOr<std::string> cert = ReadPem(o.tls_cert_file, "tls_cert_file");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPem(o.tls_key_file, "tls_key_file");
    if (!key.ok()) return key.status();
    absl::StatusOr<std::string> ca = ReadPem(o.tls_client_ca_file, "tls_client_ca_file");
    if (!ca.ok()) return ca.status();
    grpc::SslServerCredentialsOptions tls(
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    tls.pem_root_certs = *ca;
    tls.pem_key_cert_pairs.push_back({*key, *cert});
    builder.AddListeningPort(o.tcp_address, grpc::SslServerCredentials(tls), &s->tcp_port_);
  }
  s->server_ = builder.BuildAndStart();
  if (!s->server_) return absl::InternalError("the gRPC server did not start");
  if (!o.tcp_address.empty() && s->tcp_port_ == 0) {
    return absl::FailedPreconditionError(absl::StrCat("cannot listen on ", o.tcp_address));
  }
  if (!o.health_address.empty()) {
    // A server of its own: kubelet's probe has no certificate and must reach nothing else.
    grpc::ServerBuilder hb;
    s->probe_health_ = std::make_unique<HealthService>();  // a service serves one server
    hb.RegisterService(s->probe_health_.get());
    hb.SetOption(std::make_unique<ReflectionOption>(false));
    LimitSyncThreads(hb, "umpathd-health", kHealthSyncThreads);
    hb.SetMaxReceiveMessageSize(kHealthMaxMessageBytes);
    Intercept(hb, o.rpc_stats, health_methods);
    hb.AddListeningPort(o.health_address, grpc::InsecureServerCredentials(), &s->health_port_);
    s->health_server_ = hb.BuildAndStart();
    if (!s->health_server_ || s->health_port_ == 0) {
      return absl::FailedPreconditionError(absl::StrCat("cannot listen on ", o.health_address));
    }
  }
  s->listener_->Start(s->server_.get());
  return s;
}

ControlServer::ControlServer(ServerOptions options) : options_(std::move(options)) {}

ControlServer::~ControlServer() { Shutdown(); }

void ControlServer::AdoptMetrics(std::unique_ptr<MetricsEndpoint> metrics) {
  metrics_ = std::move(metrics);
}

void ControlServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  // Create may have failed part way: shut down what exists.
  if (health_) health_->SetServing(false);
  if (probe_health_) probe_health_->SetServing(false);
  if (listener_) listener_->Stop();
  if (service_) service_->FinishWatchers("the agent is shutting down");
  // Past the deadline gRPC cancels what is still in flight and closes the connections,
  // so a client that keeps its own open (or never reads) does not hold the agent.
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + options_.shutdown_grace);
    server_->Wait();
  }
  if (health_server_) {
    health_server_->Shutdown(std::chrono::system_clock::now() +
                             std::min<std::chrono::milliseconds>(options_.shutdown_grace,
                                                                 std::chrono::seconds(1)));
    health_server_->Wait();
  }
  metrics_.reset();
}

}  // namespace umpath::server
