#include "agent/core/error_summary.h"

#include "absl/strings/str_cat.h"
#include "agent/nvme/status.h"

namespace umpath {

std::vector<std::string> IoErrorSummary::Update(const std::vector<HeadInfo>& heads) {
  std::vector<std::string> lines;
  std::map<std::pair<std::string, std::string>, Seen> now;
  for (const HeadInfo& h : heads) {
    for (const PathInfo& p : h.paths) {
      const auto key = std::make_pair(h.name, p.name);
      const Seen cur{p.counters.errors, p.counters.failovers};
      auto it = seen_.find(key);
      const Seen before = it == seen_.end() ? Seen{} : it->second;
      // A path that is new since the last call reports what it gathered meanwhile.
      if (primed_ && cur.errors > before.errors) {
        std::string line = absl::StrCat("io-errors head=\"", h.name, "\" path=\"", p.name,
                                        "\" errors=+", cur.errors - before.errors,
                                        " total=", cur.errors, " failovers=+",
                                        cur.failovers - std::min(cur.failovers, before.failovers));
        if (p.counters.last_error_status != 0) {
          absl::StrAppend(&line, " last_status=\"",
                          nvme::StatusToString(nvme::Status::FromCompletionField(p.counters.last_error_status)),
                          "\"");
        }
        lines.push_back(std::move(line));
      }
      now[key] = cur;
    }
  }
  seen_ = std::move(now);
  primed_ = true;
  return lines;
}

}  // namespace umpath
