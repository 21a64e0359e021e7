#pragma once

// NVMe/TCP TLS pre-shared keys (issue 19 item 7): a configured PSK in its interchange
// format, and the TLS PSK and identity a connect hands to the kernel's handshake.
//
// The interchange format (NVMe/TCP transport 1.1, 3.6.1.5) is
// "NVMeTLSkey-1:<hh>:<base64 of PSK || CRC-32 of PSK, little-endian>:", where hh says how
// the configured PSK becomes the retained PSK: 00 as it is, 01 HKDF with SHA-256 (a
// 32-byte PSK), 02 HKDF with SHA-384 (48 bytes).
//
// The derivation (NVMe/TCP 1.1, 3.6.1.3 and 3.6.1.4), as nvme-cli does it for
// "nvme connect --tls-key" and "nvme check-tls-key --identity=1", so a target whose key
// nvme-cli inserted accepts ours (the unit test holds identities nvme-cli 2.13 printed;
// the lab handshake against a key nvme-cli inserted proves the PSK):
//   retained = HKDF-Expand-Label(HKDF-Extract(0, configured), "HostNQN", hostnqn, L)
//              (the configured PSK itself for hh 00),
//   digest   = base64(HMAC(retained, hostnqn " " subsysnqn " NVMe-over-Fabrics")),
//   identity = "NVMe1R<cc> <hostnqn> <subsysnqn> <digest>",
//   TLS PSK  = HKDF-Expand-Label(HKDF-Extract(0, retained), "nvme-tls-psk",
//              "<cc> <digest>", L),
// with L the PSK's length and cc the cipher's hash (01 SHA-256, 02 SHA-384: hh, or by
// the length for hh 00). The labels: libnvme 1.x (Debian 13's nvme-cli 2.13 with libnvme
// 1.13, checked) does not lay them out as TLS 1.3's HkdfLabel (RFC 8446, 7.1) says: its
// length is little-endian and label and context have no length bytes. Upstream libnvme
// later switched to the RFC layout and keeps the old one in its *_compat functions.
// Both are here; the agent uses libnvme 1.x's, which the tools on the nodes it runs
// beside (and their targets' keys) use.
//
// Errors name what is wrong with a key, never its bytes.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace umpath::kernel {

inline constexpr absl::string_view kTlsKeyPrefix = "NVMeTLSkey-1:";

struct ConfiguredPsk {
  int hash = 0;     // hh: 0 (none), 1 (SHA-256) or 2 (SHA-384)
  std::string key;  // 32 or 48 bytes; secret
};

// The PSK a TLS handshake uses and the identity it presents (also the key's description
// in the kernel's keyring).
struct TlsPsk {
  std::string identity;
  std::string key;  // secret
};

// CRC-32 as the interchange format uses it (IEEE 802.3, reflected, as zlib's crc32).
uint32_t Crc32(absl::string_view data);

// Parses an interchange-format key (blanks around it allowed). INVALID_ARGUMENT for a
// wrong prefix, an hh other than 00/01/02, base64 that does not decode, a length that
// does not fit hh, or a CRC that does not match.
absl::StatusOr<ConfiguredPsk> ParseTlsPsk(absl::string_view text);

enum class PskDerivation {
  kLibnvme1,  // nvme-cli 2.x with libnvme 1.x (Debian 13); upstream's *_compat
  kRfc8446,   // the HkdfLabel layout of RFC 8446 (upstream libnvme's default since)
};

// The TLS PSK and identity for a connect from `host_nqn` to `subsys_nqn`.
absl::StatusOr<TlsPsk> DeriveTlsPsk(const ConfiguredPsk& psk, absl::string_view host_nqn,
                                    absl::string_view subsys_nqn,
                                    PskDerivation how = PskDerivation::kLibnvme1);

}  // namespace umpath::kernel
