#include "agent/core/event_journal.h"

#include <algorithm>
#include <deque>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/base/error_reason.h"
#include "agent/base/mutex.h"

namespace umpath {

namespace {

constexpr absl::string_view kEventTypeNames[kEventTypeCount] = {
    "controller-added",      "controller-state-changed", "controller-removed",
    "head-created",          "head-removed",             "path-added",
    "path-rejected",         "path-state-changed",       "path-removed",
    "removal-scheduled",     "removal-cancelled",        "removal-rescheduled",
    "delayed-removal-changed", "policy-changed",         "defaults-changed",
    "ana-log-rejected",      "head-exported",            "head-unexported",
    "io-fail-timeout-changed", "fast-fail-started",      "fast-fail-ended",
};

}  // namespace

absl::string_view EventTypeName(EventType t) {
  const auto i = static_cast<size_t>(t);
  return i < kEventTypeCount ? kEventTypeNames[i] : "unknown";
}

absl::StatusOr<EventType> EventTypeFromName(absl::string_view name) {
  for (int i = 0; i < kEventTypeCount; ++i) {
    if (kEventTypeNames[i] == name) return static_cast<EventType>(i);
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown event type \"", name,
                                                 "\"; expected one of ",
                                                 absl::StrJoin(kEventTypeNames, ", ")));
}

std::string Event::ToString() const {
  std::string out = absl::StrCat("revision=", revision, " type=", EventTypeName(type));
  auto add = [&out](absl::string_view key, const std::string& value) {
    if (!value.empty()) absl::StrAppend(&out, " ", key, "=\"", value, "\"");
  };
  add("head", head);
  add("path", path);
  add("controller", controller);
  add("from", from);
  add("to", to);
  add("reason", reason);
  if (deadline_wall_nanos != 0) absl::StrAppend(&out, " deadline_wall_nanos=", deadline_wall_nanos);
  return out;
}

struct EventSubscription::Sub {
  uint64_t cursor = 0;  // the last revision taken
  uint64_t start = 0;   // the revision current when it subscribed
  size_t limit = 1;
  std::function<void()> notify;
  bool signalled = false;  // notify was called and nothing was taken since
  bool behind = false;
  std::string behind_why;
  bool closed = false;
  uint64_t closed_at = 0;  // events up to here are still delivered after a CloseAll
  std::string closed_why;
};

struct EventJournal::State {
  State(size_t capacity, const Clock* clock, uint64_t first, std::string incarnation)
      : capacity(capacity), clock(clock), first(first), incarnation(std::move(incarnation)),
        current(first - 1) {}

  const size_t capacity;
  const Clock* const clock;
  const uint64_t first;
  const std::string incarnation;
  mutable Mutex mu;
  CondVar cv;
  std::deque<Event> events ABSL_GUARDED_BY(mu);
  uint64_t current ABSL_GUARDED_BY(mu);
  bool closed ABSL_GUARDED_BY(mu) = false;
  std::vector<std::shared_ptr<EventSubscription::Sub>> subs ABSL_GUARDED_BY(mu);

  uint64_t Oldest() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return events.empty() ? current + 1 : events.front().revision;
  }

  // 0 is "from the first event".
  uint64_t Normalized(uint64_t since) const { return since == 0 ? first - 1 : since; }

  absl::Status CheckSince(uint64_t since) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (since + 1 < first) {
      return WithReason(absl::OutOfRangeError(absl::StrCat(
                            "revision ", since, " is from before this agent started (incarnation ",
                            incarnation.empty() ? "unnamed" : incarnation, " began at revision ", first,
                            "); start again from a snapshot")),
                        reason::kRevisionNotRetained, {{"oldestRevision", absl::StrCat(Oldest())}});
    }
    if (since > current) {
      return RangeError("since_revision", 0, static_cast<int64_t>(current),
                        absl::StrCat("revision ", since, " is ahead of the current revision ", current));
    }
    if (since + 1 < Oldest()) {
      return WithReason(absl::OutOfRangeError(absl::StrCat(
                            "revision ", since, " is no longer retained; the oldest retained revision is ",
                            Oldest())),
                        reason::kRevisionNotRetained, {{"oldestRevision", absl::StrCat(Oldest())}});
    }
    return absl::OkStatus();
  }

  // Latches `behind` when the subscription can no longer be served in order.
  void CheckBehind(EventSubscription::Sub& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (s.behind || s.closed) return;
    const uint64_t live_pending = current - std::max(s.cursor, s.start);
    if (live_pending > s.limit) {
      s.behind = true;
      s.behind_why = absl::StrCat("the consumer fell behind: more than ", s.limit,
                                  " events waiting after revision ", s.cursor,
                                  "; resume from revision ", s.cursor);
    } else if (s.cursor + 1 < Oldest()) {
      s.behind = true;
      s.behind_why = absl::StrCat("the consumer fell behind: events after revision ", s.cursor,
                                  " were dropped; the oldest retained revision is ", Oldest());
    }
  }

  bool Ready(EventSubscription::Sub& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    CheckBehind(s);
    if (s.behind || s.closed) return true;
    return s.cursor < current;
  }
};

EventJournal::EventJournal(size_t capacity, const Clock* clock, uint64_t first_revision,
                           std::string incarnation)
    : state_(std::make_shared<State>(std::max<size_t>(capacity, 1), clock,
                                     std::max<uint64_t>(first_revision, 1), std::move(incarnation))) {}

