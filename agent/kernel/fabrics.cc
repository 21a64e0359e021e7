#include "agent/kernel/fabrics.h"

#include <arpa/inet.h>

#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace umpath::kernel {

std::optional<ControllerState> ParseControllerState(absl::string_view text) {
  const absl::string_view s = absl::StripAsciiWhitespace(text);
  if (s == "new") return ControllerState::kNew;
  if (s == "live") return ControllerState::kLive;
  if (s == "resetting") return ControllerState::kResetting;
  if (s == "connecting") return ControllerState::kConnecting;
  if (s == "deleting" || s == "deleting (no IO)") return ControllerState::kDeleting;
  if (s == "dead") return ControllerState::kDead;
  return std::nullopt;
}

std::string ConnectSpec::ToString() const {
  if (transport == "loop") return absl::StrCat("loop ", nqn);
  const bool v6 = absl::StrContains(address, ':') && transport != "fc";
  return absl::StrCat(transport, " ", v6 ? "[" : "", address, v6 ? "]" : "",
                      service.empty() ? "" : ":", service, " ", nqn);
}

bool IsValidNqn(absl::string_view nqn) {
  if (nqn.size() > 223 || !absl::StartsWith(nqn, "nqn.")) return false;
  // "nqn." then a date "yyyy-mm." then a reverse domain, ':' and anything printable.
  if (nqn.size() < 12) return false;
  for (size_t i = 4; i < 11; ++i) {
    const bool want_dash = i == 8;
    if (want_dash ? nqn[i] != '-' : !absl::ascii_isdigit(static_cast<unsigned char>(nqn[i]))) {
      return false;
    }
  }
  if (nqn[11] != '.') return false;
  for (char c : nqn) {
    if (!absl::ascii_isgraph(static_cast<unsigned char>(c))) return false;
  }
  return nqn.size() > 12;
}

absl::Status ValidateConnectSpec(ConnectSpec& spec) {
  const std::string& t = spec.transport;
  if (t != "tcp" && t != "rdma" && t != "fc" && t != "loop") {
    return absl::InvalidArgumentError(absl::StrCat(
        "transport \"", t, "\": the kernel backend connects tcp, rdma, fc or loop controllers"));
  }
  if (!IsValidNqn(spec.nqn)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "subsystem NQN \"", spec.nqn,
        "\" is not an NQN (nqn.yyyy-mm.reverse.domain:name, at most 223 bytes)"));
  }
  if (t == "tcp" || t == "rdma") {
    in6_addr a6;
    in_addr a4;
    if (inet_pton(AF_INET, spec.address.c_str(), &a4) != 1 &&
        inet_pton(AF_INET6, spec.address.c_str(), &a6) != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "address \"", spec.address, "\" is not an IPv4 or IPv6 address (", t,
          " takes a numeric target address)"));
    }
    if (spec.service.empty()) spec.service = "4420";
    uint32_t port;
    if (!absl::SimpleAtoi(spec.service, &port) || port < 1 || port > 65535 ||
        !absl::ascii_isdigit(static_cast<unsigned char>(spec.service[0]))) {
      return absl::InvalidArgumentError(
          absl::StrCat("service \"", spec.service, "\" is not a port (1..65535)"));
    }
  } else if (t == "fc") {
    // nn-0x<16 hex>:pn-0x<16 hex>
    const std::vector<absl::string_view> parts = absl::StrSplit(spec.address, ':');
    auto wwn = [](absl::string_view s, absl::string_view prefix) {
      if (!absl::StartsWith(s, prefix) || s.size() != prefix.size() + 16) return false;
      for (char c : s.substr(prefix.size())) {
        if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
      }
      return true;
    };
    if (parts.size() != 2 || !wwn(parts[0], "nn-0x") || !wwn(parts[1], "pn-0x")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "address \"", spec.address, "\" is not an FC address (nn-0x<16 hex>:pn-0x<16 hex>)"));
    }
    spec.service.clear();
  } else {
    spec.address.clear();
    spec.service.clear();
  }
  return absl::OkStatus();
}

absl::StatusOr<ConnectSpec> ParseConnectFlag(absl::string_view text) {
  ConnectSpec spec;
  const size_t c1 = text.find(':');
  if (c1 == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", text, "\" is not TRANSPORT:ADDRESS:SERVICE:NQN (e.g. tcp:192.0.2.1:4420:nqn...)"));
  }
  spec.transport = std::string(text.substr(0, c1));
  absl::string_view rest = text.substr(c1 + 1);
  if (absl::StartsWith(rest, "[")) {
    const size_t close = rest.find(']');
    if (close == absl::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':') {
      return absl::InvalidArgumentError(absl::StrCat("\"", text, "\": unterminated [IPv6] address"));
    }
    spec.address = std::string(rest.substr(1, close - 1));
    rest = rest.substr(close + 2);
  } else {
    const size_t c2 = rest.find(':');
    if (c2 == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" has no SERVICE:NQN"));
    }
    spec.address = std::string(rest.substr(0, c2));
    rest = rest.substr(c2 + 1);
  }
  const size_t c3 = rest.find(':');
  if (c3 == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" has no NQN"));
  }
  spec.service = std::string(rest.substr(0, c3));
  spec.nqn = std::string(rest.substr(c3 + 1));
  if (absl::Status s = ValidateConnectSpec(spec); !s.ok()) return s;
  return spec;
}

std::string AddressField(absl::string_view address, absl::string_view key) {
  for (absl::string_view kv : absl::StrSplit(address, ',')) {
    kv = absl::StripAsciiWhitespace(kv);
    const size_t eq = kv.find('=');
    if (eq != absl::string_view::npos && kv.substr(0, eq) == key) {
      return std::string(kv.substr(eq + 1));
    }
  }
  return "";
}

bool NamedIn(absl::string_view name, absl::string_view subsys_nqn,
             std::initializer_list<const std::vector<std::string>*> lists) {
  for (const std::vector<std::string>* list : lists) {
    for (const std::string& c : *list) {
      if (c == "all" || c == name || c == subsys_nqn) return true;
    }
  }
  return false;
}

bool MatchesConnectSpec(absl::string_view transport, absl::string_view address,
                        absl::string_view subsys_nqn, const ConnectSpec& spec) {
  if (transport != spec.transport || subsys_nqn != spec.nqn) return false;
  if (spec.transport == "loop") return true;
  if (AddressField(address, "traddr") != spec.address) return false;
  return spec.service.empty() || AddressField(address, "trsvcid") == spec.service;
}

}  // namespace umpath::kernel
