#pragma once

// WatchEventsResponse messages put together from pre-serialized parts, so that an event
// sent to a thousand watchers is converted and serialized once. Protobuf's wire format
// lets a message be the concatenation of its fields, each a (tag, length, bytes) triple,
// in any order; gRPC sends a ByteBuffer of several slices without copying them, and
// copies of a slice share its bytes.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "agent/core/event_journal.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"
#include "umpath/v1/control.pb.h"

namespace umpath::server {

// The most events one WatchEventsResponse.batch carries, whatever a watcher asks for,
// and the size a batch stops growing at (one event may be larger on its own).
inline constexpr uint32_t kMaxEventsPerMessage = 256;
inline constexpr size_t kBatchBytes = 64 << 10;

// One event, serialized: a v1::Event message's bytes.
struct WireEvent {
  uint64_t revision = 0;
  grpc::Slice body;
};

// Threading: Serialize from one thread (the watch hub's); the rest from any (they read
// only what the constructor set). The slices it hands out may be sent from any thread
// (their reference counts are atomic).
class EventWire {
 public:
  // `incarnation` goes into every message (WatchEventsResponse.incarnation).
  explicit EventWire(const std::string& incarnation, size_t cache_events = 4096);

  // The event's bytes: serialized on first use, shared afterwards while the cache
  // holds the revision (the newest `cache_events`, by revision).
  WireEvent Serialize(const Event& e);
  // How many events were serialized (not found in the cache); any thread.
  uint64_t serialized() const { return serialized_.load(std::memory_order_relaxed); }

  // WatchEventsResponse{event: e, incarnation}.
  grpc::ByteBuffer One(const WireEvent& e) const;
  // WatchEventsResponse{batch: {events: es}, incarnation}; `es` in revision order.
  grpc::ByteBuffer Batch(absl::Span<const WireEvent> es) const;
  // Any other response (a snapshot, a progress marker), with the incarnation set here.
  grpc::ByteBuffer Message(v1::WatchEventsResponse msg) const;

 private:
  const std::string incarnation_;
  const grpc::Slice trailer_;  // the incarnation field
  std::vector<WireEvent> cache_;  // by revision % size
  std::atomic<uint64_t> serialized_{0};
};

}  // namespace umpath::server
