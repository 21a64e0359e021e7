#pragma once

// The admin data of a simulated controller as a real one returns it: Identify
// Controller (CNS 01h), Identify Namespace (CNS 00h), the Namespace Identification
// Descriptor list (CNS 03h) and the ANA log (log page 0Ch), each the 4096-byte (or
// log-sized) wire structure, so the backend reads them through the same parsers
// (agent/nvme) as the vfio and kernel backends.

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "agent/nvme/wire.h"

namespace umpath::sim {

struct SimControllerIdentity {
  std::string subsys_nqn;
  std::string serial;
  uint16_t cntlid = 1;
  uint32_t namespaces = 1;  // NN; one ANA group per namespace, group id = nsid
  uint8_t mdts = 8;         // 2^8 pages of 4 KiB: 1 MiB
  uint8_t anatt_secs = 10;
};

struct SimNamespaceIdentity {
  uint64_t size_blocks = 0;
  uint32_t block_size = 4096;
  uint32_t ana_group_id = 1;
  std::array<uint8_t, 16> nguid{};
  std::array<uint8_t, 16> uuid{};
};

std::vector<uint8_t> IdentifyControllerPage(const SimControllerIdentity& c);
std::vector<uint8_t> IdentifyNamespacePage(const SimNamespaceIdentity& ns);
std::vector<uint8_t> NamespaceIdDescriptorPage(const SimNamespaceIdentity& ns);
// Group g (1-based) holds namespace g, in state states[g - 1].
std::vector<uint8_t> AnaLogPage(const std::vector<nvme::AnaState>& states, uint64_t change_count);

// The identifiers of namespace `nsid` of simulated subsystem `subsystem`: the same on
// every run, so heads keep their names (and their saved settings) across restarts.
std::array<uint8_t, 16> SimNguid(uint32_t subsystem, uint32_t nsid);
std::array<uint8_t, 16> SimUuid(uint32_t subsystem, uint32_t nsid);

}  // namespace umpath::sim
