// WatchEvents fan-out: each event serialized once for every watcher, and several events
// to a message for a watcher that asked (max_events_per_message) when it is behind.
#include <cstdint>
#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/testing/server_test.h"

namespace umpath::server {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// What a watcher read: every event's revision in the order received, and how many
// events each message carried (1 for `event`, the batch's size for `batch`).
struct Received {
  std::vector<uint64_t> revisions;
  std::vector<int> per_message;
  grpc::Status status;
};

// Reads `events` events (or until the stream ends), then cancels and drains the rest.
Received ReadEvents(grpc::ClientContext* ctx, grpc::ClientReader<v1::WatchEventsResponse>* reader,
                    size_t events) {
  Received got;
  v1::WatchEventsResponse msg;
  while (got.revisions.size() < events && reader->Read(&msg)) {
    EXPECT_EQ(msg.incarnation(), "00000000000000aa");
    if (msg.has_event()) {
      got.revisions.push_back(msg.event().revision());
      got.per_message.push_back(1);
    } else if (msg.has_batch()) {
      for (const v1::Event& e : msg.batch().events()) got.revisions.push_back(e.revision());
      got.per_message.push_back(msg.batch().events_size());
    }
  }
  if (got.revisions.size() >= events) ctx->TryCancel();
  while (reader->Read(&msg)) {
  }
  got.status = reader->Finish();
  return got;
}

std::vector<uint64_t> Revisions(uint64_t first, uint64_t last) {
  std::vector<uint64_t> out;
  for (uint64_t r = first; r <= last; ++r) out.push_back(r);
  return out;
}

// A watcher resuming with 150 events waiting is behind from its first message: the
// request's max_events_per_message decides how they are packed, and nothing else
// changes. Without batching (0, 1: the old clients) every message is one `event`. More
// wait than one take from the journal holds (64): a stream that sent all it had taken
// must still go on to the rest, which the journal will not tell it of again.
TEST_F(ServerTest, AWatcherBehindGetsBatchesOnlyIfItAskedAndEveryEventOnceInOrder) {
  MultipathOptions mo;
  mo.journal_capacity = 256;
  mo.incarnation = "00000000000000aa";
  ASSERT_OK_AND_ASSIGN(mp_, Multipath::Create(mo));
  ASSERT_OK(testing::AddTestTopology(mp_.get(), 2, 3));
  Start();
  const uint64_t from = mp_->journal().current_revision();
  for (int i = 0; i < 150; ++i) ASSERT_OK(mp_->SetDelayedRemoval(head_.substr(6), 1 + i % 2));
  struct Case {
    uint32_t max_events_per_message;
    std::vector<int> per_message;
  };
  std::vector<int> sixteens(9, 16);
  sixteens.push_back(6);
  const Case cases[] = {
      {0, std::vector<int>(150, 1)},
      {1, std::vector<int>(150, 1)},
      {16, sixteens},
      {100000, {150}},  // capped at 256
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.max_events_per_message);
    v1::WatchEventsRequest req;
    req.set_since_revision(from);
    req.set_max_events_per_message(c.max_events_per_message);
    grpc::ClientContext ctx;
    // Well before the hub's progress marker (10 s) would move a stalled stream on.
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    auto reader = stub_->WatchEvents(&ctx, req);
    Received got = ReadEvents(&ctx, reader.get(), 150);
    EXPECT_THAT(got.revisions, ElementsAreArray(Revisions(from + 1, from + 150)));
    EXPECT_THAT(got.per_message, ElementsAreArray(c.per_message));
    EXPECT_EQ(got.status.error_code(), grpc::StatusCode::CANCELLED) << got.status.error_message();
  }
}

// Live events after a snapshot, many watchers with and without batching: each gets
// every event exactly once and in order, and each event was serialized once for all.
TEST_F(ServerTest, EveryWatcherGetsEveryEventOnceAndEachIsSerializedOnce) {
  Start();
  constexpr int kWatchers = 6;
  constexpr int kEvents = 50;
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::WatchEventsResponse>>> readers;
  uint64_t base = 0;
  for (int i = 0; i < kWatchers; ++i) {
    v1::WatchEventsRequest req;
    req.set_max_events_per_message(i % 2 ? 8 : 0);
    ctxs.push_back(std::make_unique<grpc::ClientContext>());
    readers.push_back(stub_->WatchEvents(ctxs.back().get(), req));
    v1::WatchEventsResponse msg;
    ASSERT_TRUE(readers.back()->Read(&msg));
    ASSERT_TRUE(msg.has_snapshot());
    base = msg.snapshot().revision();
  }
  const uint64_t serialized_before = server_->service().events_serialized();
  for (int i = 0; i < kEvents; ++i) ASSERT_OK(mp_->SetDelayedRemoval(head_.substr(6), 1 + i % 2));
  for (int i = 0; i < kWatchers; ++i) {
    SCOPED_TRACE(i);
    Received got = ReadEvents(ctxs[i].get(), readers[i].get(), kEvents);
    EXPECT_THAT(got.revisions, ElementsAreArray(Revisions(base + 1, base + kEvents)));
    if (i % 2 == 0) {
      EXPECT_THAT(got.per_message, ::testing::Each(1));
    }
  }
  EXPECT_EQ(server_->service().events_serialized() - serialized_before, uint64_t{kEvents});
}

// The fell-behind rule holds with batches: never a gap, and RESOURCE_EXHAUSTED names the
// last revision the watcher got (the last of a batch). It resumes with 60 events waiting,
// so its first message is a batch when it asked for them.
TEST_F(ServerTest, ABatchingWatcherThatFallsBehindIsEndedNeverSkipped) {
  Start(Self(Role::kAdmin), std::chrono::milliseconds(10000), /*queue_limit=*/8);
  for (uint32_t batch : {0u, 4u}) {
    SCOPED_TRACE(batch);
    const uint64_t from = mp_->journal().current_revision();
    for (int i = 0; i < 60; ++i) ASSERT_OK(mp_->SetDelayedRemoval(head_.substr(6), 1 + i % 2));
    v1::WatchEventsRequest req;
    req.set_since_revision(from);
    req.set_max_events_per_message(batch);
    grpc::ClientContext ctx;
    auto reader = stub_->WatchEvents(&ctx, req);
    v1::WatchEventsResponse msg;
    ASSERT_TRUE(reader->Read(&msg));  // the first message, so the stream is under way
    std::vector<uint64_t> revisions;
    if (msg.has_event()) revisions.push_back(msg.event().revision());
    for (const v1::Event& e : msg.batch().events()) revisions.push_back(e.revision());
    ASSERT_EQ(revisions.size(), std::max(batch, 1u));
    // Far more events than the watcher may fall behind by (and than the HTTP/2 windows
    // hold), before it reads on.
    for (int i = 0; i < 5000; ++i) ASSERT_OK(mp_->SetDelayedRemoval(head_.substr(6), 1 + i % 2));
    Received rest = ReadEvents(&ctx, reader.get(), SIZE_MAX);
    revisions.insert(revisions.end(), rest.revisions.begin(), rest.revisions.end());
    EXPECT_THAT(revisions, ElementsAreArray(Revisions(from + 1, revisions.back())));
    EXPECT_LT(revisions.back(), from + 5060);
    for (int n : rest.per_message) {
      EXPECT_LE(n, static_cast<int>(std::max(batch, 1u)));
    }
    EXPECT_EQ(rest.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_THAT(rest.status.error_message(),
                HasSubstr("last revision sent was " + std::to_string(revisions.back())));
  }
}

}  // namespace
}  // namespace umpath::server
