// libFuzzer: API requests as they arrive on the wire (protobuf bytes), through the
// request validation (names, enums, tokens, filters) into the core's control API.
// Nothing may crash, and a request that is refused must change nothing.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "agent/core/multipath.h"
#include "google/protobuf/stubs/logging.h"
#include "server/convert.h"
#include "server/testing/test_topology.h"
#include "umpath/v1/control.pb.h"

namespace {

umpath::Multipath* Core() {
  static umpath::Multipath* mp = [] {
    auto created = umpath::Multipath::Create(umpath::MultipathOptions{});
    if (!created.ok()) std::abort();
    umpath::Multipath* m = created->release();
    if (!umpath::testing::AddTestTopology(m, 2, 3).ok()) std::abort();
    return m;
  }();
  return mp;
}

}  // namespace

// Invalid UTF-8 in a string field is a parse failure, logged by protobuf each time.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace umpath;
  using namespace umpath::server;
  if (size < 1) return 0;
  Multipath* mp = Core();
  const std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  const uint64_t before = mp->journal().current_revision();
  bool refused = false;
  switch (data[0] % 6) {
    case 0: {
      v1::SetDelayedRemovalRequest r;
      if (!r.ParseFromString(bytes)) return 0;
      auto head = ParseHeadName(r.name());
      refused = !head.ok() || !mp->SetDelayedRemoval(*head, r.delayed_removal_secs()).ok();
      break;
    }
    case 1: {
      v1::SetIoPolicyRequest r;
      if (!r.ParseFromString(bytes)) return 0;
      auto head = ParseHeadName(r.name());
      auto policy = FromProto(r.io_policy());
      refused = !head.ok() || !policy.ok() || !mp->SetPolicy(*head, IoPolicyName(*policy)).ok();
      break;
    }
    case 2: {
      v1::FailPathRequest r;
      if (!r.ParseFromString(bytes)) return 0;
      auto names = ParsePathName(r.name());
      if (names.ok()) {
        refused = !mp->FailPath(names->first, names->second, r.reason()).ok();
        (void)mp->ReinstatePath(names->first, names->second);
      }
      return 0;
    }
    case 3: {
      v1::WatchEventsRequest r;
      if (!r.ParseFromString(bytes)) return 0;
      for (const std::string& h : r.heads()) (void)ParseHeadName(h);
      for (int t : r.types()) (void)FromProto(static_cast<v1::EventType>(t));
      return 0;
    }
    case 4: {
      v1::ListHeadsRequest r;
      if (!r.ParseFromString(bytes)) return 0;
      auto after = ParseToken("heads", r.page_token());
      if (after.ok() && !after->empty()) {
        auto again = ParseToken("heads", MakeToken("heads", *after));
        if (!again.ok() || *again != *after) std::abort();  // tokens round-trip
      }
      return 0;
    }
    default: {
      v1::GetControllerRequest r;
      if (!r.ParseFromString(bytes)) return 0;
      auto name = ParseControllerName(r.name());
      if (name.ok()) (void)mp->GetController(*name);
      return 0;
    }
  }
  if (refused && mp->journal().current_revision() != before) std::abort();
  return 0;
}
