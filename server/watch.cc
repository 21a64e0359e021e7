#include "server/watch.h"

#include <algorithm>
#include <bitset>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "agent/base/error_reason.h"
#include "grpcpp/server_context.h"
#include "server/convert.h"

namespace umpath::server {

namespace {

// Events taken from the journal by one Take.
constexpr size_t kTakeAtOnce = 64;

}  // namespace

// Threading: constructed on a gRPC thread; afterwards Step() runs on the hub thread
// only, and the reactor callbacks (gRPC threads) record what happened under mu_ and Wake
// the hub; OnWriteDone also starts the next write of events already taken (buffered_),
// as the hub would, so that a stream catching up does not wait for the hub's turn at
// every message. Only the hub takes from the journal and serializes. The stream keeps
// itself alive (self_) until OnDone.
class WatchStream final : public grpc::ServerWriteReactor<grpc::ByteBuffer>,
                          public std::enable_shared_from_this<WatchStream> {
 public:
  WatchStream(WatchHub* hub, grpc::CallbackServerContext* ctx, std::string caller_key,
              bool counted)
      : hub_(hub), ctx_(ctx), caller_key_(std::move(caller_key)), counted_(counted) {}

  // Answers at once with `status` (validation, limits).
  void FinishNow(const absl::Status& status) {
    MutexLock lock(&mu_);
    self_ = shared_from_this();
    finished_ = true;
    hub_->Ended(WatchEnd::kRefused);
    Finish(ToGrpc(status));
  }

  absl::Status Begin(Multipath* mp, const v1::WatchEventsRequest& req, const WatchOptions& opt) {
    for (const std::string& name : req.heads()) {
      absl::StatusOr<std::string> id = ParseHeadName(name);
      if (!id.ok()) return id.status();
      heads_.insert(*id);
    }
    for (int t : req.types()) {
      absl::StatusOr<EventType> type = FromProto(static_cast<v1::EventType>(t));
      if (!type.ok()) return type.status();
      types_.set(static_cast<size_t>(*type));
    }
    progress_interval_ = opt.progress_interval;
    batch_ = std::clamp<uint32_t>(req.max_events_per_message(), 1, kMaxEventsPerMessage);
    std::weak_ptr<WatchStream> weak = weak_from_this();
    WatchHub* hub = hub_;
    // Runs under the journal's lock: it only queues the stream for the hub thread.
    auto notify = [weak, hub] {
      if (auto s = weak.lock()) {
        s->news_.store(true);
        hub->Wake(std::move(s));
      }
    };
    const std::string& incarnation = mp->journal().incarnation();
    if (!req.incarnation().empty() && req.incarnation() != incarnation) {
      return WithReason(absl::OutOfRangeError(absl::StrCat(
                            "revision ", req.since_revision(), " is of incarnation ", req.incarnation(),
                            "; this agent is incarnation ", incarnation,
                            " (it restarted): start again from a snapshot")),
                        reason::kRevisionNotRetained, {{"incarnation", incarnation}});
    }
    MutexLock lock(&mu_);
    if (req.since_revision() == 0) {
      absl::StatusOr<Multipath::WatchStart> start = mp->WatchState(opt.queue_limit, notify);
      if (!start.ok()) return start.status();
      v1::Snapshot* snap = snapshot_.mutable_snapshot();
      snap->set_revision(start->revision);
      for (const HeadInfo& h : start->heads) {
        if (heads_.empty() || heads_.contains(h.name)) ToProto(h, snap->add_heads());
      }
      for (const ControllerInfo& c : start->controllers) ToProto(c, snap->add_controllers());
      ToProto(mp->GetDefaults(), snap->mutable_defaults());
      have_snapshot_ = true;
      subscription_ = std::move(start->subscription);
      last_sent_ = start->revision;
    } else {
      auto sub = mp->journal().Subscribe(req.since_revision(), opt.queue_limit, notify);
      if (!sub.ok()) return sub.status();
      subscription_ = std::move(*sub);
      last_sent_ = req.since_revision();
    }
    last_write_ = std::chrono::steady_clock::now();
    self_ = shared_from_this();
    return absl::OkStatus();
  }

  // Hub thread: the stream's next move.
  void Step(std::chrono::steady_clock::time_point now) {
    MutexLock lock(&mu_);
    if (finished_) return;
    if (cancelled_) {
      return FinishLocked(ToGrpc(absl::CancelledError("cancelled")), WatchEnd::kClientGone);
    }
    if (!closing_why_.empty()) {
      return FinishLocked(ToGrpc(WithReason(absl::UnavailableError(absl::StrCat(
                                                closing_why_, "; resume with since_revision ", last_sent_)),
                                            reason::kAgentStopping,
                                            {{"lastRevision", absl::StrCat(last_sent_)}})),
                          WatchEnd::kShutdown);
    }
    if (write_failed_) {
      return FinishLocked(ToGrpc(absl::UnavailableError("the client went away")), WatchEnd::kClientGone);
    }
    if (writing_) {
      // Still waiting on the client: only notice falling behind, so a consumer that
      // stopped reading is ended rather than holding its subscription forever.
      absl::StatusOr<std::vector<Event>> probe = subscription_->Take(0);
      if (!probe.ok()) return FinishOnJournalError(probe.status());
      return;
    }
    EventWire& wire = hub_->wire();
    if (have_snapshot_) {
      have_snapshot_ = false;
      return WriteLocked(wire.Message(std::move(snapshot_)), now);
    }
    // Everything that waits, up to a full message: a watcher that is behind catches up
    // with fewer, larger messages when it asked for them (batch_ > 1).
    while (buffered_.size() < batch_) {
      // news_ says whether the journal may hold what was not taken: once drained, the
      // journal notifies again; a full take may have left more, of which it will not.
      news_.store(false);
      absl::StatusOr<std::vector<Event>> got = subscription_->Take(kTakeAtOnce);
      if (!got.ok()) return FinishOnJournalError(got.status());
      if (got->size() == kTakeAtOnce) news_.store(true);
      if (got->empty()) break;
      for (const Event& e : *got) {
        seen_ = e.revision;
        if (Wanted(e)) buffered_.push_back(wire.Serialize(e));
      }
    }
    if (!buffered_.empty()) {
      // More may wait in the buffer: come back after this write.
      return WriteLocked(NextEvents(wire), now);
    }
    if (now - last_write_ >= progress_interval_) {
      v1::WatchEventsResponse msg;
      const uint64_t rev = std::max(seen_, last_sent_);
      msg.mutable_progress()->set_revision(rev);
      last_sent_ = rev;
      WriteLocked(wire.Message(std::move(msg)), now);
    }
  }

  // The hub's tick: a stream finished while its write waited on the client, the write
  // still waiting a second later, is reset (see FinishOnJournalError).
  void ResetIfStalled(std::chrono::steady_clock::time_point now) {
    MutexLock lock(&mu_);
    if (!finished_ || !writing_ || !finished_writing_since_) return;
    if (now - *finished_writing_since_ < std::chrono::seconds(1)) return;
    finished_writing_since_.reset();  // reset once
    ctx_->TryCancel();
  }

  bool Idle(std::chrono::steady_clock::time_point now) {
    MutexLock lock(&mu_);
    return !finished_ && !writing_ && now - last_write_ >= progress_interval_;
  }

  void Close(absl::string_view why) {
    MutexLock lock(&mu_);
    closing_why_ = std::string(why);
  }

  // gRPC callbacks: record and hand over to the hub.
  void OnWriteDone(bool ok) override {
    {
      MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) write_failed_ = true;
      if (ok && !finished_ && !cancelled_ && !have_snapshot_ && closing_why_.empty()) {
        // Taken events wait and the journal has no more to add to the message: send.
        if (!buffered_.empty() && (buffered_.size() >= batch_ || !news_.load())) {
          return WriteLocked(NextEvents(hub_->wire()), std::chrono::steady_clock::now());
        }
        // The hub has nothing to do for a stream that sent all it had and was told of
        // nothing since (at 20 events/s, nearly every write): the journal's next notify,
        // OnCancel, FinishAll or the tick's progress marker wakes it.
        if (buffered_.empty() && !news_.load()) return;
      }
    }
    hub_->Wake(shared_from_this());
  }
  void OnCancel() override {
    {
      MutexLock lock(&mu_);
      cancelled_ = true;
    }
    hub_->Wake(shared_from_this());
  }
  void OnDone() override {
    std::shared_ptr<WatchStream> keep;
    std::shared_ptr<EventSubscription> sub;
    {
      MutexLock lock(&mu_);
      keep = std::move(self_);
      sub = std::move(subscription_);
    }
    if (sub) sub->Close();
    if (counted_) hub_->Release(caller_key_);
  }

