// libFuzzer: the identify parsers never crash on arbitrary controller data.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "agent/nvme/identify.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t which = data[0] % 3;
  std::vector<uint8_t> page(data + 1, data + size);
  if (which != 2) page.resize(4096, 0);  // identify pages are always 4096 bytes
  switch (which) {
    case 0: {
      auto c = umpath::nvme::ParseIdentifyController(page);
      if (c.ok() && c->ana_supported && c->anagrpmax == 0) std::abort();
      // What reaches proto3 strings and head names is printable ASCII, never a '/'.
      if (c.ok()) {
        for (char ch : c->subsys_nqn) {
          const auto b = static_cast<unsigned char>(ch);
          if (b <= 0x20 || b >= 0x7f || b == '/') std::abort();
        }
        if (umpath::nvme::AnaLogBytes(*c) < 16) std::abort();
      }
      break;
    }
    case 1: {
      auto ns = umpath::nvme::ParseIdentifyNamespace(page);
      if (ns.ok() && (ns->block_size < 512 || ns->block_size > 65536)) std::abort();
      break;
    }
    case 2: {
      auto ids = umpath::nvme::ParseNamespaceIdDescriptors(page);
      if (ids.ok()) (void)ids->ToString();
      break;
    }
  }
  return 0;
}
