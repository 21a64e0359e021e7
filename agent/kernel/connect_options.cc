#include "agent/kernel/connect_options.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "agent/base/error_reason.h"
#include "agent/base/quote.h"
#include "agent/kernel/fabrics.h"

namespace umpath::kernel {

namespace {

constexpr absl::string_view kDhchapPrefix = "DHHC-1:";

bool IsIpAddress(const std::string& s) {
  in_addr a4;
  in6_addr a6;
  return inet_pton(AF_INET, s.c_str(), &a4) == 1 || inet_pton(AF_INET6, s.c_str(), &a6) == 1;
}

// nn-0x<16 hex>:pn-0x<16 hex>, as ValidateConnectSpec takes the target's.
bool IsFcAddress(absl::string_view s) {
  ConnectSpec probe{"fc", std::string(s), "", "nqn.2014-08.org.nvmexpress:probe"};
  return ValidateConnectSpec(probe).ok();
}

// What the kernel's option parser reads as a separator or cannot take in a name: a
// value with ',' or '=' would add options of its own to the connect string.
bool IsIfaceName(absl::string_view s) {
  if (s.empty() || s.size() >= IFNAMSIZ || s == "." || s == "..") return false;
  for (char c : s) {
    if (!absl::ascii_isgraph(static_cast<unsigned char>(c)) || c == '/' || c == ',' || c == '=' ||
        c == ':') {
      return false;
    }
  }
  return true;
}

absl::Status OutOfRange(absl::string_view field, int64_t v, absl::string_view range) {
  return WithReason(absl::InvalidArgumentError(absl::StrCat(field, " ", v, " is out of range (", range, ")")),
                    reason::kValueOutOfRange, {{"field", field}});
}

// The NVMe key formats (NVMe Base 2.0, 8.13.5.8 for DH-HMAC-CHAP; NVMe/TCP 1.0, 3.6.1.5
// for TLS PSKs): PREFIX, two hex digits (the transformation or hash), ':', base64, ':'.
bool IsKeyFormat(absl::string_view text, absl::string_view prefix) {
  if (!absl::ConsumePrefix(&text, prefix)) return false;
  if (text.size() < 4 || !absl::ascii_isxdigit(static_cast<unsigned char>(text[0])) ||
      !absl::ascii_isxdigit(static_cast<unsigned char>(text[1])) || text[2] != ':') {
    return false;
  }
  text.remove_prefix(3);
  if (!absl::ConsumeSuffix(&text, ":") || text.size() < 4 || text.size() % 4 != 0) return false;
  for (char c : text) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '/' && c != '=') return false;
  }
  return true;
}

// The UUID of a host NQN of the nqn.2014-08.org.nvmexpress:uuid:<uuid> form.
std::string UuidOfHostNqn(absl::string_view nqn) {
  constexpr absl::string_view kUuidNqn = "nqn.2014-08.org.nvmexpress:uuid:";
  if (!absl::ConsumePrefix(&nqn, kUuidNqn) || nqn.size() != 36) return "";
  return std::string(nqn);
}

absl::Status CheckTransport(absl::string_view transport, const ConnectOptions& o) {
  const bool fabrics = transport == "tcp" || transport == "rdma" || transport == "fc" || transport == "loop";
  if (!fabrics) {
    return FieldError("transport", absl::StrCat("fabrics options (", o.Names(),
                                                ") are for tcp, rdma, fc or loop; transport \"", transport,
                                                "\" takes none"));
  }
  auto only = [&](absl::string_view field, bool given, bool allowed, absl::string_view which) {
    return !given || allowed ? absl::OkStatus()
                             : FieldError(field, absl::StrCat(field, " is for ", which, " only, not transport \"",
                                                              transport, "\""));
  };
  if (absl::Status s = only("host_traddr", !o.host_traddr.empty(), transport != "loop", "tcp, rdma and fc");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = only("host_iface", !o.host_iface.empty(), transport == "tcp", "tcp"); !s.ok()) return s;
  return only("tls_key_file", !o.tls_key_file.empty(), transport == "tcp", "tcp");
}

