#pragma once

// ListHeadsRequest.filter_expression and WaitHeadRequest.filter_expression: an AIP-160
// filter over a head's fields. Parsed and typed once against umpath.v1.Head (an unknown
// field or a value of the wrong type is refused before any head is looked at), then
// matched against each head by reflection.

#include <cstddef>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/core/info.h"
#include "umpath/v1/control.pb.h"

namespace umpath::server {

inline constexpr size_t kMaxFilterBytes = 1024;

class HeadFilterExpression {
 public:
  struct Node;

  // INVALID_ARGUMENT saying where (a byte offset) and what was expected. Empty or blank
  // text matches every head.
  static absl::StatusOr<HeadFilterExpression> Parse(absl::string_view text);

  bool Matches(const v1::Head& head) const;
  // The core's description of a head, as the API would give it (converted only when the
  // filter has something to check).
  bool Matches(const HeadInfo& head) const;
  bool MatchesEverything() const { return root_ == nullptr; }

 private:
  std::shared_ptr<const Node> root_;
};

}  // namespace umpath::server
