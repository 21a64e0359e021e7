#include "agent/nvme/identify.h"

#include <nvme/types.h>

#include <cstring>
#include <vector>

#include "agent/base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace umpath::nvme {
namespace {

using ::testing::HasSubstr;
using ::umpath::testing::StatusIs;

template <typename T>
std::vector<uint8_t> Bytes(const T& t) {
  std::vector<uint8_t> b(sizeof t);
  std::memcpy(b.data(), &t, sizeof t);
  return b;
}

nvme_id_ctrl GoodController() {
  nvme_id_ctrl id{};
  id.vid = 0x1b36;
  id.cntlid = 7;
  std::memcpy(id.sn, "SN-0001             ", 20);
  std::memcpy(id.mn, "QEMU NVMe Ctrl                          ", 40);
  std::memcpy(id.fr, "8.0.0   ", 8);
  std::strcpy(id.subnqn, "nqn.2019-08.org.qemu:subsys0");
  id.cmic = NVME_CTRL_CMIC_MULTI_CTRL | NVME_CTRL_CMIC_MULTI_ANA_REPORTING;
  id.mdts = 7;
  id.anatt = 10;
  id.anagrpmax = 128;
  id.nanagrpid = 128;
  id.crdt1 = 1;
  id.crdt2 = 2;
  id.crdt3 = 3;
  id.nn = 256;
  id.sqes = 0x66;
  id.cqes = 0x44;
  id.vwc = 1;
  return id;
}

TEST(IdentifyControllerTest, ReadsWhatTheAgentNeeds) {
  ASSERT_OK_AND_ASSIGN(ControllerIdentity c, ParseIdentifyController(Bytes(GoodController())));
  EXPECT_EQ(c.vid, 0x1b36);
  EXPECT_EQ(c.cntlid, 7);
  EXPECT_EQ(c.serial, "SN-0001");
  EXPECT_EQ(c.model, "QEMU NVMe Ctrl");
  EXPECT_EQ(c.firmware, "8.0.0");
  EXPECT_EQ(c.subsys_nqn, "nqn.2019-08.org.qemu:subsys0");
  EXPECT_TRUE(c.multi_controller);
  EXPECT_TRUE(c.ana_supported);
  EXPECT_EQ(c.mdts, 7);
  EXPECT_EQ(c.anatt_secs, 10);
  EXPECT_EQ(c.anagrpmax, 128u);
  EXPECT_EQ(c.crdt, (std::array<uint16_t, 3>{1, 2, 3}));
  EXPECT_EQ(c.nn, 256u);
  EXPECT_TRUE(c.volatile_write_cache);
  EXPECT_EQ(c.cqt_ms, 0) << "a controller that reports no CQT";
}

TEST(IdentifyControllerTest, ReadsCommandQuiesceTime) {
  std::vector<uint8_t> b = Bytes(GoodController());
  b[386] = 0xd0;  // 2000 ms, little endian (NVMe 2.1 CQT, bytes 387:386)
  b[387] = 0x07;
  ASSERT_OK_AND_ASSIGN(ControllerIdentity c, ParseIdentifyController(b));
  EXPECT_EQ(c.cqt_ms, 2000);
}

// Issue 17 item 7a: one byte >= 0x80 in SUBNQN copied into a proto3 `string` made
// ListHeads unparsable for every client; a '/' made a head the API cannot address.
TEST(IdentifyControllerTest, AHostileSubsystemNqnBecomesPrintableAscii) {
  nvme_id_ctrl id = GoodController();
  std::strcpy(id.subnqn, "nqn.2026-01.evil:\xff\xfe/..\\x41 \x01");
  ASSERT_OK_AND_ASSIGN(ControllerIdentity c, ParseIdentifyController(Bytes(id)));
  for (char ch : c.subsys_nqn) {
    const auto b = static_cast<unsigned char>(ch);
    EXPECT_TRUE(b > 0x20 && b < 0x7f && b != '/') << "byte 0x" << std::hex << int{b} << " in "
                                                   << c.subsys_nqn;
  }
  EXPECT_EQ(c.subsys_nqn, "nqn.2026-01.evil:\\xff\\xfe\\x2f..\\x5cx41\\x20\\x01");
}

TEST(IdentifyControllerTest, TheRawSubsystemNqnIsKeptAndItsPrintableFormIsOneToOne) {
  nvme_id_ctrl id = GoodController();
  std::strcpy(id.subnqn, "nqn.2026-01.evil:\xff");
  ASSERT_OK_AND_ASSIGN(ControllerIdentity c, ParseIdentifyController(Bytes(id)));
  EXPECT_EQ(c.subsys_nqn_raw, "nqn.2026-01.evil:\xff");
  // The byte and the text of its escape stay apart: two controllers of these two
  // subsystems never share a head.
  EXPECT_NE(PrintableNqn("a\xff"), PrintableNqn("a\\xff"));
  EXPECT_EQ(PrintableNqn("nqn.2019-08.org.qemu:subsys0"), "nqn.2019-08.org.qemu:subsys0");
}

TEST(IdentifyControllerTest, RejectsMalformedData) {
  std::vector<uint8_t> b = Bytes(GoodController());
  b.pop_back();
  EXPECT_THAT(ParseIdentifyController(b),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("4095 bytes")));

  nvme_id_ctrl id = GoodController();
  std::memset(id.subnqn, 'a', sizeof id.subnqn);
  EXPECT_THAT(ParseIdentifyController(Bytes(id)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("SUBNQN")));

  id = GoodController();
  id.sqes = 0x77;  // requires 128-byte entries
  EXPECT_THAT(ParseIdentifyController(Bytes(id)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("SQES 0x77")));

