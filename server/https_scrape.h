#pragma once

// Metrics over HTTPS (issue 17 item 9): a small HTTP/1.x server for GET /metrics only,
// TLS by OpenSSL, one connection at a time on its own thread.
//
// Not civetweb's TLS: Debian 12's civetweb 1.15 loads OpenSSL by name at run time
// (libssl.so, only with libssl-dev) and looks up SSL_get_peer_certificate, which
// OpenSSL 3 no longer exports; the pointer stays null and its worker crashes on the
// first TLS connection. This one links libssl.so.3 as gRPC does.
//
// A connection gets 5 s for its handshake and request and for the answer to be taken;
// a request larger than 8 KiB, another method or another path is refused. With a
// client CA, a client without a certificate it signed does not complete the handshake.

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

typedef struct ssl_ctx_st SSL_CTX;

namespace umpath::server {

struct HttpsScrapeOptions {
  std::string address;  // HOST:PORT ([v6]:PORT); port 0 picks one
  std::string cert_file;  // PEM, the certificate then its chain
  std::string key_file;
  std::string client_ca_file;  // empty: any client
  // The answer's body (text exposition), made per request on the server's thread.
  std::function<std::string()> body;
};

class HttpsScrapeServer {
 public:
  // INVALID_ARGUMENT for an address that is not HOST:PORT; FAILED_PRECONDITION when a
  // file cannot be read, the key is not the certificate's, or the address cannot be
  // bound.
  static absl::StatusOr<std::unique_ptr<HttpsScrapeServer>> Create(HttpsScrapeOptions options);
  // Ends the connection in progress (at most its timeout) and the thread.
  ~HttpsScrapeServer();
  int port() const { return port_; }

 private:
  explicit HttpsScrapeServer(HttpsScrapeOptions o) : o_(std::move(o)) {}
  void Run();
  void Serve(int fd);

  const HttpsScrapeOptions o_;
  SSL_CTX* ctx_ = nullptr;
  int listen_fd_ = -1;
  int stop_fd_ = -1;  // an eventfd: the destructor's wake-up
  int port_ = 0;
  std::thread thread_;
};

}  // namespace umpath::server
