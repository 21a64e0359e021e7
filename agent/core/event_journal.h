#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/core/clock.h"

namespace umpath {

// Every state change the agent makes is one event (DESIGN.md "Events").
enum class EventType : uint8_t {
  kControllerAdded,
  kControllerStateChanged,
  kControllerRemoved,
  kHeadCreated,
  kHeadRemoved,
  kPathAdded,
  kPathRejected,
  kPathStateChanged,
  kPathRemoved,
  kRemovalScheduled,
  kRemovalCancelled,
  kRemovalRescheduled,
  kDelayedRemovalChanged,
  kPolicyChanged,
  kDefaultsChanged,
  kAnaLogRejected,
  kHeadExported,
  kHeadUnexported,
  kIoFailTimeoutChanged,
  // SEMANTICS "Fast fail": the head had no usable path for io_fail_timeout_secs; its
  // waiting I/O failed and new I/O fails at once (started), until a path is usable (ended).
  kFastFailStarted,
  kFastFailEnded,
};
inline constexpr int kEventTypeCount = 21;

// "removal-scheduled" and so on: the names the API, the CLI and the logs use.
absl::string_view EventTypeName(EventType t);
// INVALID_ARGUMENT naming the accepted names for anything else.
absl::StatusOr<EventType> EventTypeFromName(absl::string_view name);

struct Event {
  uint64_t revision = 0;   // set by the journal: 1, 2, 3, ... with no gaps
  int64_t wall_nanos = 0;  // set by the journal: when it was appended
  EventType type = EventType::kControllerAdded;
  std::string head;
  std::string path;
  std::string controller;
  std::string from;
  std::string to;
  std::string reason;
  int64_t deadline_wall_nanos = 0;  // removal events: when the head will be removed

  // One line, key=value, for logs and tests.
  std::string ToString() const;
};

class EventSubscription;

// The journal: a bounded, ordered history of events, and the subscriptions that follow
// it. Revisions increase by one per event and never repeat within an agent's life; the
// oldest events are dropped when more than `capacity` are held.
//
// A subscription is a cursor into the journal, not a copy: it falls behind when the
// events it has not taken are more than its queue limit, or when the journal dropped
// events it had not taken. Either way it is ended with RESOURCE_EXHAUSTED, never
// silently skipped; the consumer may resume from last_taken_revision() if that is
// still retained.
//
// Thread-safe. `notify` callbacks run on the appending thread under the journal's lock
// (so none runs after its subscription's Close() returns) and possibly under the
// caller's locks: they must only wake something (a reactor, a condition variable) and
// never block or call back into the journal or the agent.
class EventJournal {
 public:
  // Revisions start at `first_revision`: an agent starts its journal past any revision an
  // earlier run of it could have reached (the wall clock in microseconds), so a revision
  // from another run is never served as this one's. `incarnation` names this run.
  EventJournal(size_t capacity, const Clock* clock, uint64_t first_revision = 1,
               std::string incarnation = "");
  ~EventJournal();
  EventJournal(const EventJournal&) = delete;
  EventJournal& operator=(const EventJournal&) = delete;

  // Assigns the next revision and the current wall time; returns the revision.
  uint64_t Append(Event e);

  uint64_t current_revision() const;  // first_revision - 1 before the first event
  uint64_t first_revision() const;
  const std::string& incarnation() const;
  // The oldest event still held; current_revision() + 1 when none is.
  uint64_t oldest_retained_revision() const;
  size_t capacity() const;

  // The events after `since` (0: from the first), at most `max`. INVALID_ARGUMENT when
  // `since` is ahead of the current revision; OUT_OF_RANGE, naming the oldest retained
  // revision, when events after `since` were already dropped, or naming the incarnation
  // when `since` is from before this journal began (another run of the agent).
  absl::StatusOr<std::vector<Event>> ReadSince(uint64_t since, size_t max) const;

  // Follows the journal from the event after `since` (the same errors as ReadSince;
  // UNAVAILABLE once the journal is closed). `queue_limit` (at least 1) bounds how
  // many events that arrive after subscribing may wait untaken. `notify` (may be
  // empty) is called when the subscription goes from nothing-to-take to
  // something-to-take (events, falling behind, or closing).
  absl::StatusOr<std::shared_ptr<EventSubscription>> Subscribe(uint64_t since,
                                                               size_t queue_limit,
                                                               std::function<void()> notify);

  // Ends every subscription (they answer CANCELLED with `reason`) and refuses new ones.
  void CloseAll(absl::string_view reason = "the agent is shutting down");
  size_t subscriber_count() const;

  struct State;  // shared with the subscriptions, which may outlive the journal

 private:
  std::shared_ptr<State> state_;
};

class EventSubscription {
 public:
  ~EventSubscription();
  EventSubscription(const EventSubscription&) = delete;
  EventSubscription& operator=(const EventSubscription&) = delete;

  // Up to `max` events, oldest first; empty when nothing is new. RESOURCE_EXHAUSTED
  // once the subscription fell behind, CANCELLED once it was closed (after the events
  // that came before the close were taken).
  absl::StatusOr<std::vector<Event>> Take(size_t max);
  // Blocks until Take would return something (events or an error) or `timeout`
  // passes; true if it would.
  bool WaitForEvents(std::chrono::nanoseconds timeout);
  // The revision of the last event taken (or the `since` it started from).
  uint64_t last_taken_revision() const;
  // Stops following; Take answers CANCELLED afterwards. Idempotent.
  void Close();

 private:
  friend class EventJournal;
  struct Sub;
  EventSubscription(std::shared_ptr<EventJournal::State> state, std::shared_ptr<Sub> sub);

  std::shared_ptr<EventJournal::State> state_;
  std::shared_ptr<Sub> sub_;
};

}  // namespace umpath
