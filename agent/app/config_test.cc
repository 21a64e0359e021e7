// The agent's configuration from its flags: what a signal's stop does with the block
// devices, and which paths get metrics series.
#include "agent/app/config.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "agent/base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

ABSL_DECLARE_FLAG(std::string, stop);
ABSL_DECLARE_FLAG(std::string, metrics_address);
ABSL_DECLARE_FLAG(std::string, metrics_tls_cert_file);
ABSL_DECLARE_FLAG(std::string, metrics_path_detail);

namespace umpath::app {
namespace {

using ::testing::HasSubstr;

// Each value of a flag, as the config's `field`; the flag back at `dflt` after.
template <typename T, size_t N>
void ExpectValues(absl::Flag<std::string>* flag, const char* dflt,
                  const std::pair<const char*, T> (&table)[N], T AgentConfig::*field) {
  EXPECT_EQ(absl::GetFlag(*flag), dflt);
  for (const auto& [text, value] : table) {
    absl::SetFlag(flag, text);
    absl::StatusOr<AgentConfig> c = AgentConfigFromFlags();
    ASSERT_OK(c);
    EXPECT_EQ((*c).*field, value) << text;
  }
  absl::SetFlag(flag, dflt);
}

// Bad values refused with INVALID_ARGUMENT (main() exits 2 on it): `takes`, then the value.
void ExpectRefused(absl::Flag<std::string>* flag, const char* dflt, std::vector<std::string> bad,
                   const std::string& takes) {
  for (const std::string& b : bad) {
    absl::SetFlag(flag, b);
    absl::StatusOr<AgentConfig> c = AgentConfigFromFlags();
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << b;
    EXPECT_THAT(c.status().message(), HasSubstr(absl::StrCat(takes, ", not \"", b, "\"")));
  }
  absl::SetFlag(flag, dflt);
}

TEST(ConfigTest, AStopHandsOverByDefaultAndRemovesWhenAsked) {
  const std::pair<const char*, ublk::StopMode> table[] = {
      {"handover", ublk::StopMode::kHandOver},
      {"remove", ublk::StopMode::kRemove},
      {"force-remove", ublk::StopMode::kForceRemove},
  };
  ExpectValues(&FLAGS_stop, "handover", table, &AgentConfig::stop);
}

TEST(ConfigTest, AnUnknownStopIsRefusedNamingWhatItTakes) {
  ExpectRefused(&FLAGS_stop, "handover", {"", "Remove", "drain", "handover,remove", "force", "remove-force"},
                "--stop takes handover, remove or force-remove");
}

TEST(ConfigTest, PathDetailIsFullByDefaultAndTakesErrorsOrNone) {
  const std::pair<const char*, server::PathDetail> table[] = {
      {"full", server::PathDetail::kFull},
      {"errors", server::PathDetail::kErrors},
      {"none", server::PathDetail::kNone},
  };
  ExpectValues(&FLAGS_metrics_path_detail, "full", table, &AgentConfig::metrics_path_detail);
  for (const auto& [text, detail] : table) EXPECT_EQ(server::PathDetailName(detail), text);
}

// umpathd_bad_flag_test runs umpathd with one of these.
TEST(ConfigTest, AnUnknownPathDetailIsRefusedNamingWhatItTakes) {
  ExpectRefused(&FLAGS_metrics_path_detail, "full", {"", "Full", "error", "unhealthy", "full,errors", "0"},
                "--metrics_path_detail takes full, errors or none");
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
