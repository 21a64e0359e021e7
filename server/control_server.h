#pragma once

// The agent's gRPC servers: the control service, health and reflection on the Unix
// socket (and the mTLS TCP port); grpc.health.v1 alone on the plaintext health port.

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "agent/core/multipath.h"
#include "server/access.h"
#include "server/control_service.h"
#include "server/unix_listener.h"

namespace grpc {
class Server;
}

namespace umpath::server {

class HealthService;
class MetricsEndpoint;
class RpcStats;
class SimulatorOps;
class SimulatorService;

struct ServerOptions {
  std::string socket_path = "/run/umpath/umpathd.sock";
  mode_t socket_mode = 0660;
  gid_t socket_gid = static_cast<gid_t>(-1);  // -1: the agent's own group
  AccessConfig access;
  // Optional TCP listener for remote callers, mTLS only: every field below must be set,
  // and a client without a certificate signed by tls_client_ca_file is refused.
  std::string tcp_address;  // e.g. "0.0.0.0:7443"; port 0 picks one (see tcp_port())
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  // Optional plaintext TCP port serving grpc.health.v1 only, for kubelet probes.
  std::string health_address;
  ServiceOptions service;
  int keepalive_time_ms = 30000;
  // Threads gRPC's sync server may take (reflection, a sync bidi stream, holds one per
  // open stream; our services are callback-based and take none): past it a call is
  // RESOURCE_EXHAUSTED. A human's grpcurl or buf curl opens one stream at a time.
  int max_sync_threads = 8;
  // How long Shutdown lets calls in flight finish before it cancels them and closes
  // every connection, however a client behaves (the health port: at most 1 s of it).
  std::chrono::milliseconds shutdown_grace{5000};
  // Counts every finished RPC by method and code (the metrics); none: not counted.
  RpcStats* rpc_stats = nullptr;
  // The simulated backend's faults (umpath.v1alpha.SimulatorControl), served only when
  // the agent runs one (--sim).
  SimulatorOps* simulator = nullptr;
};

// Threading: Create and Shutdown from one thread; the rest is gRPC's.
class ControlServer {
 public:
  static absl::StatusOr<std::unique_ptr<ControlServer>> Create(Multipath* mp,
                                                               ServerOptions options,
                                                               SettingsListener* settings = nullptr);
  ~ControlServer();

  // The metrics endpoint, which reads the service: it is stopped last by Shutdown.
  void AdoptMetrics(std::unique_ptr<MetricsEndpoint> metrics);

  // Health NOT_SERVING, every watcher finished with a resume point, the server shut down
  // with a deadline, the socket removed, and only then the metrics endpoint stopped (its
  // HTTP server takes up to 2 s to stop, which must not keep health SERVING and watchers
  // open). Never hangs; idempotent.
  void Shutdown();
  const std::string& socket_path() const { return options_.socket_path; }
  int tcp_port() const { return tcp_port_; }
  int health_port() const { return health_port_; }
  ControlService& service() { return *service_; }

 private:
  explicit ControlServer(ServerOptions options);

  const ServerOptions options_;
  PeerTable peers_;
  std::unique_ptr<AccessPolicy> access_;
  std::unique_ptr<ControlService> service_;
  std::unique_ptr<HealthService> health_;
  std::unique_ptr<SimulatorService> simulator_;
  std::unique_ptr<HealthService> probe_health_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<grpc::Server> health_server_;
  int tcp_port_ = 0;
  int health_port_ = 0;
  std::unique_ptr<UnixListener> listener_;
  std::unique_ptr<MetricsEndpoint> metrics_;
  bool shut_down_ = false;
};

}  // namespace umpath::server
