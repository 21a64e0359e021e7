#include "server/watch_wire.h"

#include <utility>

#include "server/convert.h"

namespace umpath::server {

namespace {

// A length-delimited field's tag (wire type 2).
constexpr uint8_t LengthDelimited(int field) { return static_cast<uint8_t>(field << 3 | 2); }

// A field's tag and length: at most 6 bytes, so gRPC keeps it inline (no allocation).
grpc::Slice Header(uint8_t tag, size_t len) {
  uint8_t buf[6];
  size_t n = 0;
  buf[n++] = tag;
  uint32_t v = static_cast<uint32_t>(len);
  while (v >= 0x80) {
    buf[n++] = static_cast<uint8_t>(v | 0x80);
    v >>= 7;
  }
  buf[n++] = static_cast<uint8_t>(v);
  return grpc::Slice(buf, n);
}

grpc::Slice SerializeToSlice(const google::protobuf::MessageLite& m) {
  grpc::Slice out(m.ByteSizeLong());
  m.SerializeWithCachedSizesToArray(const_cast<uint8_t*>(out.begin()));
  return out;
}

grpc::Slice IncarnationField(const std::string& incarnation) {
  v1::WatchEventsResponse m;
  m.set_incarnation(incarnation);
  return SerializeToSlice(m);
}

}  // namespace

EventWire::EventWire(const std::string& incarnation, size_t cache_events)
    : incarnation_(incarnation),
      trailer_(IncarnationField(incarnation)),
      cache_(std::max<size_t>(cache_events, 1)) {}

WireEvent EventWire::Serialize(const Event& e) {
  WireEvent& slot = cache_[e.revision % cache_.size()];
  if (slot.revision != e.revision || slot.body.size() == 0) {
    v1::Event m;
    ToProto(e, &m);
    slot.revision = e.revision;
    slot.body = SerializeToSlice(m);
    serialized_.fetch_add(1, std::memory_order_relaxed);
  }
  return slot;
}

grpc::ByteBuffer EventWire::One(const WireEvent& e) const {
  const grpc::Slice parts[] = {
      Header(LengthDelimited(v1::WatchEventsResponse::kEventFieldNumber), e.body.size()), e.body,
      trailer_};
  return grpc::ByteBuffer(parts, 3);
}

grpc::ByteBuffer EventWire::Batch(absl::Span<const WireEvent> es) const {
  std::vector<grpc::Slice> parts;
  parts.reserve(2 * es.size() + 2);
  parts.emplace_back();  // the batch field's header, once its length is known
  size_t len = 0;
  for (const WireEvent& e : es) {
    parts.push_back(Header(LengthDelimited(v1::EventBatch::kEventsFieldNumber), e.body.size()));
    len += parts.back().size() + e.body.size();
    parts.push_back(e.body);
  }
  parts[0] = Header(LengthDelimited(v1::WatchEventsResponse::kBatchFieldNumber), len);
  parts.push_back(trailer_);
  return grpc::ByteBuffer(parts.data(), parts.size());
}

grpc::ByteBuffer EventWire::Message(v1::WatchEventsResponse msg) const {
  msg.set_incarnation(incarnation_);
  grpc::Slice s = SerializeToSlice(msg);
  return grpc::ByteBuffer(&s, 1);
}

}  // namespace umpath::server
