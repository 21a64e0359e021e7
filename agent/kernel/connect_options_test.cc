#include "agent/kernel/connect_options.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/base/status_matchers.h"
#include "agent/kernel/fabrics_connect.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace umpath::kernel {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using umpath::testing::IsOk;
using umpath::testing::StatusIs;

// 32 bytes and a CRC, base64: the shape nvme gen-dhchap-key prints.
const std::string kDhchap = "DHHC-1:00:" + std::string(44, 'Q') + "Zz0=:";
const std::string kDhchapCtrl = "DHHC-1:01:" + std::string(44, 'R') + "Zz0=:";
// What nvme gen-tls-key -m 1 -s 00010203...1f printed (32 bytes and their CRC-32).
const std::string kTlsPsk = "NVMeTLSkey-1:01:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:";

// A directory of this test run's own, for its key files.
const std::string& KeyDir() {
  static const std::string* dir = [] {
    std::string tmpl = ::testing::TempDir() + "/umpath-keys-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) return new std::string(::testing::TempDir());
    std::atexit([] { std::filesystem::remove_all(KeyDir()); });
    return new std::string(tmpl);
  }();
  return *dir;
}

// A file under KeyDir() with `text`, mode `mode`.
std::string KeyFile(const std::string& name, const std::string& text, mode_t mode = 0600) {
  const std::string path = KeyDir() + "/" + name;
  std::remove(path.c_str());
  std::ofstream(path) << text;
  chmod(path.c_str(), mode);
  return path;
}

ConnectOptions Ranges(std::optional<int32_t> loss, std::optional<int64_t> delay, std::optional<int64_t> kato) {
  ConnectOptions o;
  o.ctrl_loss_tmo_secs = loss;
  o.reconnect_delay_secs = delay;
  o.keep_alive_tmo_secs = kato;
  return o;
}

// Whether `o` is accepted for `transport`; INVALID_ARGUMENT saying `says` if not empty.
void ExpectValidation(absl::string_view transport, const ConnectOptions& o, absl::string_view says) {
  SCOPED_TRACE(absl::StrCat(transport, " ", o.ToString()));
  if (says.empty()) {
    EXPECT_THAT(ValidateConnectOptions(transport, o), IsOk());
  } else {
    EXPECT_THAT(ValidateConnectOptions(transport, o),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(std::string(says))));
  }
}

// The kernel's option rules (nvmf_parse_options): ctrl_loss_tmo below 0 is forever (we
// take -1 for it), reconnect_delay must be positive, keep_alive_tmo 0 would turn
// keep-alive off (libnvme 1.3 cannot pass it: 0 is its "default").
TEST(ConnectOptionsTest, RangesFollowTheKernel) {
  struct Case {
    ConnectOptions o;
    const char* says;  // empty: accepted
  } cases[] = {
      {Ranges(-1, {}, {}), ""},
      {Ranges(0, {}, {}), ""},
      {Ranges(kMaxCtrlLossTmoSecs, {}, {}), ""},
      {Ranges(-2, {}, {}), "ctrl_loss_tmo_secs -2 is out of range (-1 to reconnect forever, or 0..31536000"},
      {Ranges(kMaxCtrlLossTmoSecs + 1, {}, {}), "ctrl_loss_tmo_secs 31536001 is out of range"},
      {Ranges({}, 1, {}), ""},
      {Ranges({}, 86400, {}), ""},
      {Ranges({}, 0, {}), "reconnect_delay_secs 0 is out of range (1..86400 seconds)"},
      {Ranges({}, 86401, {}), "reconnect_delay_secs 86401 is out of range"},
      {Ranges({}, {}, 1), ""},
      {Ranges({}, {}, 4294967), ""},
      {Ranges({}, {}, 0), "keep_alive_tmo_secs 0 is out of range (1..4294967 seconds)"},
      {Ranges({}, {}, 4294968), "keep_alive_tmo_secs 4294968 is out of range"},
  };
  for (const Case& c : cases) ExpectValidation("tcp", c.o, c.says);
}

