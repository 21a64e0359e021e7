#include "agent/nvme/identify.h"

#include <endian.h>
#include <nvme/types.h>

#include <algorithm>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace umpath::nvme {

namespace {

constexpr size_t kIdentifySize = 4096;
static_assert(sizeof(nvme_id_ctrl) == kIdentifySize);
static_assert(sizeof(nvme_id_ns) == kIdentifySize);

template <size_t N>
std::optional<std::array<uint8_t, N>> NonZero(const uint8_t* p) {
  std::array<uint8_t, N> a;
  std::memcpy(a.data(), p, N);
  if (std::all_of(a.begin(), a.end(), [](uint8_t b) { return b == 0; })) return std::nullopt;
  return a;
}

// Identify's ASCII fields are space padded and not terminated.
std::string Trimmed(const char* p, size_t n) {
  std::string s(p, strnlen(p, n));
  for (char& c : s) {
    if (!absl::ascii_isprint(static_cast<unsigned char>(c))) c = '?';
  }
  return std::string(absl::StripAsciiWhitespace(s));
}

absl::Status WrongSize(absl::string_view what, size_t size) {
  return absl::InvalidArgumentError(
      absl::StrCat(what, " is ", size, " bytes; expected ", kIdentifySize));
}

}  // namespace

std::string HexString(absl::Span<const uint8_t> bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) absl::StrAppendFormat(&out, "%02x", b);
  return out;
}

std::string UuidString(const std::array<uint8_t, 16>& u) {
  const std::string h = HexString(u);
  return absl::StrCat(h.substr(0, 8), "-", h.substr(8, 4), "-", h.substr(12, 4), "-",
                      h.substr(16, 4), "-", h.substr(20));
}

std::string PrintableNqn(absl::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (char ch : raw) {
    const auto c = static_cast<unsigned char>(ch);
    if (c > 0x20 && c < 0x7f && c != '\\' && c != '/') {
      out.push_back(ch);
    } else {
      absl::StrAppendFormat(&out, "\\x%02x", c);
    }
  }
  return out;
}

std::string NamespaceIds::ToString() const {
  std::vector<std::string> parts;
  if (nguid) parts.push_back(absl::StrCat("nguid=", HexString(*nguid)));
  if (eui64) parts.push_back(absl::StrCat("eui64=", HexString(*eui64)));
  if (uuid) parts.push_back(absl::StrCat("uuid=", UuidString(*uuid)));
  return parts.empty() ? "none" : absl::StrJoin(parts, ", ");
}

absl::StatusOr<NamespaceIds> ParseNamespaceIdDescriptors(absl::Span<const uint8_t> data) {
  NamespaceIds ids;
  bool seen[256] = {};
  size_t offset = 0;
  while (offset + sizeof(nvme_ns_id_desc) <= data.size()) {
    nvme_ns_id_desc d;
    std::memcpy(&d, data.data() + offset, sizeof d);
    if (d.nidt == 0) break;  // end of list
    const size_t body = offset + sizeof d;
    if (d.nidl == 0 || data.size() - body < d.nidl) {
      return absl::InvalidArgumentError(absl::StrCat(
          "namespace id descriptor at offset ", offset, " (type ", d.nidt, ", length ", d.nidl,
          ") overruns the ", data.size(), "-byte list"));
    }
    if (seen[d.nidt]) {
      return absl::InvalidArgumentError(
          absl::StrCat("namespace id descriptor type ", d.nidt, " appears twice"));
    }
    seen[d.nidt] = true;
    const uint8_t nidl = d.nidl;
    auto expect_len = [nidl](size_t len, absl::string_view name) -> absl::Status {
      if (nidl != len) {
        return absl::InvalidArgumentError(absl::StrCat(name, " descriptor has length ", nidl,
                                                       "; expected ", len));
      }
      return absl::OkStatus();
    };
    const uint8_t* nid = data.data() + body;
    switch (d.nidt) {
      case NVME_NIDT_EUI64:
        if (absl::Status s = expect_len(NVME_NIDT_EUI64_LEN, "EUI64"); !s.ok()) return s;
        ids.eui64 = NonZero<8>(nid);
        break;
      case NVME_NIDT_NGUID:
        if (absl::Status s = expect_len(NVME_NIDT_NGUID_LEN, "NGUID"); !s.ok()) return s;
        ids.nguid = NonZero<16>(nid);
        break;
      case NVME_NIDT_UUID:
        if (absl::Status s = expect_len(NVME_NIDT_UUID_LEN, "UUID"); !s.ok()) return s;
        ids.uuid = NonZero<16>(nid);
        break;
      case NVME_NIDT_CSI:
        if (absl::Status s = expect_len(NVME_NIDT_CSI_LEN, "CSI"); !s.ok()) return s;
        break;
      default:
        break;  // a type this version does not know: skip it
    }
    offset = body + d.nidl;
  }
  return ids;
}

