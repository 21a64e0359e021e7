#pragma once

// GoogleTest matchers for absl::Status / StatusOr (Abseil 20220623 ships none).

#include <gmock/gmock.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/base/status_macros.h"

namespace umpath::testing {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

MATCHER(IsOk, "is OK") {
  const absl::Status& s = GetStatus(arg);
  *result_listener << s;
  return s.ok();
}

// StatusIs(code) and StatusIs(code, message_matcher).
MATCHER_P(StatusIs, code, "") {
  const absl::Status& s = GetStatus(arg);
  *result_listener << s;
  return s.code() == code;
}
MATCHER_P2(StatusIs, code, message_matcher, "") {
  const absl::Status& s = GetStatus(arg);
  *result_listener << s;
  return s.code() == code &&
         ::testing::ExplainMatchResult(message_matcher, std::string(s.message()),
                                       result_listener);
}

}  // namespace umpath::testing

#define ASSERT_OK(expr) ASSERT_THAT(expr, ::umpath::testing::IsOk())
#define EXPECT_OK(expr) EXPECT_THAT(expr, ::umpath::testing::IsOk())
#define ASSERT_OK_AND_ASSIGN(lhs, expr)                            \
  auto UMPATH_CONCAT_(umpath_sor_, __LINE__) = (expr);             \
  ASSERT_OK(UMPATH_CONCAT_(umpath_sor_, __LINE__));                \
  lhs = std::move(*UMPATH_CONCAT_(umpath_sor_, __LINE__))
