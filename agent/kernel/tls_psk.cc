#include "agent/kernel/tls_psk.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>

#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "agent/base/error_reason.h"

namespace umpath::kernel {

namespace {

absl::Status BadKey(absl::string_view why) {
  return FieldError("tls_key_file", absl::StrCat("the TLS PSK ", why));
}

const EVP_MD* Digest(int hash) {
  switch (hash) {
    case 1:
      return EVP_sha256();
    case 2:
      return EVP_sha384();
    default:
      return nullptr;
  }
}

// HKDF-Expand-Label(HKDF-Extract(0, secret), label, context, length). RFC 8446 (7.1):
// HkdfLabel is length (16 bits, big-endian), then "tls13 " label and context, each
// after one byte of its length. libnvme 1.x: length little-endian, and "tls13 " label
// context with no length bytes.
absl::StatusOr<std::string> HkdfExpandLabel(PskDerivation how, const EVP_MD* md, absl::string_view secret,
                                            absl::string_view label, absl::string_view context, size_t length) {
  const std::string full_label = absl::StrCat("tls13 ", label);
  if (full_label.size() > 255 || context.size() > 255) return absl::InternalError("HKDF label too long");
  std::string info;
  const bool rfc = how == PskDerivation::kRfc8446;
  info.push_back(static_cast<char>(rfc ? length >> 8 : length & 0xff));
  info.push_back(static_cast<char>(rfc ? length & 0xff : length >> 8));
  if (rfc) info.push_back(static_cast<char>(full_label.size()));
  info.append(full_label);
  if (rfc) info.push_back(static_cast<char>(context.size()));
  info.append(context.data(), context.size());

  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr),
                                                                 EVP_PKEY_CTX_free);
  std::string out(length, '\0');
  size_t out_len = length;
  // No salt: OpenSSL then extracts with HashLen zero bytes, RFC 5869's default.
  if (ctx == nullptr || EVP_PKEY_derive_init(ctx.get()) <= 0 || EVP_PKEY_CTX_set_hkdf_md(ctx.get(), md) <= 0 ||
      EVP_PKEY_CTX_set1_hkdf_key(ctx.get(), reinterpret_cast<const unsigned char*>(secret.data()),
                                 static_cast<int>(secret.size())) <= 0 ||
      EVP_PKEY_CTX_add1_hkdf_info(ctx.get(), reinterpret_cast<const unsigned char*>(info.data()),
                                  static_cast<int>(info.size())) <= 0 ||
      EVP_PKEY_derive(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &out_len) <= 0 ||
      out_len != length) {
    OPENSSL_cleanse(out.data(), out.size());
    return absl::InternalError("OpenSSL HKDF failed");
  }
  return out;
}

}  // namespace

uint32_t Crc32(absl::string_view data) {
  uint32_t crc = 0xffffffffu;
  for (unsigned char c : data) {
    crc ^= c;
    for (int i = 0; i < 8; ++i) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

absl::StatusOr<ConfiguredPsk> ParseTlsPsk(absl::string_view text) {
  text = absl::StripAsciiWhitespace(text);
  if (!absl::ConsumePrefix(&text, kTlsKeyPrefix)) {
    return BadKey(absl::StrCat("does not start with ", kTlsKeyPrefix));
  }
  if (text.size() < 4 || text[2] != ':' || !absl::ConsumeSuffix(&text, ":")) {
    return BadKey("is not <hh>:<base64>: after its prefix");
  }
  ConfiguredPsk psk;
  const absl::string_view hh = text.substr(0, 2);
  if (hh == "00") {
    psk.hash = 0;
  } else if (hh == "01") {
    psk.hash = 1;
  } else if (hh == "02") {
    psk.hash = 2;
  } else {
    return BadKey(absl::StrCat("has hash indicator ", absl::CEscape(hh), " (00, 01 or 02 are defined)"));
  }
  std::string raw;
  if (!absl::Base64Unescape(text.substr(3), &raw)) return BadKey("is not base64 after its hash indicator");
  // 01 transforms with SHA-256 and so has 32 bytes, 02 with SHA-384 and 48; 00 is either.
  const size_t len = raw.size() >= 4 ? raw.size() - 4 : 0;
  const bool fits = psk.hash == 0 ? (len == 32 || len == 48) : len == (psk.hash == 1 ? 32u : 48u);
  if (!fits) {
    OPENSSL_cleanse(raw.data(), raw.size());
    return BadKey(absl::StrCat("holds ", len, " bytes, not what hash indicator ", hh,
                               " needs (01: 32, 02: 48, 00: 32 or 48)"));
  }
  psk.key = raw.substr(0, len);
  const auto* c = reinterpret_cast<const unsigned char*>(raw.data() + len);
  const uint32_t stored = c[0] | (c[1] << 8) | (c[2] << 16) | (static_cast<uint32_t>(c[3]) << 24);
  OPENSSL_cleanse(raw.data(), raw.size());
  if (stored != Crc32(psk.key)) {
    OPENSSL_cleanse(psk.key.data(), psk.key.size());
    return BadKey("fails its CRC-32 check (a damaged or mistyped key)");
  }
  return psk;
}

absl::StatusOr<TlsPsk> DeriveTlsPsk(const ConfiguredPsk& psk, absl::string_view host_nqn,
                                    absl::string_view subsys_nqn, PskDerivation how) {
  if (host_nqn.empty() || subsys_nqn.empty()) return absl::InvalidArgumentError("a TLS PSK needs both NQNs");
  const size_t len = psk.key.size();
  // The cipher suite's hash: hh's, or for an untransformed key the one of its length.
  const int cipher = psk.hash != 0 ? psk.hash : (len == 48 ? 2 : 1);
  std::string retained;
  if (psk.hash == 0) {
    retained = psk.key;
  } else {
    absl::StatusOr<std::string> r = HkdfExpandLabel(how, Digest(psk.hash), psk.key, "HostNQN", host_nqn, len);
    if (!r.ok()) return r.status();
    retained = *std::move(r);
  }
  const std::string message = absl::StrCat(host_nqn, " ", subsys_nqn, " NVMe-over-Fabrics");
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  if (HMAC(Digest(cipher), retained.data(), static_cast<int>(retained.size()),
           reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac, &mac_len) == nullptr) {
    OPENSSL_cleanse(retained.data(), retained.size());
    return absl::InternalError("OpenSSL HMAC failed");
  }
  const std::string digest = absl::Base64Escape(absl::string_view(reinterpret_cast<const char*>(mac), mac_len));
  const std::string cc = cipher == 1 ? "01" : "02";
  TlsPsk out;
  out.identity = absl::StrCat("NVMe1R", cc, " ", host_nqn, " ", subsys_nqn, " ", digest);
  absl::StatusOr<std::string> key =
      HkdfExpandLabel(how, Digest(cipher), retained, "nvme-tls-psk", absl::StrCat(cc, " ", digest), len);
  OPENSSL_cleanse(retained.data(), retained.size());
  if (!key.ok()) return key.status();
  out.key = *std::move(key);
  return out;
}

}  // namespace umpath::kernel