absl::Status CheckValues(absl::string_view transport, const ConnectOptions& o) {
  if (o.ctrl_loss_tmo_secs && (*o.ctrl_loss_tmo_secs < -1 || *o.ctrl_loss_tmo_secs > kMaxCtrlLossTmoSecs)) {
    return OutOfRange("ctrl_loss_tmo_secs", *o.ctrl_loss_tmo_secs,
                      absl::StrCat("-1 to reconnect forever, or 0..", kMaxCtrlLossTmoSecs, " seconds"));
  }
  if (o.reconnect_delay_secs && (*o.reconnect_delay_secs < 1 || *o.reconnect_delay_secs > kMaxReconnectDelaySecs)) {
    return OutOfRange("reconnect_delay_secs", *o.reconnect_delay_secs,
                      absl::StrCat("1..", kMaxReconnectDelaySecs, " seconds"));
  }
  if (o.keep_alive_tmo_secs && (*o.keep_alive_tmo_secs < 1 || *o.keep_alive_tmo_secs > kMaxKeepAliveTmoSecs)) {
    return OutOfRange("keep_alive_tmo_secs", *o.keep_alive_tmo_secs,
                      absl::StrCat("1..", kMaxKeepAliveTmoSecs, " seconds"));
  }
  if (!o.host_traddr.empty()) {
    const bool ok = transport == "fc" ? IsFcAddress(o.host_traddr) : IsIpAddress(o.host_traddr);
    if (!ok) {
      return FieldError("host_traddr", absl::StrCat(
          "host_traddr ", QuotePrefix(o.host_traddr), " is not ",
          transport == "fc" ? "an FC address (nn-0x<16 hex>:pn-0x<16 hex>)" : "an IPv4 or IPv6 address"));
    }
  }
  if (!o.host_iface.empty() && !IsIfaceName(o.host_iface)) {
    return FieldError("host_iface", absl::StrCat(
        "host_iface ", QuotePrefix(o.host_iface), " is not a network interface name (1..", IFNAMSIZ - 1,
        " printable characters, no '/', ',', '=' or ':')"));
  }
  if (!o.host_nqn.empty() && (!IsValidNqn(o.host_nqn) || absl::StrContains(o.host_nqn, ','))) {
    return FieldError("hostnqn", absl::StrCat(
        "hostnqn ", QuotePrefix(o.host_nqn), " is not an NQN (nqn.yyyy-mm.reverse.domain:name, at most 223 bytes, no ',')"));
  }
  return absl::OkStatus();
}

}  // namespace

bool ConnectOptions::empty() const {
  return !ctrl_loss_tmo_secs && !reconnect_delay_secs && !keep_alive_tmo_secs && host_traddr.empty() &&
         host_iface.empty() && host_nqn.empty() && tls_key_file.empty() && dhchap_secret_file.empty() &&
         dhchap_ctrl_secret_file.empty();
}

std::vector<std::pair<std::string, std::string>> ConnectOptions::Fields() const {
  std::vector<std::pair<std::string, std::string>> out;
  if (ctrl_loss_tmo_secs) out.emplace_back("ctrl_loss_tmo", absl::StrCat(*ctrl_loss_tmo_secs));
  if (reconnect_delay_secs) out.emplace_back("reconnect_delay", absl::StrCat(*reconnect_delay_secs));
  if (keep_alive_tmo_secs) out.emplace_back("keep_alive_tmo", absl::StrCat(*keep_alive_tmo_secs));
  for (const auto& [k, v] : {std::pair<const char*, const std::string*>{"host_traddr", &host_traddr},
                             {"host_iface", &host_iface},
                             {"hostnqn", &host_nqn},
                             {"tls_key_file", &tls_key_file},
                             {"dhchap_secret_file", &dhchap_secret_file},
                             {"dhchap_ctrl_secret_file", &dhchap_ctrl_secret_file}}) {
    if (!v->empty()) out.emplace_back(k, *v);
  }
  return out;
}

std::string ConnectOptions::ToString() const {
  return absl::StrJoin(Fields(), " ", absl::PairFormatter("="));
}

std::string ConnectOptions::Names() const {
  return absl::StrJoin(Fields(), ", ", [](std::string* out, const auto& f) { out->append(f.first); });
}