absl::StatusOr<ControllerIdentity> ParseIdentifyController(absl::Span<const uint8_t> data) {
  if (data.size() != kIdentifySize) return WrongSize("Identify Controller data", data.size());
  nvme_id_ctrl id;
  std::memcpy(&id, data.data(), sizeof id);
  ControllerIdentity c;
  c.vid = le16toh(id.vid);
  c.cntlid = le16toh(id.cntlid);
  c.version = le32toh(id.ver);
  c.serial = Trimmed(id.sn, sizeof id.sn);
  c.model = Trimmed(id.mn, sizeof id.mn);
  c.firmware = Trimmed(id.fr, sizeof id.fr);
  if (strnlen(id.subnqn, sizeof id.subnqn) == sizeof id.subnqn) {
    return absl::InvalidArgumentError("Identify Controller: SUBNQN is not NUL-terminated");
  }
  c.subsys_nqn_raw = id.subnqn;
  c.subsys_nqn = PrintableNqn(c.subsys_nqn_raw);
  c.cmic = id.cmic;
  c.multi_controller = id.cmic & NVME_CTRL_CMIC_MULTI_CTRL;
  c.ana_supported = id.cmic & NVME_CTRL_CMIC_MULTI_ANA_REPORTING;
  c.mdts = id.mdts;
  c.anatt_secs = id.anatt;
  c.anacap = id.anacap;
  c.anagrpmax = le32toh(id.anagrpmax);
  c.nanagrpid = le32toh(id.nanagrpid);
  c.crdt = {le16toh(id.crdt1), le16toh(id.crdt2), le16toh(id.crdt3)};
  // libnvme 1.3 still calls bytes 384..511 reserved: CQT is read from the raw data.
  c.cqt_ms = static_cast<uint16_t>(data[386] | data[387] << 8);
  c.nn = le32toh(id.nn);
  c.mnan = le32toh(id.mnan);
  c.oncs = le16toh(id.oncs);
  c.volatile_write_cache = id.vwc & 1;
  // SQES/CQES: bits 3:0 the required (minimum) size, bits 7:4 the maximum, as powers of 2.
  if ((id.sqes & 0xf) > 6 || (id.sqes >> 4) < 6 || (id.cqes & 0xf) > 4 || (id.cqes >> 4) < 4) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Identify Controller: SQES 0x%02x / CQES 0x%02x do not allow 64-byte submission and "
        "16-byte completion entries",
        id.sqes, id.cqes));
  }
  if (c.ana_supported) {
    if (c.anagrpmax == 0) {
      return absl::InvalidArgumentError("Identify Controller: ANA reporting with ANAGRPMAX 0");
    }
    if (c.nanagrpid > c.anagrpmax) {
      return absl::InvalidArgumentError(absl::StrCat("Identify Controller: NANAGRPID ",
                                                     c.nanagrpid, " > ANAGRPMAX ", c.anagrpmax));
    }
  }
  return c;
}

uint64_t AnaLogBytes(const ControllerIdentity& c) {
  const uint64_t namespaces = c.mnan == 0 || c.mnan > c.nn ? c.nn : c.mnan;
  return sizeof(nvme_ana_log) + uint64_t{c.nanagrpid} * sizeof(nvme_ana_group_desc) +
         namespaces * sizeof(uint32_t);
}

absl::StatusOr<NamespaceIdentity> ParseIdentifyNamespace(absl::Span<const uint8_t> data) {
  if (data.size() != kIdentifySize) return WrongSize("Identify Namespace data", data.size());
  nvme_id_ns id;
  std::memcpy(&id, data.data(), sizeof id);
  NamespaceIdentity ns;
  ns.size_blocks = le64toh(id.nsze);
  if (ns.size_blocks == 0) return absl::NotFoundError("namespace is inactive (NSZE 0)");
  ns.capacity_blocks = le64toh(id.ncap);
  // FLBAS: format index bits 3:0, and bits 6:5 as its high bits when NLBAF > 16.
  const unsigned index = (id.flbas & 0xf) | ((id.flbas >> 5) & 0x3) << 4;
  if (index > id.nlbaf) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Identify Namespace: format index ", index, " is beyond NLBAF ", int{id.nlbaf}));
  }
  const nvme_lbaf& f = id.lbaf[index];
  if (f.ds < 9 || f.ds > 16) {
    return absl::InvalidArgumentError(absl::StrCat("Identify Namespace: LBA data size 2^",
                                                   int{f.ds}, " is outside 512 B..64 KiB"));
  }
  ns.block_size = uint32_t{1} << f.ds;
  ns.metadata_size = le16toh(f.ms);
  ns.ana_group_id = le32toh(id.anagrpid);
  ns.shared = id.nmic & 1;
  ns.ids.nguid = NonZero<16>(id.nguid);
  ns.ids.eui64 = NonZero<8>(id.eui64);
  return ns;
}

}  // namespace umpath::nvme
