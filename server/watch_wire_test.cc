#include "server/watch_wire.h"

#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/convert.h"

namespace umpath::server {
namespace {

Event MakeEvent(uint64_t revision) {
  Event e;
  e.revision = revision;
  e.wall_nanos = 1'700'000'000'123'456'789;
  e.type = EventType::kPathStateChanged;
  e.head = "nguid-ab000000000000000000000000000001";
  e.path = "c1";
  e.from = "live";
  e.to = std::string(300, 'x');  // a length that takes two bytes to encode
  e.reason = "test";
  return e;
}

v1::WatchEventsResponse Parse(const grpc::ByteBuffer& b) {
  grpc::Slice flat;
  EXPECT_TRUE(b.DumpToSingleSlice(&flat).ok());
  v1::WatchEventsResponse m;
  EXPECT_TRUE(m.ParseFromArray(flat.begin(), static_cast<int>(flat.size())));
  return m;
}

// What the typed path (ToProto, then serialize the whole response) sends.
v1::WatchEventsResponse Typed(const std::vector<Event>& es, bool batch) {
  v1::WatchEventsResponse m;
  for (const Event& e : es) ToProto(e, batch ? m.mutable_batch()->add_events() : m.mutable_event());
  m.set_incarnation("00000000000000aa");
  return m;
}

class EventWireTest : public ::testing::Test {
 protected:
  grpc::internal::GrpcLibraryInitializer init_;  // grpc::Slice needs the library
};

TEST_F(EventWireTest, OneEventIsTheTypedMessageByteForByte) {
  EventWire wire("00000000000000aa");
  const Event e = MakeEvent(7);
  grpc::Slice flat;
  ASSERT_TRUE(wire.One(wire.Serialize(e)).DumpToSingleSlice(&flat).ok());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(flat.begin()), flat.size()),
            Typed({e}, false).SerializeAsString());
}

TEST_F(EventWireTest, ABatchParsesAsTheTypedBatch) {
  EventWire wire("00000000000000aa");
  std::vector<Event> es = {MakeEvent(7), MakeEvent(8), MakeEvent(9)};
  std::vector<WireEvent> parts;
  for (const Event& e : es) parts.push_back(wire.Serialize(e));
  EXPECT_EQ(Parse(wire.Batch(parts)).SerializeAsString(), Typed(es, true).SerializeAsString());
}

TEST_F(EventWireTest, AnEventIsSerializedOnceAndItsBytesShared) {
  EventWire wire("00000000000000aa", /*cache_events=*/4);
  const WireEvent a = wire.Serialize(MakeEvent(7));
  const WireEvent b = wire.Serialize(MakeEvent(7));
  EXPECT_EQ(wire.serialized(), 1u);
  EXPECT_EQ(a.body.begin(), b.body.begin());  // the same bytes, not a copy
  // A revision the cache no longer holds (11 took 7's place) is serialized again.
  wire.Serialize(MakeEvent(11));
  EXPECT_EQ(wire.serialized(), 2u);
  const WireEvent c = wire.Serialize(MakeEvent(7));
  EXPECT_EQ(wire.serialized(), 3u);
  EXPECT_EQ(Parse(wire.One(c)).event().revision(), 7u);
}

TEST_F(EventWireTest, OtherMessagesGetTheIncarnation) {
  EventWire wire("00000000000000aa");
  v1::WatchEventsResponse m;
  m.mutable_progress()->set_revision(5);
  const v1::WatchEventsResponse got = Parse(wire.Message(m));
  EXPECT_EQ(got.progress().revision(), 5u);
  EXPECT_EQ(got.incarnation(), "00000000000000aa");
}

}  // namespace
}  // namespace umpath::server
