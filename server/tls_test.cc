// The TCP listener: mTLS only, roles from the client certificate; the plaintext
// health-only port; and metrics over HTTPS. Certificates are made here with openssl.
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "agent/base/status_matchers.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/control_server.h"
#include "server/metrics.h"
#include "server/testing/test_topology.h"

namespace umpath::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/umpath-tls-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = new std::string(tmpl);
    const std::string script = R"(set -e
cd ")" + *dir_ + R"("
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$1.key" 2>/dev/null; }
key ca
openssl req -x509 -new -key ca.key -out ca.pem -days 1 -subj /CN=umpath-test-ca
cert() {  # name CN [SAN]
  key "$1"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2"
  if [ -n "$3" ]; then printf 'subjectAltName=%s\n' "$3"; else printf 'basicConstraints=CA:FALSE\n'; fi > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
}
cert server localhost DNS:localhost,IP:127.0.0.1
cert admin admin-client DNS:admin.umpath.test
cert viewer viewer-client  # no SAN: known by its CN
cert stranger stranger DNS:stranger.umpath.test
# Issued for build-bot.umpath.test, with an admin's name as its CN.
cert impostor admin.umpath.test DNS:build-bot.umpath.test
# Issued for a viewer's name, CN an admin's name.
cert climber admin.umpath.test DNS:viewer-client
# A CA the server does not trust, and a client it signed.
key other
openssl req -x509 -new -key other.key -out other.pem -days 1 -subj /CN=other-ca
openssl req -new -key admin.key -out rogue.csr -subj /CN=admin-client
printf 'subjectAltName=DNS:admin.umpath.test\n' > rogue.ext
openssl x509 -req -in rogue.csr -CA other.pem -CAkey other.key -CAcreateserial -days 1 \
  -extfile rogue.ext -out rogue.pem 2>/dev/null
cp admin.key rogue.key
)";
    std::ofstream(*dir_ + "/make.sh") << script;
    ASSERT_EQ(std::system(("bash " + *dir_ + "/make.sh").c_str()), 0);
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }

  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(mp_, Multipath::Create(MultipathOptions{}));
    ASSERT_OK(umpath::testing::AddTestTopology(mp_.get(), 1, 1));
  }

  ServerOptions Options() {
    ServerOptions o;
    o.socket_path = *dir_ + "/umpathd.sock";
    o.tcp_address = "127.0.0.1:0";
    o.tls_cert_file = *dir_ + "/server.pem";
    o.tls_key_file = *dir_ + "/server.key";
    o.tls_client_ca_file = *dir_ + "/ca.pem";
    o.health_address = "127.0.0.1:0";
    o.access.admin_names = {"admin.umpath.test"};
    o.access.viewer_names = {"viewer-client"};  // by CN
    return o;
  }

  std::unique_ptr<v1::MultipathControl::Stub> Client(const std::string& who) {
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = Read(*dir_ + "/ca.pem");
    if (!who.empty()) {
      tls.pem_private_key = Read(*dir_ + "/" + who + ".key");
      tls.pem_cert_chain = Read(*dir_ + "/" + who + ".pem");
    }
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("localhost");
    return v1::MultipathControl::NewStub(grpc::CreateCustomChannel(
        "127.0.0.1:" + std::to_string(server_->tcp_port()), grpc::SslCredentials(tls), args));
  }

  grpc::Status SetDelay(v1::MultipathControl::Stub* stub, int64_t secs) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::SetDelayedRemovalRequest req;
    req.set_name("heads/nguid-ab000000000000000000000000000001");
    req.set_delayed_removal_secs(secs);
    v1::SetDelayedRemovalResponse resp;
    return stub->SetDelayedRemoval(&ctx, req, &resp);
  }
  grpc::Status Info(v1::MultipathControl::Stub* stub, std::string* role = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::GetAgentInfoResponse resp;
    grpc::Status s = stub->GetAgentInfo(&ctx, {}, &resp);
    if (role) *role = resp.agent_info().caller_role();
    return s;
  }

  static std::string* dir_;
  std::unique_ptr<Multipath> mp_;
  std::unique_ptr<ControlServer> server_;
};
std::string* TlsTest::dir_ = nullptr;

