#pragma once

// WatchEvents: one server-streaming reactor per watcher over a journal subscription,
// and the hub thread that moves them along.

#include <array>
#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "agent/base/mutex.h"
#include "agent/core/multipath.h"
#include "grpcpp/support/server_callback.h"
#include "server/access.h"
#include "server/watch_wire.h"
#include "umpath/v1/control.pb.h"

namespace umpath::server {

struct WatchOptions {
  size_t max_watchers = 1024;
  size_t max_watchers_per_caller = 128;
  // Events that may wait untaken per watcher before it is ended as too slow.
  size_t queue_limit = 4096;
  // An idle stream gets a progress marker this often.
  std::chrono::milliseconds progress_interval{10000};
};

class WatchStream;

// Why WatchEvents streams ended (the metrics' umpath_watcher_terminations_total).
enum class WatchEnd : uint8_t {
  kClientGone,  // the client cancelled or stopped answering
  kFellBehind,  // RESOURCE_EXHAUSTED: it could not keep up
  kShutdown,    // the agent is stopping
  kRefused,     // never started: limits, a bad request, a revision out of range
  kJournal,     // the event journal ended the subscription otherwise
};
inline constexpr size_t kWatchEndCount = 5;
const char* WatchEndName(WatchEnd e);  // "client_gone", "fell_behind", ...
using WatchEndCounts = std::array<uint64_t, kWatchEndCount>;

// Threading: every reactor method records what happened and wakes the hub; the hub's
// one thread takes events, serializes them and finishes streams, so journal callbacks
// never call back into the journal. A completed write may start the stream's next one
// itself, of events the hub took (under the stream's mutex).
class WatchHub {
 public:
  WatchHub(Multipath* mp, WatchOptions options);
  ~WatchHub();  // stops the thread; every stream must have been finished (FinishAll)

  // The reactor for one WatchEvents call; it answers errors itself. It writes
  // WatchEventsResponse messages put together by wire() (a raw method: see
  // ControlService::WatchEvents).
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Open(grpc::CallbackServerContext* ctx,
                                                   const Caller& caller,
                                                   const v1::WatchEventsRequest& req);
  // Ends every stream with UNAVAILABLE naming the revision to resume from, and refuses
  // new ones. Returns once every stream has been finished.
  void FinishAll(absl::string_view why);
  size_t active() const;
  WatchEndCounts ends() const;
  // From streams, as they finish.
  void Ended(WatchEnd why) { ends_[static_cast<size_t>(why)].fetch_add(1, std::memory_order_relaxed); }

  // From reactors and journal callbacks: run this stream's next step on the hub thread.
  void Wake(std::shared_ptr<WatchStream> s);
  void Release(const std::string& caller_key);

  // Every event is serialized once for all watchers (EventWire::Serialize: hub thread).
  EventWire& wire() { return wire_; }
  uint64_t events_serialized() const { return wire_.serialized(); }

 private:
  void Loop();

  Multipath* const mp_;
  const WatchOptions options_;
  mutable Mutex mu_;
  CondVar cv_;
  std::deque<std::shared_ptr<WatchStream>> ready_ ABSL_GUARDED_BY(mu_);
  std::vector<std::weak_ptr<WatchStream>> streams_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, size_t> per_caller_ ABSL_GUARDED_BY(mu_);
  size_t active_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::string closed_why_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::array<std::atomic<uint64_t>, kWatchEndCount> ends_{};
  EventWire wire_;
  std::thread thread_;
};

}  // namespace umpath::server
