#include "agent/core/event_journal.h"
#include "agent/core/multipath.h"

#include <atomic>
#include <thread>

#include "agent/base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace umpath {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::umpath::testing::StatusIs;
using ::testing::IsEmpty;
using ::testing::SizeIs;

Event Ev(absl::string_view head) {
  return Event{.type = EventType::kHeadCreated, .head = std::string(head)};
}

std::vector<uint64_t> Revisions(const std::vector<Event>& events) {
  std::vector<uint64_t> out;
  for (const Event& e : events) out.push_back(e.revision);
  return out;
}

TEST(EventTypeTest, NamesRoundTrip) {
  for (int i = 0; i < kEventTypeCount; ++i) {
    const auto t = static_cast<EventType>(i);
    ASSERT_OK_AND_ASSIGN(EventType back, EventTypeFromName(EventTypeName(t)));
    EXPECT_EQ(back, t);
  }
  EXPECT_EQ(EventTypeName(EventType::kRemovalScheduled), "removal-scheduled");
  EXPECT_THAT(EventTypeFromName("removal-sched"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("removal-scheduled")));
}

TEST(EventJournalTest, RevisionsIncreaseByOneAndCarryTheClock) {
  ManualClock clock(/*mono=*/500, /*wall=*/1000);
  EventJournal j(8, &clock);
  EXPECT_EQ(j.current_revision(), 0u);
  EXPECT_EQ(j.oldest_retained_revision(), 1u);
  EXPECT_EQ(j.Append(Ev("a")), 1u);
  clock.Advance(5);
  EXPECT_EQ(j.Append(Ev("b")), 2u);
  ASSERT_OK_AND_ASSIGN(std::vector<Event> all, j.ReadSince(0, 100));
  ASSERT_THAT(all, SizeIs(2));
  EXPECT_EQ(all[0].revision, 1u);
  EXPECT_EQ(all[0].head, "a");
  EXPECT_EQ(all[0].wall_nanos, 1000);
  EXPECT_EQ(all[1].wall_nanos, 1005);
  EXPECT_THAT(all[1].ToString(), HasSubstr("revision=2 type=head-created head=\"b\""));
}

// A restarted agent's journal starts past the old one's revisions: a watcher resuming
// with an old revision is told, never served this run's events as if they followed.
TEST(EventJournalTest, AnotherRunsRevisionIsRefusedNotServed) {
  ManualClock clock;
  EventJournal j(8, &clock, /*first_revision=*/1000, "0123456789abcdef");
  EXPECT_EQ(j.current_revision(), 999u);
  EXPECT_EQ(j.first_revision(), 1000u);
  EXPECT_EQ(j.incarnation(), "0123456789abcdef");
  EXPECT_EQ(j.Append(Ev("a")), 1000u);
  EXPECT_EQ(j.Append(Ev("b")), 1001u);
  // 0 is "from the first event", as before.
  ASSERT_OK_AND_ASSIGN(std::vector<Event> all, j.ReadSince(0, 100));
  ASSERT_THAT(all, SizeIs(2));
  EXPECT_EQ(all[0].revision, 1000u);
  ASSERT_OK(j.Subscribe(0, 10, nullptr));
  ASSERT_OK(j.Subscribe(999, 10, nullptr));
  // Revision 6 of an earlier run: refused, naming this run.
  for (uint64_t old : {1u, 6u, 998u}) {
    absl::StatusOr<std::vector<Event>> r = j.ReadSince(old, 100);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kOutOfRange) << old;
    EXPECT_THAT(r.status().message(),
                HasSubstr("is from before this agent started (incarnation 0123456789abcdef began at "
                          "revision 1000)"));
    EXPECT_EQ(j.Subscribe(old, 10, nullptr).status().code(), absl::StatusCode::kOutOfRange) << old;
  }
}

TEST(EventJournalTest, IncarnationsAreNewAtEachStartAndBeginPastEachOther) {
  ManualClock clock;
  const Incarnation a = MakeIncarnation(clock);
  clock.AdvanceSeconds(1);
  const Incarnation b = MakeIncarnation(clock);
  EXPECT_EQ(a.name.size(), 16u);
  EXPECT_NE(a.name, b.name);
  // A second later, a million revisions later: past anything the first run reached.
  EXPECT_EQ(b.first - a.first, 1'000'000u);
}