TEST_F(TlsTest, RolesComeFromTheClientCertificate) {
  ASSERT_OK_AND_ASSIGN(server_, ControlServer::Create(mp_.get(), Options()));
  ASSERT_GT(server_->tcp_port(), 0);
  auto admin = Client("admin");
  std::string role;
  ASSERT_TRUE(Info(admin.get(), &role).ok());
  EXPECT_EQ(role, "admin");
  EXPECT_TRUE(SetDelay(admin.get(), 20).ok());

  auto viewer = Client("viewer");
  ASSERT_TRUE(Info(viewer.get(), &role).ok());
  EXPECT_EQ(role, "viewer");
  grpc::Status s = SetDelay(viewer.get(), 30);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("viewer-client"));

  auto stranger = Client("stranger");
  s = Info(stranger.get());
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("stranger.umpath.test"));
}

TEST_F(TlsTest, ClientsWithoutATrustedCertificateNeverGetIn) {
  ASSERT_OK_AND_ASSIGN(server_, ControlServer::Create(mp_.get(), Options()));
  EXPECT_EQ(Info(Client("").get()).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Info(Client("rogue").get()).error_code(), grpc::StatusCode::UNAVAILABLE);
  // Plaintext to the TLS port.
  auto plain = v1::MultipathControl::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(server_->tcp_port()), grpc::InsecureChannelCredentials()));
  EXPECT_EQ(Info(plain.get()).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(mp_->GetHead("nguid-ab000000000000000000000000000001")->delayed_removal_secs, 0u);
}

TEST_F(TlsTest, HealthPortServesHealthOnly) {
  ASSERT_OK_AND_ASSIGN(server_, ControlServer::Create(mp_.get(), Options()));
  auto ch = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->health_port()),
                                grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(ch);
  grpc::ClientContext c1;
  grpc::health::v1::HealthCheckResponse resp;
  ASSERT_TRUE(health->Check(&c1, {}, &resp).ok());
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  auto control = v1::MultipathControl::NewStub(ch);
  EXPECT_EQ(Info(control.get()).error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

// Item 3: a certificate with SANs is known by them alone. Before, its CN was matched
// beside them: both callers below were admins.
TEST_F(TlsTest, TheCnOfACertificateWithSansGrantsNothing) {
  ASSERT_OK_AND_ASSIGN(server_, ControlServer::Create(mp_.get(), Options()));
  auto impostor = Client("impostor");
  grpc::Status s = Info(impostor.get());
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("build-bot.umpath.test"));
  EXPECT_EQ(SetDelay(impostor.get(), 40).error_code(), grpc::StatusCode::PERMISSION_DENIED);

  auto climber = Client("climber");
  std::string role;
  ASSERT_TRUE(Info(climber.get(), &role).ok());
  EXPECT_EQ(role, "viewer");
  EXPECT_EQ(SetDelay(climber.get(), 40).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(mp_->GetHead("nguid-ab000000000000000000000000000001")->delayed_removal_secs, 0u);
}

TEST_F(TlsTest, TcpWithoutTlsFilesIsRefused) {
  ServerOptions o = Options();
  o.tls_client_ca_file.clear();
  EXPECT_THAT(ControlServer::Create(mp_.get(), o),
              umpath::testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                        HasSubstr("tls_client_ca_file")));
  o = Options();
  o.tls_cert_file = *dir_ + "/missing.pem";
  EXPECT_THAT(ControlServer::Create(mp_.get(), o),
              umpath::testing::StatusIs(absl::StatusCode::kFailedPrecondition,
                                        HasSubstr("missing.pem")));
}

