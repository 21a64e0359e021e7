#pragma once

// WaitHead: a long poll for a head's condition (exists, selectable, exported, gone).
// No thread waits per call: each call is a reactor on a list, and one thread, woken by
// the event journal (every change to a head is an event) and by the nearest deadline,
// checks the list and answers what holds, what timed out and what was cancelled.

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "agent/base/mutex.h"
#include "agent/core/multipath.h"
#include "grpcpp/support/server_callback.h"
#include "server/access.h"
#include "server/head_filter.h"
#include "umpath/v1/control.pb.h"

namespace umpath::server {

struct WaitOptions {
  size_t max_waits = 1024;
  size_t max_waits_per_caller = 128;
};

// What one call waits for: a head by id, or the one head a filter matches.
struct WaitTarget {
  std::string head;  // the id (no "heads/"); empty with a filter
  HeadFilterExpression filter;
  std::string filter_text;  // for messages
  v1::HeadCondition condition = v1::HEAD_CONDITION_UNSPECIFIED;
};

class WaitStream;

// Threading: Open on gRPC threads; the checks and every Finish but the first (an
// answer at once) on the waits' thread.
class HeadWaits {
 public:
  HeadWaits(Multipath* mp, WaitOptions options);
  ~HeadWaits();  // answers what still waits (UNAVAILABLE), then stops the thread

  // The reactor for one WaitHead call whose request has been checked. Answers at once
  // when the condition holds (or cannot: a filter that matches several heads).
  grpc::ServerUnaryReactor* Open(grpc::CallbackServerContext* ctx, const Caller& caller, WaitTarget target,
                                 std::chrono::steady_clock::time_point deadline, v1::WaitHeadResponse* resp);
  // Ends every wait with UNAVAILABLE and refuses new ones.
  void FinishAll(absl::string_view why);
  size_t active() const;

  // Where the target is now: the head when the condition holds, NOT_FOUND-like
  // std::nullopt when it does not yet, an error when it never can as asked.
  struct Check {
    bool holds = false;
    v1::Head head;      // when it exists
    std::string where;  // when it does not hold: where the head is, for the timeout's message
  };
  absl::StatusOr<Check> Evaluate(const WaitTarget& t) const;

 private:
  friend class WaitStream;
  void Loop();
  void Wake();
  void Release(const std::string& caller_key);

  Multipath* const mp_;
  const WaitOptions options_;
  mutable Mutex mu_;
  CondVar cv_;
  std::vector<std::shared_ptr<WaitStream>> waits_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, size_t> per_caller_ ABSL_GUARDED_BY(mu_);
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::string closed_why_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace umpath::server
