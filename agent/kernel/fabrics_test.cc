#include "agent/kernel/fabrics.h"

#include "agent/base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace umpath::kernel {
namespace {

using ::testing::HasSubstr;
using umpath::testing::IsOk;
using umpath::testing::StatusIs;

constexpr const char* kNqn = "nqn.2026-01.io.umpath:tcp";

TEST(FabricsTest, ControllerStatesFromSysfs) {
  EXPECT_EQ(ParseControllerState("live\n"), ControllerState::kLive);
  EXPECT_EQ(ParseControllerState("resetting"), ControllerState::kResetting);
  EXPECT_EQ(ParseControllerState("connecting"), ControllerState::kConnecting);
  EXPECT_EQ(ParseControllerState("deleting (no IO)"), ControllerState::kDeleting);
  EXPECT_EQ(ParseControllerState("deleting"), ControllerState::kDeleting);
  EXPECT_EQ(ParseControllerState("dead"), ControllerState::kDead);
  EXPECT_EQ(ParseControllerState("new"), ControllerState::kNew);
  EXPECT_EQ(ParseControllerState(""), std::nullopt);
  EXPECT_EQ(ParseControllerState("LIVE"), std::nullopt);
  EXPECT_EQ(ParseControllerState("frozen"), std::nullopt);
}

TEST(FabricsTest, NqnSyntax) {
  EXPECT_TRUE(IsValidNqn(kNqn));
  EXPECT_TRUE(IsValidNqn("nqn.2014-08.org.nvmexpress:uuid:6a5e0d2c-6e1b-4c7e-9d1a-000000000001"));
  EXPECT_FALSE(IsValidNqn(""));
  EXPECT_FALSE(IsValidNqn("iqn.2026-01.io.umpath:tcp"));
  EXPECT_FALSE(IsValidNqn("nqn.26-01.io.umpath:tcp"));
  EXPECT_FALSE(IsValidNqn("nqn.2026-01"));
  EXPECT_FALSE(IsValidNqn("nqn.2026-01.io.umpath:has space"));
  EXPECT_FALSE(IsValidNqn(std::string("nqn.2026-01.io.umpath:") + std::string(210, 'x')));
}

TEST(FabricsTest, ValidSpecsGetTheirDefaults) {
  ConnectSpec tcp{"tcp", "127.0.0.1", "", kNqn};
  EXPECT_THAT(ValidateConnectSpec(tcp), IsOk());
  EXPECT_EQ(tcp.service, "4420");
  ConnectSpec v6{"tcp", "::1", "4421", kNqn};
  EXPECT_THAT(ValidateConnectSpec(v6), IsOk());
  EXPECT_EQ(v6.ToString(), "tcp [::1]:4421 nqn.2026-01.io.umpath:tcp");
  ConnectSpec loop{"loop", "ignored", "1", kNqn};
  EXPECT_THAT(ValidateConnectSpec(loop), IsOk());
  EXPECT_TRUE(loop.address.empty());
  ConnectSpec fc{"fc", "nn-0x20000090fa942779:pn-0x10000090fa942779", "", kNqn};
  EXPECT_THAT(ValidateConnectSpec(fc), IsOk());
}

TEST(FabricsTest, BadSpecsSayWhatIsWrong) {
  struct Case {
    ConnectSpec spec;
    const char* says;
  } cases[] = {
      {{"pcie", "127.0.0.1", "4420", kNqn}, "tcp, rdma, fc or loop"},
      {{"", "127.0.0.1", "4420", kNqn}, "transport \"\""},
      {{"tcp", "not-an-address", "4420", kNqn}, "not an IPv4 or IPv6 address"},
      {{"tcp", "999.1.1.1", "4420", kNqn}, "not an IPv4 or IPv6 address"},
      {{"tcp", "", "4420", kNqn}, "not an IPv4 or IPv6 address"},
      {{"tcp", "127.0.0.1", "0", kNqn}, "not a port (1..65535)"},
      {{"tcp", "127.0.0.1", "65536", kNqn}, "not a port"},
      {{"tcp", "127.0.0.1", "-1", kNqn}, "not a port"},
      {{"tcp", "127.0.0.1", "http", kNqn}, "not a port"},
      {{"tcp", "127.0.0.1", "4420", "not-an-nqn"}, "is not an NQN"},
      {{"tcp", "127.0.0.1", "4420", ""}, "is not an NQN"},
      {{"fc", "nn-0x1234", "", kNqn}, "not an FC address"},
  };
  for (Case& c : cases) {
    ConnectSpec before = c.spec;
    EXPECT_THAT(ValidateConnectSpec(c.spec),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.says)))
        << before.ToString();
  }
}

