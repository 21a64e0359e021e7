#pragma once

// The agent's rate-limited summary of I/O errors: nothing is logged per I/O; every
// interval, one line per path whose error count grew, with its last NVMe status.

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "agent/core/info.h"

namespace umpath {

// Threading: one caller (the agent's log thread).
class IoErrorSummary {
 public:
  // Lines for the paths whose errors grew since the last call, e.g.
  //   io-errors head="nguid-..." path="nvme3" errors=+12 total=40 failovers=+12
  //   last_status="0x302 (path: ANA inaccessible)"
  // The first call only records where the counters stand. Paths that went are forgotten.
  std::vector<std::string> Update(const std::vector<HeadInfo>& heads);

 private:
  struct Seen {
    uint64_t errors = 0;
    uint64_t failovers = 0;
  };
  std::map<std::pair<std::string, std::string>, Seen> seen_;
  bool primed_ = false;
};

}  // namespace umpath
