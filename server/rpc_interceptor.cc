#include "server/rpc_interceptor.h"

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/support/status.h"
#include "server/convert.h"
#include "server/metrics.h"

namespace umpath::server {

namespace {

using grpc::experimental::InterceptionHookPoints;

// One call: counted once, when its status is sent.
class RpcInterceptor final : public grpc::experimental::Interceptor {
 public:
  // `method`: the label, "unknown" for a path this server does not serve (then `path`
  // is what the caller sent, for the log).
  RpcInterceptor(RpcStats* stats, std::string method, std::string path)
      : stats_(stats), method_(std::move(method)), path_(std::move(path)) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* m) override {
    if (m->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      grpc::Status st = m->GetSendStatus();
      const bool known = method_ != kUnknownMethod;
      // Every handler of ours says why it fails; gRPC's own UNIMPLEMENTED without a
      // message is an unknown path or a request its handler could not parse.
      if (st.error_code() == grpc::StatusCode::UNIMPLEMENTED && st.error_message().empty()) {
        st = known ? ToGrpc(WithReason(absl::InvalidArgumentError(absl::StrCat(
                                           "the request is not a valid ", method_,
                                           " request (not protobuf, or a string field that is not UTF-8)")),
                                       reason::kInvalidRequest, {{"method", method_}}))
                   : ToGrpc(WithReason(absl::UnimplementedError("unknown method"), reason::kMethodUnknown));
        m->ModifySendStatus(st);
      } else if (!st.ok() && st.error_details().empty()) {
        // Every error has its ErrorInfo (AIP-193), also one this server's other services
        // (health, reflection) or gRPC made.
        st = WithErrorInfo(st);
        m->ModifySendStatus(st);
      }
      if (stats_ != nullptr) {
        stats_->Count(method_, st.error_code(),
                      known ? st.error_message() : absl::StrCat("path ", QuotePrefix(path_)));
      }
    }
    m->Proceed();
  }

 private:
  RpcStats* const stats_;
  const std::string method_;
  const std::string path_;
};

class RpcInterceptorFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  RpcInterceptorFactory(RpcStats* stats, const std::vector<std::string>& methods) : stats_(stats) {
    for (const std::string& path : methods) {
      // "/umpath.v1.MultipathControl/GetHead" -> "GetHead".
      names_[path] = path.substr(path.rfind('/') + 1);
    }
  }
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    const absl::string_view path = info->method() ? info->method() : "";
    if (auto it = names_.find(path); it != names_.end()) {
      return new RpcInterceptor(stats_, it->second, "");
    }
    // Only a bounded prefix of the caller's path is kept.
    return new RpcInterceptor(stats_, std::string(kUnknownMethod),
                              std::string(path.substr(0, 256)));
  }

 private:
  RpcStats* const stats_;
  absl::flat_hash_map<std::string, std::string> names_;  // full path -> label
};

}  // namespace

std::vector<std::string> MethodPaths(absl::string_view service) {
  std::vector<std::string> paths;
  const google::protobuf::ServiceDescriptor* d =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(std::string(service));
  if (d == nullptr) return paths;
  for (int i = 0; i < d->method_count(); ++i) {
    paths.push_back(absl::StrCat("/", service, "/", d->method(i)->name()));
  }
  return paths;
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeRpcInterceptorFactory(
    RpcStats* stats, const std::vector<std::string>& methods) {
  return std::make_unique<RpcInterceptorFactory>(stats, methods);
}

}  // namespace umpath::server
