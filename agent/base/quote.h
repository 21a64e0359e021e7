#pragma once

// What an error message or a log line may repeat of a caller's string: at most `max`
// bytes of it, C-escaped and quoted, with its length when cut. A caller's bytes never
// reach a log unescaped or unbounded.

#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace umpath {

inline std::string QuotePrefix(absl::string_view s, size_t max = 64) {
  if (s.size() <= max) return absl::StrCat("\"", absl::CHexEscape(s), "\"");
  return absl::StrCat("\"", absl::CHexEscape(s.substr(0, max)), "\"... (", s.size(), " bytes)");
}

}  // namespace umpath
