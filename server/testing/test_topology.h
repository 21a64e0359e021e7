#pragma once

// A topology for server and client tests: `controllers` controllers of one subsystem,
// each with a path to namespaces 1..`namespaces`, so every head has one path per
// controller. Heads are named nguid-ab0000000000000000000000000000NN (NN = nsid, hex).

#include <array>
#include <string>

#include "absl/status/status.h"
#include "agent/core/multipath.h"

namespace umpath::testing {

// Namespace `nsid` through each of c0..c{controllers-1}: one head, named as above.
inline absl::Status AddTestNamespace(Multipath* mp, int controllers, uint32_t nsid) {
  for (int c = 0; c < controllers; ++c) {
    NamespaceSpec ns;
    ns.controller = "c" + std::to_string(c);
    ns.nsid = nsid;
    std::array<uint8_t, 16> g{};
    g[0] = 0xab;
    g[15] = static_cast<uint8_t>(nsid);
    ns.ids.nguid = g;
    ns.size_blocks = 1024;
    if (absl::Status s = mp->AddPath(ns).status(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

inline absl::Status AddTestTopology(Multipath* mp, int controllers, int namespaces,
                                    const std::string& nqn = "nqn.2026-01.io.umpath:test") {
  for (int c = 0; c < controllers; ++c) {
    ControllerSpec spec;
    spec.name = "c" + std::to_string(c);
    spec.subsys_nqn = nqn;
    spec.transport = "fake";
    if (absl::Status s = mp->AddController(spec, nullptr, {}); !s.ok()) return s;
  }
  for (int nsid = 1; nsid <= namespaces; ++nsid) {
    if (absl::Status s = AddTestNamespace(mp, controllers, static_cast<uint32_t>(nsid)); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace umpath::testing