TEST(ConnectOptionsTest, OnlyForTransportsThatTakeThem) {
  ConnectOptions loss = Ranges(30, {}, {});
  EXPECT_THAT(ValidateConnectOptions("pcie", loss),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("fabrics options (ctrl_loss_tmo) are for tcp, rdma, fc or loop; "
                                 "transport \"pcie\" takes none")));
  EXPECT_THAT(ValidateConnectOptions("kernel", loss),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("transport \"kernel\" takes none")));
  EXPECT_THAT(ValidateConnectOptions("pcie", {}), IsOk());  // no options: nothing to refuse
  for (const char* t : {"tcp", "rdma", "fc", "loop"}) EXPECT_THAT(ValidateConnectOptions(t, loss), IsOk()) << t;

  ConnectOptions iface;
  iface.host_iface = "eth1";
  EXPECT_THAT(ValidateConnectOptions("tcp", iface), IsOk());
  EXPECT_THAT(ValidateConnectOptions("rdma", iface),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("host_iface is for tcp only")));
  ConnectOptions traddr;
  traddr.host_traddr = "10.0.0.1";
  EXPECT_THAT(ValidateConnectOptions("loop", traddr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("host_traddr is for tcp, rdma and fc only")));
  ConnectOptions tls;
  tls.tls_key_file = KeyFile("psk-rdma", kTlsPsk);
  EXPECT_THAT(ValidateConnectOptions("rdma", tls),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tls_key_file is for tcp only")));
}

// A value with ',' or '=' would add options of its own to the kernel's connect string.
TEST(ConnectOptionsTest, AddressesAndNamesCannotCarryOtherOptions) {
  ConnectOptions o;
  for (const auto& [transport, traddr, says] : std::vector<std::tuple<const char*, const char*, const char*>>{
           {"tcp", "192.0.2.1", ""},
           {"tcp", "fe80::1", ""},
           {"fc", "nn-0x1000000000000001:pn-0x2000000000000001", ""},
           {"tcp", "192.0.2.1,ctrl_loss_tmo=1", "host_traddr \"192.0.2.1,ctrl_loss_tmo=1\" is not an IPv4"},
           {"tcp", "host.example", "is not an IPv4 or IPv6 address"},
           {"tcp", "10.0.0.1\n", "host_traddr \"10.0.0.1\\n\" is not"},  // escaped in the message
           {"fc", "192.0.2.1", "is not an FC address"}}) {
    o.host_traddr = traddr;
    ExpectValidation(transport, o, says);
  }
  o = {};
  for (const auto& [iface, says] : std::vector<std::pair<const char*, const char*>>{
           {"eth1", ""},
           {"eth1,keep_alive_tmo=0", "host_iface \"eth1,keep_alive_tmo=0\" is not a network interface"},
           {"a-very-long-ifname", "is not a network interface name (1..15"},
           {"../x", "is not a network interface name"}}) {
    o.host_iface = iface;
    ExpectValidation("tcp", o, says);
  }
  o = {};
  o.host_nqn = "nqn.2014-08.org.nvmexpress:uuid:6a5e0d2c-6e1b-4c7e-9d1a-0000000000b2";
  ExpectValidation("tcp", o, "");
  o.host_nqn = "nqn.2014-08.org.example:a,dhchap_secret=x";
  ExpectValidation("tcp", o, "hostnqn \"nqn.2014-08.org.example:a,");
  o.host_nqn = "host1";
  ExpectValidation("tcp", o, "is not an NQN");
}

