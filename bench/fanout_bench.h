#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace umpath {

struct FanOutOptions {
  int watchers = 1000;
  int connections = 0;  // 0: one per watcher, as separate sidecars would have
  int rate = 20;        // events per second
  int seconds = 10;
  std::vector<uint32_t> batches = {0, 64};  // max_events_per_message, one umpathd run each
};

// The clients' side: `argv` from --fanout-client on. Prints "ready", then one result line.
int FanOutClientMain(int argc, char** argv);
// The servers' side, printed.
void FanOutProcessBench(const std::string& dir, const FanOutOptions& options);

}  // namespace umpath
