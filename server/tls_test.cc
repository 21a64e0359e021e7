// The TCP listener: mTLS only, roles from the client certificate; and the plaintext
// health-only port. Certificates are made here with openssl.
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
#include "server/testing/test_topology.h"

namespace umpath::server {
namespace {

using ::testing::HasSubstr;

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

}  // namespace
}  // namespace umpath::server