TEST(ConnectOptionsTest, KeyFilesAreCheckedAndNeverQuoted) {
  EXPECT_THAT(ReadKeyFile("dhchap_secret_file", KeyFile("good", "  " + kDhchap + "\n"), "DHHC-1:"),
              ::testing::Eq(absl::StatusOr<std::string>(kDhchap)));
  struct Case {
    std::string path;
    const char* says;
  } cases[] = {
      {"keys/host", "not an absolute path"},
      {KeyDir() + "/absent", "cannot be opened"},
      {KeyDir(), "not a regular file"},
      {KeyFile("world", kDhchap, 0604), "readable by everyone"},
      {KeyFile("big", std::string(kMaxKeyFileBytes + 1, 'A')), "larger than 4096 bytes"},
      {KeyFile("other", kTlsPsk), "does not hold a key in the NVMe format (DHHC-1:"},
      {KeyFile("secretish", "DHHC-1:00:hunter2hunter2:"), "does not hold a key"},
      {KeyFile("nocolon", "DHHC-1:00:" + std::string(48, 'Q')), "does not hold a key"},
      {"/dev/null", "not a regular file"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.path);
    EXPECT_THAT(ReadKeyFile("dhchap_secret_file", c.path, "DHHC-1:"),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("dhchap_secret_file \"" + c.path + "\": "), HasSubstr(c.says),
                               Not(HasSubstr("hunter2")), Not(HasSubstr("QQQQ")))));
  }
}

// A TLS key file is read and checked (format, hash indicator, length, CRC) before
// anything is connected; the connect gets the parsed key.
TEST(ConnectOptionsTest, TlsKeyIsReadAndChecked) {
  ConnectOptions o;
  o.tls_key_file = KeyFile("psk", kTlsPsk);
  absl::StatusOr<ConnectArgs> a = BuildConnectArgs("tcp", o, {});
  ASSERT_THAT(a.status(), IsOk());
  ASSERT_TRUE(a->tls_psk.has_value());
  EXPECT_EQ(a->tls_psk->hash, 1);
  EXPECT_EQ(a->tls_psk->key.size(), 32u);
  // One character of the base64 changed: the CRC no longer matches.
  std::string damaged = kTlsPsk;
  damaged[20] = damaged[20] == 'A' ? 'B' : 'A';
  o.tls_key_file = KeyFile("psk-damaged", damaged);
  const absl::Status s = ValidateConnectOptions("tcp", o);
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument,
                          AllOf(HasSubstr("CRC-32"), HasSubstr(o.tls_key_file), Not(HasSubstr(damaged.substr(16, 20))))));
  o.tls_key_file = KeyFile("psk-hash", "NVMeTLSkey-1:05:" + kTlsPsk.substr(16));
  EXPECT_THAT(ValidateConnectOptions("tcp", o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("hash indicator 05")));
  o.tls_key_file = KeyFile("psk-bad", kDhchap);
  EXPECT_THAT(ValidateConnectOptions("tcp", o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("(NVMeTLSkey-1:")));
}