 private:
  bool Wanted(const Event& e) const {
    if (types_.any() && !types_.test(static_cast<size_t>(e.type))) return false;
    return heads_.empty() || heads_.contains(e.head);
  }

  // The buffered events for one message: one in `event`, or up to batch_ (and about
  // kBatchBytes) in `batch`.
  grpc::ByteBuffer NextEvents(const EventWire& wire) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    size_t n = 0, bytes = 0;
    while (n < buffered_.size() && n < batch_ && (n == 0 || bytes < kBatchBytes)) {
      bytes += buffered_[n++].body.size();
    }
    last_sent_ = buffered_[n - 1].revision;
    grpc::ByteBuffer out = n == 1 ? wire.One(buffered_.front())
                                  : wire.Batch(absl::MakeConstSpan(buffered_.data(), n));
    buffered_.erase(buffered_.begin(), buffered_.begin() + n);
    return out;
  }

  void WriteLocked(grpc::ByteBuffer msg, std::chrono::steady_clock::time_point now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    out_ = std::move(msg);
    writing_ = true;
    last_write_ = now;
    StartWrite(&out_);
  }

  void FinishOnJournalError(const absl::Status& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (s.code() == absl::StatusCode::kResourceExhausted) {
      FinishLocked(ToGrpc(WithReason(absl::ResourceExhaustedError(absl::StrCat(
                                         "the watcher fell behind (", s.message(),
                                         "); the last revision sent was ", last_sent_)),
                                     reason::kWatcherBehind, {{"lastRevision", absl::StrCat(last_sent_)}})),
                   WatchEnd::kFellBehind);
      // A client that does not take the write in flight would never take the status
      // queued behind it either. One that is only slow takes both (RESOURCE_EXHAUSTED,
      // with the revision to resume from); one still not reading a second later is reset
      // by the hub's tick (ResetIfStalled), so that its slot, its HTTP/2 stream and its
      // message go then rather than when it reads again. It sees CANCELLED; the count
      // above says why.
      if (writing_) finished_writing_since_ = std::chrono::steady_clock::now();
      return;
    }
    FinishLocked(ToGrpc(WithReason(absl::UnavailableError(absl::StrCat(
                                       s.message(), "; resume with since_revision ", last_sent_)),
                                   reason::kAgentStopping, {{"lastRevision", absl::StrCat(last_sent_)}})),
                 WatchEnd::kJournal);
  }

  void FinishLocked(const grpc::Status& s, WatchEnd why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    finished_ = true;
    hub_->Ended(why);
    Finish(s);
  }

  WatchHub* const hub_;
  grpc::CallbackServerContext* const ctx_;  // the call's; valid until OnDone
  const std::string caller_key_;
  const bool counted_;
  absl::flat_hash_set<std::string> heads_;
  std::bitset<kEventTypeCount> types_;
  std::chrono::milliseconds progress_interval_{10000};

  Mutex mu_;
  std::shared_ptr<WatchStream> self_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<EventSubscription> subscription_ ABSL_GUARDED_BY(mu_);
  v1::WatchEventsResponse snapshot_ ABSL_GUARDED_BY(mu_);
  bool have_snapshot_ ABSL_GUARDED_BY(mu_) = false;
  uint32_t batch_ = 1;  // events per message at most (the request's, capped)
  // Taken, wanted, not yet sent: fewer than batch_ + kTakeAtOnce.
  std::vector<WireEvent> buffered_ ABSL_GUARDED_BY(mu_);
  grpc::ByteBuffer out_ ABSL_GUARDED_BY(mu_);
  uint64_t last_sent_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t seen_ ABSL_GUARDED_BY(mu_) = 0;
  std::chrono::steady_clock::time_point last_write_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool write_failed_ ABSL_GUARDED_BY(mu_) = false;
  // Finished with a write waiting on the client since then (cleared once reset).
  std::optional<std::chrono::steady_clock::time_point> finished_writing_since_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  // The journal told of something (events, falling behind, closing) not taken since.
  std::atomic<bool> news_{false};
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  std::string closing_why_ ABSL_GUARDED_BY(mu_);
};