TEST(FabricsTest, ConnectFlags) {
  absl::StatusOr<ConnectSpec> s = ParseConnectFlag("tcp:127.0.0.1:4420:nqn.2026-01.io.umpath:tcp");
  ASSERT_THAT(s, IsOk());
  EXPECT_EQ(s->transport, "tcp");
  EXPECT_EQ(s->address, "127.0.0.1");
  EXPECT_EQ(s->service, "4420");
  EXPECT_EQ(s->nqn, kNqn);  // the NQN keeps its own colons
  absl::StatusOr<ConnectSpec> v6 = ParseConnectFlag("tcp:[fe80::1]:4421:nqn.2026-01.io.umpath:tcp");
  ASSERT_THAT(v6, IsOk());
  EXPECT_EQ(v6->address, "fe80::1");
  EXPECT_EQ(v6->service, "4421");
  for (const char* bad : {"tcp", "tcp:127.0.0.1", "tcp:127.0.0.1:4420", "tcp:[::1:4420:nqn.2026-01.a:b",
                          "tcp:localhost:4420:nqn.2026-01.io.umpath:tcp", "udp:127.0.0.1:4420:nqn.2026-01.a:b"}) {
    EXPECT_THAT(ParseConnectFlag(bad), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
  }
}

TEST(FabricsTest, KernelAddressesMatchWhatWasAskedFor) {
  const std::string addr = "traddr=127.0.0.1,trsvcid=4420,src_addr=127.0.0.1";
  EXPECT_EQ(AddressField(addr, "traddr"), "127.0.0.1");
  EXPECT_EQ(AddressField(addr, "trsvcid"), "4420");
  EXPECT_EQ(AddressField(addr, "host_traddr"), "");
  ConnectSpec spec{"tcp", "127.0.0.1", "4420", kNqn};
  EXPECT_TRUE(MatchesConnectSpec("tcp", addr, kNqn, spec));
  EXPECT_FALSE(MatchesConnectSpec("tcp", "traddr=127.0.0.1,trsvcid=4421", kNqn, spec));
  EXPECT_FALSE(MatchesConnectSpec("rdma", addr, kNqn, spec));
  EXPECT_FALSE(MatchesConnectSpec("tcp", addr, "nqn.2026-01.io.umpath:other", spec));
}

// Issue 17 item 2: `Attach kernel nvmeN` claimed any kernel controller (another CSI
// driver's). Only a configured or allowed name or NQN is one to claim.
TEST(FabricsTest, OnlyNamedControllersMayBeClaimed) {
  const std::vector<std::string> claims = {"nvme1", "nqn.2026-01.io.example:ours"};
  const std::vector<std::string> none;
  EXPECT_TRUE(NamedIn("nvme1", "nqn.2026-01.io.example:x", {&claims, &none}));
  EXPECT_TRUE(NamedIn("nvme7", "nqn.2026-01.io.example:ours", {&claims, &none}));
  EXPECT_FALSE(NamedIn("nvme2", "nqn.2026-01.io.other-csi:theirs", {&claims, &none}));
  EXPECT_FALSE(NamedIn("nvme2", "nqn.2026-01.io.other-csi:theirs", {&none}));
  const std::vector<std::string> all = {"all"};
  EXPECT_TRUE(NamedIn("nvme2", "nqn.2026-01.io.other-csi:theirs", {&none, &all}));
}

}  // namespace
}  // namespace umpath::kernel