TEST(ConnectOptionsTest, ArgsOverTheAgentsDefaults) {
  const ConnectDefaults d{"nqn.2014-08.org.nvmexpress:uuid:6a5e0d2c-6e1b-4c7e-9d1a-0000000000a1",
                          "6a5e0d2c-6e1b-4c7e-9d1a-0000000000a1", 6, 1};
  absl::StatusOr<ConnectArgs> a = BuildConnectArgs("tcp", {}, d);
  ASSERT_THAT(a.status(), IsOk());
  EXPECT_EQ(a->ctrl_loss_tmo, 6);
  EXPECT_EQ(a->reconnect_delay, 1);
  EXPECT_EQ(a->keep_alive_tmo, 0);
  EXPECT_EQ(a->host_nqn, d.host_nqn);
  EXPECT_EQ(a->host_id, d.host_id);
  EXPECT_EQ(a->host_traddr, "");

  ConnectOptions o = Ranges(-1, 3, 7);
  o.host_traddr = "10.77.0.1";
  o.host_iface = "d0";
  o.host_nqn = "nqn.2014-08.org.nvmexpress:uuid:6a5e0d2c-6e1b-4c7e-9d1a-0000000000b2";
  o.dhchap_secret_file = KeyFile("host", kDhchap);
  o.dhchap_ctrl_secret_file = KeyFile("ctrl", kDhchapCtrl);
  a = BuildConnectArgs("tcp", o, d);
  ASSERT_THAT(a.status(), IsOk());
  EXPECT_EQ(a->ctrl_loss_tmo, -1);
  EXPECT_EQ(a->reconnect_delay, 3);
  EXPECT_EQ(a->keep_alive_tmo, 7);
  EXPECT_EQ(a->host_traddr, "10.77.0.1");
  EXPECT_EQ(a->host_iface, "d0");
  EXPECT_EQ(a->host_nqn, o.host_nqn);
  // Another host's NQN must not reuse the agent's host ID (the kernel refuses it).
  EXPECT_EQ(a->host_id, "6a5e0d2c-6e1b-4c7e-9d1a-0000000000b2");
  EXPECT_EQ(a->dhchap_secret, kDhchap);
  EXPECT_EQ(a->dhchap_ctrl_secret, kDhchapCtrl);
  // The line for logs and the store names the files, never the keys.
  EXPECT_THAT(o.ToString(), AllOf(HasSubstr("dhchap_secret_file=" + o.dhchap_secret_file),
                                  HasSubstr("ctrl_loss_tmo=-1 reconnect_delay=3 keep_alive_tmo=7"),
                                  Not(HasSubstr("DHHC-1"))));

  ConnectOptions ctrl_only;
  ctrl_only.dhchap_ctrl_secret_file = o.dhchap_ctrl_secret_file;
  EXPECT_THAT(BuildConnectArgs("tcp", ctrl_only, d).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs dhchap_secret_file too")));
}

TEST(ConnectOptionsTest, IntoLibnvmesFabricsConfig) {
  ConnectArgs a;
  a.ctrl_loss_tmo = -1;
  a.reconnect_delay = 3;
  a.keep_alive_tmo = 7;
  a.host_traddr = "10.77.0.1";
  a.host_iface = "d0";
  nvme_fabrics_config cfg;
  FillFabricsConfig(a, &cfg);
  EXPECT_EQ(cfg.ctrl_loss_tmo, -1);
  EXPECT_EQ(cfg.reconnect_delay, 3);
  EXPECT_EQ(cfg.keep_alive_tmo, 7);
  EXPECT_STREQ(cfg.host_traddr, "10.77.0.1");
  EXPECT_STREQ(cfg.host_iface, "d0");
  EXPECT_EQ(cfg.tos, -1);  // libnvme's defaults underneath
  EXPECT_FALSE(cfg.tls);

  FillFabricsConfig(ConnectArgs{}, &cfg);
  EXPECT_EQ(cfg.ctrl_loss_tmo, 600);
  EXPECT_EQ(cfg.reconnect_delay, 10);
  EXPECT_EQ(cfg.keep_alive_tmo, 0);
  EXPECT_EQ(cfg.host_traddr, nullptr);
  EXPECT_EQ(cfg.host_iface, nullptr);
}

TEST(ConnectOptionsTest, AnExistingControllerMatchesItsHostAddress) {
  const std::string addr = "traddr=10.77.0.1,trsvcid=4422,host_traddr=10.77.0.1,src_addr=10.77.0.1";
  ConnectOptions o;
  EXPECT_TRUE(MatchesConnectOptions(addr, o));
  o.host_traddr = "10.77.0.1";
  EXPECT_TRUE(MatchesConnectOptions(addr, o));
  EXPECT_FALSE(MatchesConnectOptions("traddr=10.77.0.1,trsvcid=4422,src_addr=10.77.0.1", o));
  o.host_iface = "d0";
  EXPECT_FALSE(MatchesConnectOptions(addr, o));
  EXPECT_TRUE(MatchesConnectOptions(addr + ",host_iface=d0", o));
}

}  // namespace
}  // namespace umpath::kernel
