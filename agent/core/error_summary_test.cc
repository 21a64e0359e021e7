#include "agent/core/error_summary.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace umpath {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

HeadInfo Head(uint64_t errors, uint64_t failovers, uint16_t last) {
  HeadInfo h;
  h.name = "nguid-ab01";
  PathInfo p;
  p.name = "nvme3";
  p.counters.errors = errors;
  p.counters.failovers = failovers;
  p.counters.last_error_status = last;
  h.paths.push_back(p);
  return h;
}

TEST(IoErrorSummaryTest, OneLinePerPathWhoseErrorsGrew) {
  IoErrorSummary s;
  EXPECT_THAT(s.Update({Head(5, 5, 0x302)}), IsEmpty()) << "the first call only records";
  EXPECT_THAT(s.Update({Head(5, 5, 0x302)}), IsEmpty()) << "nothing new, nothing said";
  EXPECT_THAT(s.Update({Head(17, 16, 0x302)}),
              ElementsAre("io-errors head=\"nguid-ab01\" path=\"nvme3\" errors=+12 total=17 "
                          "failovers=+11 last_status=\"0x302 (path: ANA inaccessible)\""));
  // The path goes and comes back with fresh counters: only what it gathered since.
  EXPECT_THAT(s.Update({}), IsEmpty());
  EXPECT_THAT(s.Update({Head(2, 0, 0x4002)}),
              ElementsAre("io-errors head=\"nguid-ab01\" path=\"nvme3\" errors=+2 total=2 "
                          "failovers=+0 last_status=\"0x002 (invalid field), dnr\""));
}

}  // namespace
}  // namespace umpath
