#include "agent/sim/sim_identify.h"

#include <nvme/types.h>

#include <algorithm>
#include <cstring>

#include "agent/nvme/ana_log.h"

namespace umpath::sim {

namespace {

template <typename T>
std::vector<uint8_t> Page(const T& t) {
  static_assert(sizeof(T) == 4096);
  std::vector<uint8_t> b(sizeof t);
  std::memcpy(b.data(), &t, sizeof t);
  return b;
}

// Space-padded ASCII, as the spec's string fields are.
template <size_t N>
void Pad(char (&field)[N], const std::string& s) {
  std::memset(field, ' ', N);
  std::memcpy(field, s.data(), std::min(N, s.size()));
}

}  // namespace

std::vector<uint8_t> IdentifyControllerPage(const SimControllerIdentity& c) {
  nvme_id_ctrl id{};
  id.vid = 0x1d1d;  // not a real vendor's device: "umpath sim" in the model number
  id.cntlid = c.cntlid;
  id.ver = 0x00020000;  // NVMe 2.0
  Pad(id.sn, c.serial);
  Pad(id.mn, "umpath simulated controller");
  Pad(id.fr, "1.0");
  std::strncpy(id.subnqn, c.subsys_nqn.c_str(), sizeof id.subnqn - 1);
  id.cmic = NVME_CTRL_CMIC_MULTI_CTRL | NVME_CTRL_CMIC_MULTI_ANA_REPORTING;
  id.mdts = c.mdts;
  id.anatt = c.anatt_secs;
  id.anacap = 0x1f;  // optimized, non-optimized, inaccessible, persistent loss, change
  id.anagrpmax = c.namespaces;
  id.nanagrpid = c.namespaces;
  id.nn = c.namespaces;
  id.mnan = c.namespaces;
  id.sqes = 0x66;
  id.cqes = 0x44;
  id.oncs = NVME_CTRL_ONCS_DSM | NVME_CTRL_ONCS_WRITE_ZEROES;
  id.vwc = 1;
  return Page(id);
}

std::vector<uint8_t> IdentifyNamespacePage(const SimNamespaceIdentity& ns) {
  nvme_id_ns id{};
  id.nsze = ns.size_blocks;
  id.ncap = ns.size_blocks;
  id.nuse = ns.size_blocks;
  id.nlbaf = 0;
  id.flbas = 0;
  id.nmic = 1;  // shared: reachable through every controller of the subsystem
  id.dlfeat = 1;  // deallocated blocks read as zeros
  id.anagrpid = ns.ana_group_id;
  std::memcpy(id.nguid, ns.nguid.data(), sizeof id.nguid);
  uint8_t shift = 0;
  while ((1u << shift) < ns.block_size) ++shift;
  id.lbaf[0].ds = shift;
  return Page(id);
}

std::vector<uint8_t> NamespaceIdDescriptorPage(const SimNamespaceIdentity& ns) {
  std::vector<uint8_t> b(4096, 0);
  size_t at = 0;
  for (const auto& [type, id] : {std::pair{NVME_NIDT_NGUID, ns.nguid}, std::pair{NVME_NIDT_UUID, ns.uuid}}) {
    b[at] = static_cast<uint8_t>(type);
    b[at + 1] = 16;
    std::memcpy(&b[at + 4], id.data(), 16);
    at += 4 + 16;
  }
  return b;
}

std::vector<uint8_t> AnaLogPage(const std::vector<nvme::AnaState>& states, uint64_t change_count) {
  nvme::AnaLog log;
  log.change_count = change_count;
  for (uint32_t g = 1; g <= states.size(); ++g) {
    log.groups.push_back(nvme::AnaGroupDescriptor{g, states[g - 1], change_count, {g}});
  }
  return nvme::BuildAnaLog(log);
}

namespace {

std::array<uint8_t, 16> Identifier(uint8_t kind, uint32_t subsystem, uint32_t nsid) {
  // "umps", a kind, the subsystem and the namespace, big-endian so the hex reads them.
  std::array<uint8_t, 16> id{'u', 'm', 'p', 's', kind};
  for (int i = 0; i < 4; ++i) {
    id[8 + i] = static_cast<uint8_t>(subsystem >> (24 - 8 * i));
    id[12 + i] = static_cast<uint8_t>(nsid >> (24 - 8 * i));
  }
  return id;
}

}  // namespace

std::array<uint8_t, 16> SimNguid(uint32_t subsystem, uint32_t nsid) { return Identifier(1, subsystem, nsid); }
std::array<uint8_t, 16> SimUuid(uint32_t subsystem, uint32_t nsid) { return Identifier(2, subsystem, nsid); }

}  // namespace umpath::sim