TEST(EventJournalTest, RetentionIsBoundedAndOldRevisionsAreOutOfRange) {
  ManualClock clock;
  EventJournal j(3, &clock);
  for (int i = 0; i < 5; ++i) j.Append(Ev("h"));
  EXPECT_EQ(j.oldest_retained_revision(), 3u);
  ASSERT_OK_AND_ASSIGN(std::vector<Event> kept, j.ReadSince(2, 100));
  EXPECT_THAT(Revisions(kept), ElementsAre(3, 4, 5));
  EXPECT_THAT(j.ReadSince(1, 100), StatusIs(absl::StatusCode::kOutOfRange,
                                            HasSubstr("oldest retained revision is 3")));
  EXPECT_THAT(j.ReadSince(6, 100), StatusIs(absl::StatusCode::kInvalidArgument,
                                            HasSubstr("ahead of the current revision 5")));
  ASSERT_OK_AND_ASSIGN(std::vector<Event> two, j.ReadSince(2, 2));
  EXPECT_THAT(Revisions(two), ElementsAre(3, 4));
  ASSERT_OK_AND_ASSIGN(std::vector<Event> none, j.ReadSince(5, 2));
  EXPECT_THAT(none, IsEmpty());
}

TEST(EventJournalTest, SubscriptionResumesAfterARetainedRevision) {
  ManualClock clock;
  EventJournal j(16, &clock);
  for (int i = 0; i < 4; ++i) j.Append(Ev("h"));
  ASSERT_OK_AND_ASSIGN(auto sub, j.Subscribe(2, 8, nullptr));
  ASSERT_OK_AND_ASSIGN(std::vector<Event> got, sub->Take(100));
  EXPECT_THAT(Revisions(got), ElementsAre(3, 4));
  ASSERT_OK_AND_ASSIGN(got, sub->Take(100));
  EXPECT_THAT(got, IsEmpty());
  j.Append(Ev("h"));
  ASSERT_OK_AND_ASSIGN(got, sub->Take(100));
  EXPECT_THAT(Revisions(got), ElementsAre(5));
  EXPECT_EQ(sub->last_taken_revision(), 5u);
  EXPECT_EQ(j.subscriber_count(), 1u);
}