// Issue 17 item 9: metrics over HTTPS, and with a client CA only for scrapers that
// present a certificate it signed. The scraper is OpenSSL itself, verifying the server
// as Prometheus does (the CA, the name localhost).
struct HttpsAnswer {
  bool handshake = false;
  std::string body;  // the HTTP answer, when the handshake succeeded
};
HttpsAnswer HttpsGet(int port, const std::string& ca, const std::string& cert = "",
                     const std::string& key = "",
                     const std::string& req = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n") {
  HttpsAnswer out;
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) != 1 ||
      (!cert.empty() && (SSL_CTX_use_certificate_file(ctx, cert.c_str(), SSL_FILETYPE_PEM) != 1 ||
                         SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1))) {
    ADD_FAILURE() << "the test's client could not load its certificates";
    SSL_CTX_free(ctx);
    return out;
  }
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{10, 0};  // a server that never answers fails the test, it does not hang it
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  SSL* ssl = SSL_new(ctx);
  SSL_set1_host(ssl, "localhost");
  SSL_set_fd(ssl, fd);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && SSL_connect(ssl) == 1) {
    if (SSL_write(ssl, req.data(), static_cast<int>(req.size())) > 0) {
      // TLS 1.3 sends the server's verdict on a client certificate after the handshake:
      // a refused client learns it on its first read.
      char buf[4096];
      int n;
      while ((n = SSL_read(ssl, buf, sizeof buf)) > 0) out.body.append(buf, static_cast<size_t>(n));
      out.handshake = !out.body.empty();
    }
  }
  ERR_clear_error();
  SSL_free(ssl);
  close(fd);
  SSL_CTX_free(ctx);
  return out;
}

// A plain HTTP GET on the port: what a scraper without TLS gets.
std::string PlainGet(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    const std::string req = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
    (void)!write(fd, req.data(), req.size());
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

class MetricsTlsTest : public TlsTest {
 protected:
  MetricsOptions Metrics() {
    MetricsOptions o;
    o.address = "127.0.0.1:0";
    o.mp = mp_.get();
    o.version = "test";
    o.tls_cert_file = *dir_ + "/server.pem";
    o.tls_key_file = *dir_ + "/server.key";
    return o;
  }
  std::string File(const std::string& name) { return *dir_ + "/" + name; }
};

TEST_F(MetricsTlsTest, ScrapesOverHttpsAndNotInPlainText) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<MetricsEndpoint> m, MetricsEndpoint::Create(Metrics()));
  EXPECT_STREQ(m->scheme(), "https");
  HttpsAnswer a = HttpsGet(m->port(), File("ca.pem"));
  ASSERT_TRUE(a.handshake);
  EXPECT_THAT(a.body, HasSubstr("200 OK"));
  EXPECT_THAT(a.body, HasSubstr(std::string("umpath_build_info{version=\"test\",revision=\"") + kBuildRevision + "\"} 1"));
  EXPECT_THAT(a.body, HasSubstr("umpath_head_paths{head=\"nguid-ab000000000000000000000000000001\"} 1"));
  // Plain HTTP on the TLS port gets no metrics.
  EXPECT_THAT(PlainGet(m->port()), Not(HasSubstr("umpath_")));
  // A scraper that does not trust the server's CA does not complete the handshake.
  EXPECT_FALSE(HttpsGet(m->port(), File("other.pem")).handshake);
}

TEST_F(MetricsTlsTest, WithAClientCaOnlyScrapersItSignedGetMetrics) {
  MetricsOptions o = Metrics();
  o.tls_client_ca_file = File("ca.pem");
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<MetricsEndpoint> m, MetricsEndpoint::Create(o));
  HttpsAnswer signed_by_ca = HttpsGet(m->port(), File("ca.pem"), File("admin.pem"), File("admin.key"));
  ASSERT_TRUE(signed_by_ca.handshake);
  EXPECT_THAT(signed_by_ca.body, HasSubstr("umpath_build_info"));
  HttpsAnswer none = HttpsGet(m->port(), File("ca.pem"));
  EXPECT_THAT(none.body, Not(HasSubstr("umpath_")));
  HttpsAnswer rogue = HttpsGet(m->port(), File("ca.pem"), File("rogue.pem"), File("rogue.key"));
  EXPECT_THAT(rogue.body, Not(HasSubstr("umpath_")));
  EXPECT_THAT(PlainGet(m->port()), Not(HasSubstr("umpath_")));
}

