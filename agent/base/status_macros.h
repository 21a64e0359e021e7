#pragma once

// Abseil 20220623 has no ABSL_RETURN_IF_ERROR / ASSIGN_OR_RETURN; these are ours.

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define UMPATH_CONCAT_INNER_(a, b) a##b
#define UMPATH_CONCAT_(a, b) UMPATH_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                    \
  do {                                           \
    ::absl::Status umpath_status_ = (expr);      \
    if (!umpath_status_.ok()) return umpath_status_; \
  } while (0)

#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(*tmp)

#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(UMPATH_CONCAT_(umpath_statusor_, __LINE__), lhs, expr)
