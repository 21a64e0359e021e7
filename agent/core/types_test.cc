#include "agent/core/types.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agent/base/status_matchers.h"
#include "agent/core/multipath.h"

namespace umpath {
namespace {

using ::testing::HasSubstr;
using ::umpath::testing::StatusIs;

TEST(IoPolicyTest, NamesRoundTrip) {
  for (IoPolicy p : {IoPolicy::kNuma, IoPolicy::kRoundRobin, IoPolicy::kQueueDepth}) {
    ASSERT_OK_AND_ASSIGN(IoPolicy back, ParseIoPolicy(IoPolicyName(p)));
    EXPECT_EQ(back, p);
  }
}

TEST(IoPolicyTest, UnknownNameIsRejectedNamingTheChoices) {
  for (const char* bad : {"", "NUMA", "round_robin", "service-time", "numa "}) {
    EXPECT_THAT(ParseIoPolicy(bad),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("numa, round-robin, queue-depth")))
        << bad;
  }
}

struct RangeCase {
  int64_t secs;
  bool ok;
};

class DelayedRemovalRangeTest : public ::testing::TestWithParam<RangeCase> {};

// Acceptance 11 (value side): 0..86400 accepted, everything else rejected with the range.
TEST_P(DelayedRemovalRangeTest, Validates) {
  const RangeCase c = GetParam();
  if (c.ok) {
    EXPECT_OK(ValidateDelayedRemovalSecs(c.secs));
  } else {
    EXPECT_THAT(ValidateDelayedRemovalSecs(c.secs),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("0..86400")));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Bounds, DelayedRemovalRangeTest,
    ::testing::Values(RangeCase{0, true}, RangeCase{1, true}, RangeCase{86400, true},
                      RangeCase{86401, false}, RangeCase{-1, false},
                      RangeCase{int64_t{1} << 32, false},  // the kernel's 32-bit wrap
                      RangeCase{INT64_MAX, false}, RangeCase{INT64_MIN, false}));

TEST(ParseDelayedRemovalSecsTest, ParsesDigitsOnly) {
  EXPECT_THAT(ParseDelayedRemovalSecs("30"), ::umpath::testing::IsOk());
  EXPECT_EQ(*ParseDelayedRemovalSecs(" 86400 "), 86400u);
  EXPECT_EQ(*ParseDelayedRemovalSecs("0"), 0u);
  for (const char* bad : {"", "abc", "-1", "+5", "1e3", "3.5", "0x10", "86401",
                          "4294967296", "99999999999999999999"}) {
    EXPECT_THAT(ParseDelayedRemovalSecs(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("0..86400")))
        << bad;
  }
}

TEST(ControllerStateTest, Names) {
  EXPECT_EQ(ControllerStateName(ControllerState::kLive), "live");
  EXPECT_EQ(ControllerStateName(ControllerState::kConnecting), "connecting");
  EXPECT_EQ(ControllerStateName(ControllerState::kDead), "dead");
}

// Both backends build a path's spec here: identifiers from the descriptor list win,
// Identify Namespace fills what it lacks, ONCS says what the path can do.
TEST(PathSpecFromIdentifyTest, DescriptorsWinAndOncsSaysWhatThePathCanDo) {
  nvme::NamespaceIdentity ns;
  ns.ids.nguid = std::array<uint8_t, 16>{0x11};
  ns.ids.eui64 = std::array<uint8_t, 8>{0x22};
  ns.ana_group_id = 3;
  ns.size_blocks = 1000;
  ns.block_size = 4096;
  nvme::NamespaceIds desc;
  desc.nguid = std::array<uint8_t, 16>{0x33};
  desc.uuid = std::array<uint8_t, 16>{0x44};
  nvme::ControllerIdentity ctrl;
  ctrl.oncs = (1u << 3);  // write zeroes, no dataset management
  ctrl.volatile_write_cache = true;
  const NamespaceSpec s = PathSpecFromIdentify("c0", 7, ns, desc, ctrl, 131072);
  EXPECT_EQ(s.controller, "c0");
  EXPECT_EQ(s.nsid, 7u);
  EXPECT_EQ(s.ids.nguid, desc.nguid);
  EXPECT_EQ(s.ids.eui64, ns.ids.eui64);
  EXPECT_EQ(s.ids.uuid, desc.uuid);
  EXPECT_EQ(s.ana_group_id, 3u);
  EXPECT_EQ(s.size_blocks, 1000u);
  EXPECT_EQ(s.block_size, 4096u);
  EXPECT_EQ(s.max_transfer_bytes, 131072u);
  EXPECT_TRUE(s.write_zeroes);
  EXPECT_FALSE(s.deallocate);
  EXPECT_TRUE(s.volatile_write_cache);
  // No descriptor list: Identify Namespace's identifiers as they are.
  EXPECT_EQ(PathSpecFromIdentify("c0", 7, ns, std::nullopt, ctrl, 0).ids, ns.ids);
}

}  // namespace
}  // namespace umpath