TEST_F(MetricsTlsTest, IncompleteOrUnreadableTlsSettingsAreRefused) {
  MetricsOptions o = Metrics();
  o.tls_key_file.clear();
  EXPECT_THAT(MetricsEndpoint::Create(o),
              umpath::testing::StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("metrics_tls_key_file")));
  o = Metrics();
  o.tls_cert_file.clear();
  EXPECT_THAT(MetricsEndpoint::Create(o),
              umpath::testing::StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("metrics_tls_cert_file")));
  o = Metrics();
  o.tls_key_file = File("missing.key");
  EXPECT_THAT(MetricsEndpoint::Create(o),
              umpath::testing::StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("missing.key")));
  o = Metrics();
  o.tls_client_ca_file = File("missing-ca.pem");
  EXPECT_THAT(MetricsEndpoint::Create(o),
              umpath::testing::StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("missing-ca.pem")));
  // A key that is not the certificate's: the server does not start.
  o = Metrics();
  o.tls_key_file = File("admin.key");
  EXPECT_THAT(MetricsEndpoint::Create(o), umpath::testing::StatusIs(absl::StatusCode::kFailedPrecondition,
                                                                    HasSubstr("key values mismatch")));
  // A port already taken.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<MetricsEndpoint> first, MetricsEndpoint::Create(Metrics()));
  o = Metrics();
  o.address = "127.0.0.1:" + std::to_string(first->port());
  EXPECT_THAT(MetricsEndpoint::Create(o),
              umpath::testing::StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("cannot serve metrics")));
}

TEST_F(MetricsTlsTest, OnlyGetOfMetricsIsAnsweredAndAnOversizedRequestIsRefused) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<MetricsEndpoint> m, MetricsEndpoint::Create(Metrics()));
  const std::string ca = File("ca.pem");
  EXPECT_THAT(HttpsGet(m->port(), ca, "", "", "GET /other HTTP/1.1\r\nHost: x\r\n\r\n").body,
              HasSubstr("404 Not Found"));
  EXPECT_THAT(HttpsGet(m->port(), ca, "", "", "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").body,
              HasSubstr("405 Method Not Allowed"));
  EXPECT_THAT(HttpsGet(m->port(), ca, "", "", "garbage\r\n\r\n").body, HasSubstr("400 Bad Request"));
  HttpsAnswer head = HttpsGet(m->port(), ca, "", "", "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_THAT(head.body, HasSubstr("200 OK"));
  EXPECT_THAT(head.body, Not(HasSubstr("umpath_")));
  const std::string huge = "GET /metrics HTTP/1.1\r\nX-Pad: " + std::string(20000, 'a') + "\r\n\r\n";
  EXPECT_THAT(HttpsGet(m->port(), ca, "", "", huge).body, HasSubstr("431"));
  // Prometheus' own request line and a query string.
  EXPECT_THAT(HttpsGet(m->port(), ca, "", "",
                       "GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n").body,
              HasSubstr("umpath_build_info"));
}

// A client that connects and says nothing holds the one connection only until the stop:
// the endpoint still goes at once, and a scrape after it (to a new endpoint) works.
TEST_F(MetricsTlsTest, ASilentClientDoesNotHoldTheStop) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<MetricsEndpoint> m, MetricsEndpoint::Create(Metrics()));
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(m->port()));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  m.reset();
  close(fd);
  ASSERT_OK_AND_ASSIGN(m, MetricsEndpoint::Create(Metrics()));
  EXPECT_THAT(HttpsGet(m->port(), File("ca.pem")).body, HasSubstr("umpath_build_info"));
}

}  // namespace
}  // namespace umpath::server