WatchHub::WatchHub(Multipath* mp, WatchOptions options)
    : mp_(mp), options_(options), wire_(mp->journal().incarnation()) {
  thread_ = std::thread([this] { Loop(); });
}

WatchHub::~WatchHub() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  cv_.SignalAll();
  thread_.join();
  std::deque<std::shared_ptr<WatchStream>> left;
  {
    MutexLock lock(&mu_);
    left.swap(ready_);
  }
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* WatchHub::Open(
    grpc::CallbackServerContext* ctx, const Caller& caller, const v1::WatchEventsRequest& req) {
  absl::Status admitted;
  {
    MutexLock lock(&mu_);
    if (closed_) {
      admitted = AgentStoppingError(closed_why_);
    } else if (active_ >= options_.max_watchers) {
      admitted = WithReason(absl::ResourceExhaustedError(absl::StrCat(
                                "the agent serves at most ", options_.max_watchers, " watchers")),
                            reason::kTooManyWatchers, {{"limit", absl::StrCat(options_.max_watchers)}});
    } else if (per_caller_[caller.key] >= options_.max_watchers_per_caller) {
      admitted = WithReason(absl::ResourceExhaustedError(absl::StrCat(
                                "at most ", options_.max_watchers_per_caller, " watchers per caller (",
                                caller.identity, ")")),
                            reason::kTooManyWatchers,
                            {{"limit", absl::StrCat(options_.max_watchers_per_caller)}, {"perCaller", "true"}});
    } else {
      ++active_;
      ++per_caller_[caller.key];
    }
  }
  auto s = std::make_shared<WatchStream>(this, ctx, caller.key, /*counted=*/admitted.ok());
  if (!admitted.ok()) {
    s->FinishNow(admitted);
    return s.get();
  }
  if (absl::Status begun = s->Begin(mp_, req, options_); !begun.ok()) {
    s->FinishNow(begun);
    return s.get();
  }
  {
    MutexLock lock(&mu_);
    streams_.push_back(s);
  }
  Wake(s);
  return s.get();
}

