#include "agent/kernel/tls_psk.h"

#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "agent/base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace umpath::kernel {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using umpath::testing::StatusIs;

constexpr char kHost[] = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555";
constexpr char kSubsys[] = "nqn.2024-01.io.umpath:lab";

std::string Bytes(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s.push_back(static_cast<char>(i));
  return s;
}

// An interchange-format key of `key` with the CRC the format asks for (or `crc`).
std::string Interchange(absl::string_view hh, const std::string& key, uint32_t crc) {
  std::string raw = key;
  for (int i = 0; i < 4; ++i) raw.push_back(static_cast<char>((crc >> (8 * i)) & 0xff));
  return absl::StrCat(kTlsKeyPrefix, hh, ":", absl::Base64Escape(raw), ":");
}
std::string Interchange(absl::string_view hh, const std::string& key) {
  return Interchange(hh, key, Crc32(key));
}

TEST(TlsPskTest, Crc32IsZlibs) {
  EXPECT_EQ(Crc32(""), 0u);
  EXPECT_EQ(Crc32("123456789"), 0xcbf43926u);  // the CRC-32 check value
}

TEST(TlsPskTest, ParsesWhatNvmeCliGenerates) {
  // "nvme gen-tls-key -m 1 -s 000102...1f" (nvme-cli 2.13) printed this key.
  absl::StatusOr<ConfiguredPsk> p = ParseTlsPsk("NVMeTLSkey-1:01:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:\n");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->hash, 1);
  EXPECT_EQ(p->key, Bytes(32));
  absl::StatusOr<ConfiguredPsk> p2 = ParseTlsPsk(Interchange("02", Bytes(48)));
  ASSERT_TRUE(p2.ok()) << p2.status();
  EXPECT_EQ(p2->hash, 2);
  EXPECT_EQ(p2->key.size(), 48u);
  for (int n : {32, 48}) EXPECT_TRUE(ParseTlsPsk(Interchange("00", Bytes(n))).ok()) << n;
}

TEST(TlsPskTest, RefusesDamagedKeysWithoutShowingThem) {
  const std::string good = Interchange("01", Bytes(32));
  struct Case {
    std::string text, why;
  } cases[] = {
      {Interchange("01", Bytes(32), Crc32(Bytes(32)) ^ 1), "CRC-32"},  // one bit off
      {"NVMeTLSkey-1:01:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaX:", "CRC-32"},  // nvme-cli: mismatch
      {Interchange("03", Bytes(32)), "hash indicator 03 (00, 01 or 02"},
      {Interchange("03", Bytes(48)), "hash indicator 03 (00, 01 or 02"},
      {Interchange("1", Bytes(32)), "<hh>:<base64>:"},
      {Interchange("01", Bytes(48)), "48 bytes"},
      {Interchange("02", Bytes(32)), "32 bytes"},
      {Interchange("00", Bytes(40)), "40 bytes"},
      {"NVMeTLSkey-1:01:AAEC$wQF:", "not base64"},
      {"DHHC-1:01:" + good.substr(16), "does not start with NVMeTLSkey-1:"},
      {good.substr(0, good.size() - 1), "<hh>:<base64>:"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<ConfiguredPsk> p = ParseTlsPsk(c.text);
    EXPECT_THAT(p.status(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.why))) << c.text;
    if (c.text.size() > 30) {
      EXPECT_THAT(p.status().message(), Not(HasSubstr(c.text.substr(16, 12)))) << c.text;
    }
  }
}

// The identities nvme-cli 2.13 printed for these keys ("nvme check-tls-key -d KEY -n
// HOST -c SUBSYS --identity=1"): its digest is an HMAC of the retained PSK, so a match
// also checks the HKDF that makes the retained PSK from the configured one.
TEST(TlsPskTest, IdentityIsNvmeClisForEveryHash) {
  struct Case {
    std::string key, identity;
  } cases[] = {
      {"NVMeTLSkey-1:01:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:",
       "NVMe1R01 " + std::string(kHost) + " " + kSubsys + " uCFOiatTGxHgfYqewOf8+k64oOq01i7SuZU8mwF12M0="},
      {"NVMeTLSkey-1:01:CUCmFeJo7/hdIlHTvXuYTKB4N1AEo00rT16Z88lSEb9Ej3TM:",
       "NVMe1R01 " + std::string(kHost) + " " + kSubsys + " IVQW5O2LoOBNWZh3bXY8HPW8h/scOIIYniaFdkWl+b4="},
      // 00: the configured PSK is the retained one; a 32-byte key's cipher is SHA-256.
      {"NVMeTLSkey-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:",
       "NVMe1R01 " + std::string(kHost) + " " + kSubsys + " 95uPJ3pt+2OdCd2HIvWR+qHw+ScNaA8rBH5o2YV6/nA="},
      {"NVMeTLSkey-1:02:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vcSEgBQ==:",
       "NVMe1R02 " + std::string(kHost) + " " + kSubsys +
           " Ye6ZFFz6g00TxAIlYZBIeUsAoDz9dHzaQU0duccRPtcBvpmJpX3G1kTrUgcULQFJ"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<ConfiguredPsk> p = ParseTlsPsk(c.key);
    ASSERT_TRUE(p.ok()) << p.status();
    absl::StatusOr<TlsPsk> t = DeriveTlsPsk(*p, kHost, kSubsys);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->identity, c.identity);
    EXPECT_EQ(t->key.size(), p->key.size());
    EXPECT_NE(t->key, p->key);  // the TLS PSK is derived, never the configured key
  }
}

// RFC 8446's HkdfLabel gives another retained PSK and so another digest: this one is
// from an independent HKDF (Python's hmac module, RFC 5869 by hand).
TEST(TlsPskTest, Rfc8446LabelsAreTheOtherDerivation) {
  absl::StatusOr<ConfiguredPsk> p = ParseTlsPsk("NVMeTLSkey-1:01:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:");
  ASSERT_TRUE(p.ok());
  absl::StatusOr<TlsPsk> t = DeriveTlsPsk(*p, kHost, kSubsys, PskDerivation::kRfc8446);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->identity,
            "NVMe1R01 " + std::string(kHost) + " " + kSubsys + " XBYzXnTRg4k6RrATboVpcwRNiifUwGKnSIMcHhnOOco=");
  EXPECT_NE(t->key, DeriveTlsPsk(*p, kHost, kSubsys)->key);
}

TEST(TlsPskTest, PskDependsOnHostAndSubsystem) {
  absl::StatusOr<ConfiguredPsk> p = ParseTlsPsk(Interchange("01", Bytes(32)));
  ASSERT_TRUE(p.ok());
  absl::StatusOr<TlsPsk> a = DeriveTlsPsk(*p, kHost, kSubsys);
  absl::StatusOr<TlsPsk> b = DeriveTlsPsk(*p, kHost, "nqn.2024-01.io.umpath:other");
  absl::StatusOr<TlsPsk> c = DeriveTlsPsk(*p, "nqn.2024-01.io.umpath:host2", kSubsys);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_NE(a->key, b->key);
  EXPECT_NE(a->key, c->key);
  EXPECT_EQ(a->key, DeriveTlsPsk(*p, kHost, kSubsys)->key);
  EXPECT_THAT(DeriveTlsPsk(*p, "", kSubsys).status(), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace umpath::kernel
