#include "agent/nvme/ana_log.h"

#include <endian.h>
#include <nvme/types.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace umpath::nvme {

namespace {

constexpr size_t kHeaderSize = sizeof(nvme_ana_log);
constexpr size_t kDescriptorSize = sizeof(nvme_ana_group_desc);
static_assert(kHeaderSize == 16);
static_assert(kDescriptorSize == 32);

absl::Status Malformed(std::string what) {
  return absl::InvalidArgumentError(absl::StrCat("malformed ANA log: ", what));
}

}  // namespace

const AnaGroupDescriptor* AnaLog::FindGroup(uint32_t group_id) const {
  for (const auto& g : groups) {
    if (g.group_id == group_id) return &g;
  }
  return nullptr;
}

std::optional<AnaState> AnaLog::StateOfNamespace(uint32_t nsid) const {
  for (const auto& g : groups) {
    if (std::binary_search(g.nsids.begin(), g.nsids.end(), nsid)) return g.state;
  }
  return std::nullopt;
}

absl::StatusOr<AnaLog> ParseAnaLog(absl::Span<const uint8_t> log, uint32_t anagrpmax) {
  if (log.size() < kHeaderSize) {
    return Malformed(absl::StrCat(log.size(), " bytes is shorter than the ", kHeaderSize,
                                  "-byte header"));
  }
  nvme_ana_log header;
  std::memcpy(&header, log.data(), kHeaderSize);
  AnaLog out;
  out.change_count = le64toh(header.chgcnt);
  const uint16_t ngrps = le16toh(header.ngrps);
  if (ngrps > anagrpmax) {
    return Malformed(absl::StrCat(ngrps, " group descriptors but ANAGRPMAX is ", anagrpmax));
  }
  out.groups.reserve(ngrps);
  std::vector<uint32_t> all_nsids;
  size_t offset = kHeaderSize;
  for (uint16_t i = 0; i < ngrps; ++i) {
    if (log.size() - offset < kDescriptorSize) {
      return Malformed(absl::StrCat("group descriptor ", i, " at offset ", offset,
                                    " overruns the ", log.size(), "-byte log"));
    }
    nvme_ana_group_desc desc;
    std::memcpy(&desc, log.data() + offset, kDescriptorSize);
    offset += kDescriptorSize;
    AnaGroupDescriptor g;
    g.group_id = le32toh(desc.grpid);
    g.change_count = le64toh(desc.chgcnt);
    const uint32_t nnsids = le32toh(desc.nnsids);
    if (g.group_id == 0 || g.group_id > anagrpmax) {
      return Malformed(absl::StrCat("group descriptor ", i, " has group id ", g.group_id,
                                    ", outside 1..ANAGRPMAX (", anagrpmax, ")"));
    }
    if (out.FindGroup(g.group_id) != nullptr) {
      return Malformed(absl::StrCat("group id ", g.group_id, " is listed twice"));
    }
    if (desc.state == 0 || desc.state > 0xf) {
      return Malformed(absl::StrCat("group ", g.group_id, " has state ", desc.state,
                                    ", outside 1..0xF"));
    }
    g.state = static_cast<AnaState>(desc.state);
    if ((log.size() - offset) / sizeof(uint32_t) < nnsids) {
      return Malformed(absl::StrCat("group ", g.group_id, " lists ", nnsids,
                                    " NSIDs, which overrun the ", log.size(), "-byte log"));
    }
    g.nsids.resize(nnsids);
    for (uint32_t n = 0; n < nnsids; ++n) {
      uint32_t raw;
      std::memcpy(&raw, log.data() + offset, sizeof raw);
      offset += sizeof raw;
      const uint32_t nsid = le32toh(raw);
      if (nsid == 0) {
        return Malformed(absl::StrCat("group ", g.group_id, " lists NSID 0"));
      }
      if (n > 0 && nsid <= g.nsids[n - 1]) {
        return Malformed(absl::StrCat("group ", g.group_id, " lists NSID ", nsid, " after ",
                                      g.nsids[n - 1], "; NSIDs must ascend"));
      }
      g.nsids[n] = nsid;
    }
    all_nsids.insert(all_nsids.end(), g.nsids.begin(), g.nsids.end());
    out.groups.push_back(std::move(g));
  }
  std::sort(all_nsids.begin(), all_nsids.end());
  auto dup = std::adjacent_find(all_nsids.begin(), all_nsids.end());
  if (dup != all_nsids.end()) {
    return Malformed(absl::StrCat("NSID ", *dup, " is listed in two groups"));
  }
  return out;
}

std::vector<uint8_t> BuildAnaLog(const AnaLog& log) {
  size_t size = kHeaderSize;
  for (const auto& g : log.groups) size += kDescriptorSize + 4 * g.nsids.size();
  std::vector<uint8_t> out(size, 0);
  nvme_ana_log header{};
  header.chgcnt = htole64(log.change_count);
  header.ngrps = htole16(static_cast<uint16_t>(log.groups.size()));
  std::memcpy(out.data(), &header, kHeaderSize);
  size_t offset = kHeaderSize;
  for (const auto& g : log.groups) {
    nvme_ana_group_desc desc{};
    desc.grpid = htole32(g.group_id);
    desc.nnsids = htole32(static_cast<uint32_t>(g.nsids.size()));
    desc.chgcnt = htole64(g.change_count);
    desc.state = static_cast<uint8_t>(g.state);
    std::memcpy(out.data() + offset, &desc, kDescriptorSize);
    offset += kDescriptorSize;
    for (uint32_t nsid : g.nsids) {
      const uint32_t le = htole32(nsid);
      std::memcpy(out.data() + offset, &le, sizeof le);
      offset += sizeof le;
    }
  }
  return out;
}

}  // namespace umpath::nvme