absl::StatusOr<std::string> ReadKeyFile(absl::string_view field, const std::string& path,
                                        absl::string_view prefix) {
  auto bad = [&](absl::string_view why) {
    return FieldError(field, absl::StrCat(field, " ", QuotePrefix(path, 256), ": ", why));
  };
  if (path.empty() || path[0] != '/') return bad("not an absolute path");
  // O_NONBLOCK: a FIFO or a device named here must not hold the caller; fstat on what
  // was opened, so the file checked is the file read. Symlinks are followed (a
  // Kubernetes Secret volume is links to the current version).
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return bad(absl::StrCat("cannot be opened: ", std::strerror(errno)));
  struct stat st;
  std::string text;
  absl::Status s;
  if (fstat(fd, &st) != 0) {
    s = bad(absl::StrCat("fstat: ", std::strerror(errno)));
  } else if (!S_ISREG(st.st_mode)) {
    s = bad("not a regular file");
  } else if ((st.st_mode & S_IROTH) != 0) {
    s = bad("readable by everyone (mode o+r); a key file must not be (chmod o-r)");
  } else if (st.st_size > kMaxKeyFileBytes) {
    s = bad(absl::StrCat("larger than ", kMaxKeyFileBytes, " bytes"));
  } else {
    text.resize(static_cast<size_t>(kMaxKeyFileBytes) + 1);
    const ssize_t n = read(fd, text.data(), text.size());
    if (n < 0) {
      s = bad(absl::StrCat("read: ", std::strerror(errno)));
    } else {
      text.resize(static_cast<size_t>(n));
    }
  }
  close(fd);
  if (!s.ok()) return s;
  const absl::string_view key = absl::StripAsciiWhitespace(text);
  if (!IsKeyFormat(key, prefix)) {
    return bad(absl::StrCat("does not hold a key in the NVMe format (", prefix, "<2 hex>:<base64>:)"));
  }
  return std::string(key);
}

bool MatchesConnectOptions(absl::string_view address, const ConnectOptions& options) {
  return (options.host_traddr.empty() || AddressField(address, "host_traddr") == options.host_traddr) &&
         (options.host_iface.empty() || AddressField(address, "host_iface") == options.host_iface);
}

absl::Status ValidateConnectOptions(absl::string_view transport, const ConnectOptions& options) {
  return BuildConnectArgs(transport, options, ConnectDefaults{}).status();
}

absl::StatusOr<ConnectArgs> BuildConnectArgs(absl::string_view transport, const ConnectOptions& o,
                                             const ConnectDefaults& defaults) {
  ConnectArgs a;
  a.host_nqn = defaults.host_nqn;
  a.host_id = defaults.host_id;
  a.ctrl_loss_tmo = defaults.ctrl_loss_tmo_secs;
  a.reconnect_delay = defaults.reconnect_delay_secs;
  if (o.empty()) return a;
  if (absl::Status s = CheckTransport(transport, o); !s.ok()) return s;
  if (absl::Status s = CheckValues(transport, o); !s.ok()) return s;
  if (o.ctrl_loss_tmo_secs) a.ctrl_loss_tmo = *o.ctrl_loss_tmo_secs;
  if (o.reconnect_delay_secs) a.reconnect_delay = static_cast<int>(*o.reconnect_delay_secs);
  if (o.keep_alive_tmo_secs) a.keep_alive_tmo = static_cast<int>(*o.keep_alive_tmo_secs);
  a.host_traddr = o.host_traddr;
  a.host_iface = o.host_iface;
  if (!o.host_nqn.empty() && o.host_nqn != defaults.host_nqn) {
    a.host_nqn = o.host_nqn;
    a.host_id = UuidOfHostNqn(o.host_nqn);
  }
  if (!o.dhchap_secret_file.empty()) {
    absl::StatusOr<std::string> k = ReadKeyFile("dhchap_secret_file", o.dhchap_secret_file, kDhchapPrefix);
    if (!k.ok()) return k.status();
    a.dhchap_secret = *std::move(k);
  }
  if (!o.dhchap_ctrl_secret_file.empty()) {
    if (o.dhchap_secret_file.empty()) {
      return FieldError("dhchap_ctrl_secret_file",
                        "dhchap_ctrl_secret_file (bidirectional authentication) needs dhchap_secret_file too");
    }
    absl::StatusOr<std::string> k =
        ReadKeyFile("dhchap_ctrl_secret_file", o.dhchap_ctrl_secret_file, kDhchapPrefix);
    if (!k.ok()) return k.status();
    a.dhchap_ctrl_secret = *std::move(k);
  }
  if (!o.tls_key_file.empty()) {
    absl::StatusOr<std::string> k = ReadKeyFile("tls_key_file", o.tls_key_file, kTlsKeyPrefix);
    if (!k.ok()) return k.status();
    absl::StatusOr<ConfiguredPsk> psk = ParseTlsPsk(*k);
    OPENSSL_cleanse(k->data(), k->size());
    if (!psk.ok()) {
      return FieldError("tls_key_file", absl::StrCat("tls_key_file ", QuotePrefix(o.tls_key_file, 256), ": ",
                                                     psk.status().message()));
    }
    a.tls_psk = *std::move(psk);
  }
  return a;
}

}  // namespace umpath::kernel