  id = GoodController();
  id.anagrpmax = 0;
  id.nanagrpid = 0;
  EXPECT_THAT(ParseIdentifyController(Bytes(id)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("ANAGRPMAX 0")));

  id = GoodController();
  id.nanagrpid = 129;
  EXPECT_THAT(ParseIdentifyController(Bytes(id)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("NANAGRPID 129")));

  id = GoodController();  // without ANA, ANAGRPMAX is not looked at
  id.cmic = 0;
  id.anagrpmax = 0;
  ASSERT_OK_AND_ASSIGN(ControllerIdentity c, ParseIdentifyController(Bytes(id)));
  EXPECT_FALSE(c.ana_supported);
}

nvme_id_ns GoodNamespace() {
  nvme_id_ns id{};
  id.nsze = 2048;
  id.ncap = 2048;
  id.nlbaf = 1;
  id.flbas = 1;
  id.lbaf[0].ds = 9;
  id.lbaf[1].ds = 12;
  id.lbaf[1].ms = 8;
  id.nmic = 1;
  id.anagrpid = 3;
  id.nguid[0] = 0xab;
  id.nguid[15] = 0x01;
  return id;
}

TEST(IdentifyNamespaceTest, ReadsFormatIdsAndSharing) {
  ASSERT_OK_AND_ASSIGN(NamespaceIdentity ns, ParseIdentifyNamespace(Bytes(GoodNamespace())));
  EXPECT_EQ(ns.size_blocks, 2048u);
  EXPECT_EQ(ns.block_size, 4096u);
  EXPECT_EQ(ns.metadata_size, 8);
  EXPECT_EQ(ns.ana_group_id, 3u);
  EXPECT_TRUE(ns.shared);
  ASSERT_TRUE(ns.ids.nguid.has_value());
  EXPECT_EQ(HexString(*ns.ids.nguid), "ab000000000000000000000000000001");
  EXPECT_FALSE(ns.ids.eui64.has_value());  // all zero: not reported
  EXPECT_EQ(ns.ids.ToString(), "nguid=ab000000000000000000000000000001");
}

TEST(IdentifyNamespaceTest, RejectsMalformedData) {
  nvme_id_ns id = GoodNamespace();
  id.flbas = 2;  // beyond NLBAF 1
  EXPECT_THAT(ParseIdentifyNamespace(Bytes(id)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("format index 2")));
  id = GoodNamespace();
  id.lbaf[1].ds = 8;
  EXPECT_THAT(ParseIdentifyNamespace(Bytes(id)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2^8")));
  id = GoodNamespace();
  id.lbaf[1].ds = 40;
  EXPECT_THAT(ParseIdentifyNamespace(Bytes(id)), StatusIs(absl::StatusCode::kInvalidArgument));
  id = GoodNamespace();
  id.nsze = 0;
  EXPECT_THAT(ParseIdentifyNamespace(Bytes(id)),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("inactive")));
  EXPECT_THAT(ParseIdentifyNamespace(std::vector<uint8_t>(512)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

void AddDesc(std::vector<uint8_t>& b, uint8_t type, std::vector<uint8_t> nid) {
  b.push_back(type);
  b.push_back(static_cast<uint8_t>(nid.size()));
  b.push_back(0);
  b.push_back(0);
  b.insert(b.end(), nid.begin(), nid.end());
}

TEST(NamespaceIdDescriptorsTest, ReadsEveryKnownTypeAndSkipsUnknownOnes) {
  std::vector<uint8_t> b;
  AddDesc(b, NVME_NIDT_EUI64, {1, 2, 3, 4, 5, 6, 7, 8});
  AddDesc(b, 0x7f, {9, 9});  // unknown: skipped
  std::vector<uint8_t> uuid(16);
  for (int i = 0; i < 16; ++i) uuid[i] = static_cast<uint8_t>(0x10 + i);
  AddDesc(b, NVME_NIDT_UUID, uuid);
  AddDesc(b, NVME_NIDT_CSI, {0});
  b.resize(4096, 0);
  ASSERT_OK_AND_ASSIGN(NamespaceIds ids, ParseNamespaceIdDescriptors(b));
  EXPECT_EQ(HexString(*ids.eui64), "0102030405060708");
  EXPECT_EQ(UuidString(*ids.uuid), "10111213-1415-1617-1819-1a1b1c1d1e1f");
  EXPECT_FALSE(ids.nguid.has_value());
  EXPECT_FALSE(ids.empty());
  EXPECT_TRUE(NamespaceIds{}.empty());
  EXPECT_EQ(NamespaceIds{}.ToString(), "none");
}

TEST(NamespaceIdDescriptorsTest, RejectsMalformedLists) {
  std::vector<uint8_t> b;
  AddDesc(b, NVME_NIDT_NGUID, std::vector<uint8_t>(8, 1));  // NGUID is 16 bytes
  b.resize(4096, 0);
  EXPECT_THAT(ParseNamespaceIdDescriptors(b),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("NGUID descriptor")));

  b.clear();
  AddDesc(b, NVME_NIDT_EUI64, {1, 2, 3, 4, 5, 6, 7, 8});
  AddDesc(b, NVME_NIDT_EUI64, {1, 2, 3, 4, 5, 6, 7, 8});
  EXPECT_THAT(ParseNamespaceIdDescriptors(b),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("appears twice")));

  b.clear();
  AddDesc(b, NVME_NIDT_NGUID, std::vector<uint8_t>(16, 1));
  b.resize(b.size() - 1);
  EXPECT_THAT(ParseNamespaceIdDescriptors(b),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("overruns")));

  b.assign({NVME_NIDT_EUI64, 0, 0, 0});  // zero length never ends
  EXPECT_THAT(ParseNamespaceIdDescriptors(b), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace umpath::nvme
