// The agent's configuration from its flags: what a stop does with the block devices.
#include "agent/app/config.h"

#include <string>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "agent/base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

ABSL_DECLARE_FLAG(std::string, stop);

namespace umpath::app {
namespace {

using ::testing::HasSubstr;

TEST(ConfigTest, AStopHandsOverByDefaultAndRemovesWhenAsked) {
  absl::SetFlag(&FLAGS_stop, "handover");
  absl::StatusOr<AgentConfig> c = AgentConfigFromFlags();
  ASSERT_OK(c);
  EXPECT_TRUE(c->stop_hands_over);
  absl::SetFlag(&FLAGS_stop, "remove");
  c = AgentConfigFromFlags();
  ASSERT_OK(c);
  EXPECT_FALSE(c->stop_hands_over);
}

TEST(ConfigTest, AnUnknownStopIsRefusedNamingWhatItTakes) {
  for (const char* bad : {"", "Remove", "drain", "handover,remove"}) {
    absl::SetFlag(&FLAGS_stop, bad);
    absl::StatusOr<AgentConfig> c = AgentConfigFromFlags();
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(c.status().message(), HasSubstr("--stop takes handover or remove")) << bad;
  }
  absl::SetFlag(&FLAGS_stop, "handover");
}

}  // namespace
}  // namespace umpath::app
