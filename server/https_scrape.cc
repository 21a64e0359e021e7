#include "server/https_scrape.h"

#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace umpath::server {

namespace {

constexpr size_t kMaxRequestBytes = 8192;
constexpr auto kConnectionBudget = std::chrono::seconds(5);

std::string OpenSslError() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    absl::StrAppend(&out, out.empty() ? "" : "; ", buf);
  }
  return out.empty() ? "no detail" : out;
}

// Binds and listens on HOST:PORT; the bound port through `port`.
absl::StatusOr<int> Listen(const std::string& address, int* port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address \"", address, "\" is not HOST:PORT (e.g. 127.0.0.1:9810)"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string service = address.substr(colon + 1);
  addrinfo hints{};
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int r = getaddrinfo(host.c_str(), service.c_str(), &hints, &res); r != 0) {
    return absl::InvalidArgumentError(absl::StrCat("metrics address \"", address, "\": ", gai_strerror(r)));
  }
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  const int one = 1;
  if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 16) != 0) {
    const int e = errno;
    freeaddrinfo(res);
    if (fd >= 0) close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat("cannot serve metrics on ", address, ": ", strerror(e)));
  }
  freeaddrinfo(res);
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&a)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&a)->sin_port);
  return fd;
}

// The answer to one request (the header block, without its last CRLF CRLF).
std::string Answer(absl::string_view request, const std::function<std::string()>& body_of) {
  const std::vector<absl::string_view> line =
      absl::StrSplit(request.substr(0, request.find("\r\n")), ' ', absl::SkipEmpty());
  std::string status = "200 OK", body, type = "text/plain; version=0.0.4; charset=utf-8";
  const bool head = !line.empty() && line[0] == "HEAD";
  if (line.size() != 3 || !absl::StartsWith(line[2], "HTTP/1.")) {
    status = "400 Bad Request";
  } else if (line[0] != "GET" && !head) {
    status = "405 Method Not Allowed";
  } else if (line[1].substr(0, line[1].find('?')) != "/metrics") {
    status = "404 Not Found";
  } else {
    body = body_of();
  }
  if (status[0] != '2') type = "text/plain; charset=utf-8", body = status + "\n";
  return absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", type, "\r\nContent-Length: ",
                      body.size(), "\r\nConnection: close\r\n\r\n", head ? "" : body);
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpsScrapeServer>> HttpsScrapeServer::Create(HttpsScrapeOptions options) {
  std::unique_ptr<HttpsScrapeServer> s(new HttpsScrapeServer(std::move(options)));
  const HttpsScrapeOptions& o = s->o_;
  ERR_clear_error();
  s->ctx_ = SSL_CTX_new(TLS_server_method());
  if (s->ctx_ == nullptr) return absl::InternalError(absl::StrCat("TLS: ", OpenSslError()));
  SSL_CTX_set_min_proto_version(s->ctx_, TLS1_2_VERSION);
  auto refused = [&](absl::string_view what, const std::string& path) {
    return absl::FailedPreconditionError(absl::StrCat("metrics: cannot use ", what, " ", path, ": ", OpenSslError()));
  };
  if (SSL_CTX_use_certificate_chain_file(s->ctx_, o.cert_file.c_str()) != 1) {
    return refused("metrics_tls_cert_file", o.cert_file);
  }
  if (SSL_CTX_use_PrivateKey_file(s->ctx_, o.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    return refused("metrics_tls_key_file", o.key_file);
  }
  if (SSL_CTX_check_private_key(s->ctx_) != 1) {
    return refused("metrics_tls_key_file (not the certificate's key)", o.key_file);
  }
  if (!o.client_ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(s->ctx_, o.client_ca_file.c_str(), nullptr) != 1) {
      return refused("metrics_tls_client_ca_file", o.client_ca_file);
    }
    SSL_CTX_set_verify(s->ctx_, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  absl::StatusOr<int> fd = Listen(o.address, &s->port_);
  if (!fd.ok()) return fd.status();
  s->listen_fd_ = *fd;
  s->stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (s->stop_fd_ < 0) return absl::ErrnoToStatus(errno, "eventfd");
  s->thread_ = std::thread([p = s.get()] { p->Run(); });
  return s;
}

HttpsScrapeServer::~HttpsScrapeServer() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof one);
    thread_.join();
  }
  if (listen_fd_ >= 0) close(listen_fd_);
  if (stop_fd_ >= 0) close(stop_fd_);
  if (ctx_ != nullptr) SSL_CTX_free(ctx_);
}

void HttpsScrapeServer::Run() {
  for (;;) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (poll(p, 2, -1) < 0 && errno != EINTR) return;
    if (p[1].revents != 0) return;
    if (p[0].revents == 0) continue;
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) Serve(fd);
  }
}

// One connection, non-blocking: each OpenSSL call that wants the socket waits for it,
// for the stop, or for the connection's deadline, whichever comes first.
void HttpsScrapeServer::Serve(int fd) {
  const auto deadline = std::chrono::steady_clock::now() + kConnectionBudget;
  SSL* ssl = SSL_new(ctx_);
  SSL_set_fd(ssl, fd);
  // Runs `op` until it returns > 0 (true) or fails, times out or the server stops (false).
  auto drive = [&](auto op) {
    for (;;) {
      const int r = op();
      if (r > 0) return true;
      const int err = SSL_get_error(ssl, r);
      if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) return false;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p[2] = {{fd, static_cast<short>(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT), 0},
                     {stop_fd_, POLLIN, 0}};
      if (poll(p, 2, static_cast<int>(left.count())) <= 0 || p[1].revents != 0) return false;
    }
  };
  if (drive([&] { return SSL_accept(ssl); })) {
    std::string request;
    char buf[2048];
    bool complete = false;
    while (!complete && request.size() <= kMaxRequestBytes) {
      int n = 0;
      if (!drive([&] { return n = SSL_read(ssl, buf, sizeof buf); })) break;
      request.append(buf, static_cast<size_t>(n));
      complete = request.find("\r\n\r\n") != std::string::npos;
    }
    std::string answer;
    if (complete) {
      answer = Answer(request, o_.body);
    } else if (request.size() > kMaxRequestBytes) {
      answer = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    }
    size_t off = 0;
    while (off < answer.size()) {
      int n = 0;
      if (!drive([&] { return n = SSL_write(ssl, answer.data() + off, static_cast<int>(answer.size() - off)); })) break;
      off += static_cast<size_t>(n);
    }
    if (off == answer.size() && !answer.empty()) {
      SSL_shutdown(ssl);
      // The rest of an oversized request is read and dropped until the client closes (or
      // the budget ends): closing with it unread would reset the connection, and the
      // client would lose the answer.
      if (!complete) {
        while (drive([&] { return SSL_read(ssl, buf, sizeof buf); })) {
        }
      }
    }
  }
  ERR_clear_error();
  SSL_free(ssl);
  close(fd);
}

}  // namespace umpath::server