TEST(EventJournalTest, SubscribeRejectsBadRevisionsAndLimits) {
  ManualClock clock;
  EventJournal j(2, &clock);
  for (int i = 0; i < 4; ++i) j.Append(Ev("h"));
  EXPECT_THAT(j.Subscribe(1, 8, nullptr), StatusIs(absl::StatusCode::kOutOfRange,
                                                   HasSubstr("oldest retained revision is 3")));
  EXPECT_THAT(j.Subscribe(9, 8, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(j.Subscribe(4, 0, nullptr), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(j.subscriber_count(), 0u);
}

TEST(EventJournalTest, SlowConsumerIsToldItFellBehindNeverSkipped) {
  ManualClock clock;
  EventJournal j(100, &clock);
  ASSERT_OK_AND_ASSIGN(auto sub, j.Subscribe(0, 2, nullptr));
  j.Append(Ev("a"));
  j.Append(Ev("b"));
  ASSERT_OK_AND_ASSIGN(std::vector<Event> got, sub->Take(1));
  EXPECT_THAT(Revisions(got), ElementsAre(1));
  j.Append(Ev("c"));  // 2 waiting: at the limit, still fine
  j.Append(Ev("d"));  // 3 waiting: behind
  EXPECT_THAT(sub->Take(100), StatusIs(absl::StatusCode::kResourceExhausted,
                                       HasSubstr("resume from revision 1")));
  // Latched: draining the journal does not make it whole again.
  EXPECT_THAT(sub->Take(100), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(sub->last_taken_revision(), 1u);
  // The consumer resumes where it was.
  ASSERT_OK_AND_ASSIGN(auto again, j.Subscribe(sub->last_taken_revision(), 8, nullptr));
  ASSERT_OK_AND_ASSIGN(got, again->Take(100));
  EXPECT_THAT(Revisions(got), ElementsAre(2, 3, 4));
}

TEST(EventJournalTest, ConsumerOverrunByRetentionFallsBehind) {
  ManualClock clock;
  EventJournal j(2, &clock);
  ASSERT_OK_AND_ASSIGN(auto sub, j.Subscribe(0, 100, nullptr));
  for (int i = 0; i < 3; ++i) j.Append(Ev("h"));
  EXPECT_THAT(sub->Take(100), StatusIs(absl::StatusCode::kResourceExhausted,
                                       HasSubstr("oldest retained revision is 2")));
}

TEST(EventJournalTest, BacklogOnResumeDoesNotCountAgainstTheQueueLimit) {
  ManualClock clock;
  EventJournal j(100, &clock);
  for (int i = 0; i < 10; ++i) j.Append(Ev("h"));
  ASSERT_OK_AND_ASSIGN(auto sub, j.Subscribe(0, 2, nullptr));
  j.Append(Ev("h"));
  ASSERT_OK_AND_ASSIGN(std::vector<Event> got, sub->Take(100));
  EXPECT_THAT(got, SizeIs(11));
}

TEST(EventJournalTest, NotifyFiresOncePerTransitionToReady) {
  ManualClock clock;
  EventJournal j(100, &clock);
  int calls = 0;
  ASSERT_OK_AND_ASSIGN(auto sub, j.Subscribe(0, 100, [&calls] { ++calls; }));
  j.Append(Ev("a"));
  j.Append(Ev("b"));
  EXPECT_EQ(calls, 1);
  ASSERT_OK(sub->Take(1).status());
  j.Append(Ev("c"));  // still not drained: no new call needed
  EXPECT_EQ(calls, 1);
  ASSERT_OK(sub->Take(100).status());
  j.Append(Ev("d"));
  EXPECT_EQ(calls, 2);
  sub->Close();
  j.Append(Ev("e"));
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(j.subscriber_count(), 0u);
  EXPECT_THAT(sub->Take(100), StatusIs(absl::StatusCode::kCancelled));
}

TEST(EventJournalTest, CloseAllDeliversWhatCameBeforeThenCancels) {
  ManualClock clock;
  auto j = std::make_unique<EventJournal>(100, &clock);
  int calls = 0;
  ASSERT_OK_AND_ASSIGN(auto sub, j->Subscribe(0, 100, [&calls] { ++calls; }));
  j->Append(Ev("a"));
  ASSERT_OK(sub->Take(100).status());
  j->Append(Ev("b"));
  j->CloseAll("agent shutting down");
  EXPECT_THAT(j->Subscribe(0, 10, nullptr), StatusIs(absl::StatusCode::kUnavailable));
  j.reset();  // the subscription outlives the journal
  ASSERT_OK_AND_ASSIGN(std::vector<Event> got, sub->Take(100));
  EXPECT_THAT(Revisions(got), ElementsAre(2));
  EXPECT_THAT(sub->Take(100),
              StatusIs(absl::StatusCode::kCancelled, HasSubstr("agent shutting down")));
  EXPECT_TRUE(sub->WaitForEvents(std::chrono::seconds(0)));
}

TEST(EventJournalTest, CloseAllWakesAnIdleSubscriber) {
  ManualClock clock;
  EventJournal j(100, &clock);
  int calls = 0;
  ASSERT_OK_AND_ASSIGN(auto sub, j.Subscribe(0, 100, [&calls] { ++calls; }));
  EXPECT_FALSE(sub->WaitForEvents(std::chrono::milliseconds(1)));
  j.CloseAll();
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(sub->WaitForEvents(std::chrono::milliseconds(1)));
  EXPECT_THAT(sub->Take(100), StatusIs(absl::StatusCode::kCancelled));
}

// A writer and several readers, each reader checking it sees every revision in order
// or is told it fell behind. TSan runs this.
TEST(EventJournalTest, ConcurrentAppendAndTakeSeeEveryRevisionInOrder) {
  EventJournal j(64, SystemClock::Get());
  constexpr int kEvents = 20000;
  constexpr int kReaders = 3;
  std::atomic<int> complete{0}, behind{0};
  std::vector<std::thread> readers;
  std::vector<std::shared_ptr<EventSubscription>> subs;
  for (int r = 0; r < kReaders; ++r) {
    ASSERT_OK_AND_ASSIGN(auto sub, j.Subscribe(0, r == 0 ? 1 : 64, nullptr));
    subs.push_back(sub);
  }
  for (int r = 0; r < kReaders; ++r) {
    readers.emplace_back([&, sub = subs[r]] {
      uint64_t expect = 1;
      while (true) {
        sub->WaitForEvents(std::chrono::milliseconds(50));
        absl::StatusOr<std::vector<Event>> got = sub->Take(16);
        if (!got.ok()) {
          if (got.status().code() == absl::StatusCode::kResourceExhausted) ++behind;
          return;
        }
        for (const Event& e : *got) {
          if (e.revision != expect) {
            ADD_FAILURE() << "revision " << e.revision << ", expected " << expect;
            return;
          }
          ++expect;
        }
        if (expect > kEvents) {
          ++complete;
          return;
        }
      }
    });
  }
  for (int i = 0; i < kEvents; ++i) j.Append(Ev("h"));
  for (auto& t : readers) t.join();
  EXPECT_EQ(complete + behind, kReaders);
  EXPECT_EQ(j.current_revision(), uint64_t{kEvents});
}

}  // namespace
}  // namespace umpath
