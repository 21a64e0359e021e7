// The agent's configuration from its flags: what a signal's stop does with the block
// devices.
#include "agent/app/config.h"

#include <string>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "agent/base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

ABSL_DECLARE_FLAG(std::string, stop);
ABSL_DECLARE_FLAG(std::string, metrics_address);
ABSL_DECLARE_FLAG(std::string, metrics_tls_cert_file);

namespace umpath::app {
namespace {

using ::testing::HasSubstr;

TEST(ConfigTest, AStopHandsOverByDefaultAndRemovesWhenAsked) {
  EXPECT_EQ(absl::GetFlag(FLAGS_stop), "handover");
  const std::pair<const char*, ublk::StopMode> table[] = {
      {"handover", ublk::StopMode::kHandOver},
      {"remove", ublk::StopMode::kRemove},
      {"force-remove", ublk::StopMode::kForceRemove},
  };
  for (const auto& [text, mode] : table) {
    absl::SetFlag(&FLAGS_stop, text);
    absl::StatusOr<AgentConfig> c = AgentConfigFromFlags();
    ASSERT_OK(c);
    EXPECT_EQ(c->stop, mode) << text;
  }
  absl::SetFlag(&FLAGS_stop, "handover");
}

TEST(ConfigTest, AnUnknownStopIsRefusedNamingWhatItTakes) {
  for (const char* bad : {"", "Remove", "drain", "handover,remove", "force", "remove-force"}) {
    absl::SetFlag(&FLAGS_stop, bad);
    absl::StatusOr<AgentConfig> c = AgentConfigFromFlags();
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(c.status().message(),
                HasSubstr(absl::StrCat("--stop takes handover, remove or force-remove, not \"",
                                       bad, "\"")));
  }
  absl::SetFlag(&FLAGS_stop, "handover");
}

// HTTPS settings for metrics that are not served are a mistake, not a silent no-op.
TEST(ConfigTest, MetricsTlsWithoutAMetricsAddressIsRefused) {
  absl::SetFlag(&FLAGS_metrics_tls_cert_file, "/etc/umpath/metrics.pem");
  absl::StatusOr<AgentConfig> c = AgentConfigFromFlags();
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("--metrics_address"));
  absl::SetFlag(&FLAGS_metrics_address, "127.0.0.1:9810");
  c = AgentConfigFromFlags();
  ASSERT_OK(c);
  EXPECT_EQ(c->metrics_tls_cert_file, "/etc/umpath/metrics.pem");
  absl::SetFlag(&FLAGS_metrics_address, "");
  absl::SetFlag(&FLAGS_metrics_tls_cert_file, "");
}

}  // namespace
}  // namespace umpath::app