uint64_t EventJournal::first_revision() const { return state_->first; }
const std::string& EventJournal::incarnation() const { return state_->incarnation; }

EventJournal::~EventJournal() { CloseAll("the event journal was destroyed"); }

uint64_t EventJournal::Append(Event e) {
  uint64_t revision;
  {
    MutexLock lock(&state_->mu);
    revision = ++state_->current;
    e.revision = revision;
    e.wall_nanos = state_->clock->WallNanos();
    state_->events.push_back(std::move(e));
    while (state_->events.size() > state_->capacity) state_->events.pop_front();
    for (const auto& s : state_->subs) {
      const bool was_behind = s->behind;
      state_->CheckBehind(*s);
      // Under the lock, so that once Close() returns its notify never runs again. Falling
      // behind is told even to a consumer signalled before and not drained since (a
      // watcher whose write waits on a client that stopped reading): nothing else would
      // wake it, and it would hold its subscription forever.
      if (!s->signalled || (s->behind && !was_behind)) {
        s->signalled = true;
        if (s->notify) s->notify();
      }
    }
  }
  state_->cv.SignalAll();
  return revision;
}

uint64_t EventJournal::current_revision() const {
  MutexLock lock(&state_->mu);
  return state_->current;
}

uint64_t EventJournal::oldest_retained_revision() const {
  MutexLock lock(&state_->mu);
  return state_->Oldest();
}

size_t EventJournal::capacity() const { return state_->capacity; }

absl::StatusOr<std::vector<Event>> EventJournal::ReadSince(uint64_t since, size_t max) const {
  since = state_->Normalized(since);
  MutexLock lock(&state_->mu);
  if (absl::Status s = state_->CheckSince(since); !s.ok()) return s;
  std::vector<Event> out;
  const uint64_t oldest = state_->Oldest();
  for (uint64_t r = since + 1; r <= state_->current && out.size() < max; ++r) {
    out.push_back(state_->events[r - oldest]);
  }
  return out;
}

absl::StatusOr<std::shared_ptr<EventSubscription>> EventJournal::Subscribe(
    uint64_t since, size_t queue_limit, std::function<void()> notify) {
  if (queue_limit == 0) return absl::InvalidArgumentError("queue_limit must be at least 1");
  since = state_->Normalized(since);
  auto sub = std::make_shared<EventSubscription::Sub>();
  {
    MutexLock lock(&state_->mu);
    if (state_->closed) return absl::UnavailableError("the event journal is closed");
    if (absl::Status s = state_->CheckSince(since); !s.ok()) return s;
    sub->cursor = since;
    sub->start = state_->current;
    sub->limit = queue_limit;
    sub->notify = std::move(notify);
    state_->subs.push_back(sub);
  }
  return std::shared_ptr<EventSubscription>(new EventSubscription(state_, std::move(sub)));
}

void EventJournal::CloseAll(absl::string_view reason) {
  {
    MutexLock lock(&state_->mu);
    state_->closed = true;
    for (const auto& s : state_->subs) {
      s->closed = true;
      s->closed_at = state_->current;
      s->closed_why = std::string(reason);
      if (!s->signalled) {
        s->signalled = true;
        if (s->notify) s->notify();
      }
    }
    state_->subs.clear();
  }
  state_->cv.SignalAll();
}

size_t EventJournal::subscriber_count() const {
  MutexLock lock(&state_->mu);
  return state_->subs.size();
}

EventSubscription::EventSubscription(std::shared_ptr<EventJournal::State> state,
                                     std::shared_ptr<Sub> sub)
    : state_(std::move(state)), sub_(std::move(sub)) {}

EventSubscription::~EventSubscription() { Close(); }

absl::StatusOr<std::vector<Event>> EventSubscription::Take(size_t max) {
  MutexLock lock(&state_->mu);
  Sub& s = *sub_;
  state_->CheckBehind(s);
  if (s.behind) return absl::ResourceExhaustedError(s.behind_why);
  const uint64_t end = s.closed ? std::min(s.closed_at, state_->current) : state_->current;
  std::vector<Event> out;
  if (s.cursor < end) {
    const uint64_t oldest = state_->Oldest();
    const uint64_t n = std::min<uint64_t>(end - s.cursor, max);
    out.reserve(n);
    for (uint64_t r = s.cursor + 1; r <= s.cursor + n; ++r) {
      out.push_back(state_->events[r - oldest]);
    }
    s.cursor += n;
  }
  if (out.empty() && s.closed) return absl::CancelledError(s.closed_why);
  if (s.cursor >= end && !s.closed) s.signalled = false;
  return out;
}

bool EventSubscription::WaitForEvents(std::chrono::nanoseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  MutexLock lock(&state_->mu);
  while (!state_->Ready(*sub_)) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return false;
    state_->cv.WaitFor(&state_->mu, deadline - now);
  }
  return true;
}

uint64_t EventSubscription::last_taken_revision() const {
  MutexLock lock(&state_->mu);
  return sub_->cursor;
}

void EventSubscription::Close() {
  MutexLock lock(&state_->mu);
  Sub& s = *sub_;
  auto& subs = state_->subs;
  subs.erase(std::remove(subs.begin(), subs.end(), sub_), subs.end());
  if (s.closed) return;
  s.closed = true;
  s.closed_at = s.cursor;
  s.closed_why = "the subscription was closed";
}

}  // namespace umpath