void WatchHub::Wake(std::shared_ptr<WatchStream> s) {
  {
    MutexLock lock(&mu_);
    ready_.push_back(std::move(s));
  }
  cv_.Signal();
}

void WatchHub::Release(const std::string& caller_key) {
  MutexLock lock(&mu_);
  --active_;
  if (--per_caller_[caller_key] == 0) per_caller_.erase(caller_key);
  cv_.SignalAll();  // FinishAll waits for active_ to reach 0
}

const char* WatchEndName(WatchEnd e) {
  switch (e) {
    case WatchEnd::kClientGone: return "client_gone";
    case WatchEnd::kFellBehind: return "fell_behind";
    case WatchEnd::kShutdown: return "shutdown";
    case WatchEnd::kRefused: return "refused";
    case WatchEnd::kJournal: return "journal";
  }
  return "unknown";
}

WatchEndCounts WatchHub::ends() const {
  WatchEndCounts out{};
  for (size_t i = 0; i < kWatchEndCount; ++i) out[i] = ends_[i].load(std::memory_order_relaxed);
  return out;
}

size_t WatchHub::active() const {
  MutexLock lock(&mu_);
  return active_;
}

void WatchHub::FinishAll(absl::string_view why) {
  std::vector<std::shared_ptr<WatchStream>> live;
  {
    MutexLock lock(&mu_);
    closed_ = true;
    closed_why_ = std::string(why);
    for (auto& w : streams_) {
      if (auto s = w.lock()) live.push_back(std::move(s));
    }
    streams_.clear();
  }
  for (auto& s : live) {
    s->Close(why);
    Wake(s);
  }
  live.clear();
  // Every stream is finished by the hub thread; OnDone follows once gRPC has sent it.
  MutexLock lock(&mu_);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (active_ > 0 && std::chrono::steady_clock::now() < deadline) {
    cv_.WaitFor(&mu_, std::chrono::milliseconds(50));
  }
}

void WatchHub::Loop() {
  const auto tick = std::min<std::chrono::milliseconds>(options_.progress_interval,
                                                        std::chrono::milliseconds(1000));
  auto next_tick = std::chrono::steady_clock::now() + tick;
  for (;;) {
    std::deque<std::shared_ptr<WatchStream>> batch;
    bool progress = false;
    {
      MutexLock lock(&mu_);
      while (!stop_ && ready_.empty() && std::chrono::steady_clock::now() < next_tick) {
        cv_.WaitFor(&mu_, next_tick - std::chrono::steady_clock::now());
      }
      if (stop_) return;
      batch.swap(ready_);
      if (std::chrono::steady_clock::now() >= next_tick) {
        progress = true;
        next_tick = std::chrono::steady_clock::now() + tick;
        // Idle streams get their progress marker; forget the finished ones.
        streams_.erase(std::remove_if(streams_.begin(), streams_.end(),
                                      [](const auto& w) { return w.expired(); }),
                       streams_.end());
      }
    }
    const auto now = std::chrono::steady_clock::now();
    if (progress) {
      std::vector<std::shared_ptr<WatchStream>> live;
      {
        MutexLock lock(&mu_);
        for (auto& w : streams_) {
          if (auto s = w.lock()) live.push_back(std::move(s));
        }
      }
      for (auto& s : live) {
        s->ResetIfStalled(now);
        if (s->Idle(now)) batch.push_back(s);
      }
    }
    for (auto& s : batch) s->Step(now);
  }
}

}  // namespace umpath::server
