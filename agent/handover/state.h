#pragma once

// What a running agent hands its successor (issue 16 item 3), as text lines that go
// with the descriptors they name (channel.h):
//
//   hello: the successor's protocol, version and shape (workers, vfio queue depth);
//   answer: the running agent's choice, adopt or the simple path (and why);
//   state: the vfio container, every DMA mapping in it (its memory as a memfd, or none:
//     the successor unmaps it), and each controller handed over live: its group and
//     device, its admin queue (memory, positions, command id, asynchronous event
//     requests outstanding) and its I/O queues (memory, positions). Every queue is
//     empty: nothing is in flight when a controller is handed over.
//
// The successor checks everything before it uses any of it: a descriptor or mapping
// named twice or not at all, a position past its queue, overlapping mappings, a
// malformed line, each is INVALID_ARGUMENT naming the line, and the successor takes
// the simple path instead.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace umpath::handover {

// The hand-over's own version: a successor that speaks another adopts nothing (the
// simple path: the controllers are reset and brought up again).
inline constexpr int kProtocol = 1;

struct Hello {
  int protocol = kProtocol;
  std::string version;       // the successor's umpathd version, for the log
  uint32_t workers = 0;      // one I/O queue per worker on each controller
  uint32_t queue_depth = 0;  // its vfio I/O queues' depth
};

struct Answer {
  bool adopt = false;  // false: the simple path
  std::string why;     // for the log: why not, or what is handed over
};

struct RingPosition {
  uint16_t sq_tail = 0;   // the SQ's head is its tail: the queue is empty
  uint16_t cq_head = 0;
  bool cq_phase = true;
};

// One DMA mapping of the container.
struct MappingState {
  uint64_t iova = 0;
  uint64_t len = 0;
  int fd = -1;  // its memory (a memfd) in the message's descriptors; -1: not passed
};

struct QueueState {
  uint16_t qid = 0;
  uint16_t depth = 0;
  int memory = -1;  // the mapping holding its SQ, CQ and PRP list pages
  int vector = -1;  // MSI-X vector; -1: polled
  RingPosition ring;
};

struct ControllerState {
  std::string bdf;
  int group_fd = -1;   // descriptors of the message
  int device_fd = -1;
  // The admin queue's mappings: SQ, CQ, the identify page and the log pages (-1: none
  // made yet).
  int admin_sq = -1, admin_cq = -1, admin_data = -1, admin_log = -1;
  uint16_t admin_depth = 0;
  RingPosition admin;
  uint16_t next_cid = 0;
  uint16_t aers = 0;     // Asynchronous Event Requests outstanding
  uint16_t aer_seq = 0;  // where their command identifiers go on
  uint32_t max_transfer = 0;
  std::vector<QueueState> queues;
};

struct State {
  int container_fd = -1;
  std::vector<MappingState> mappings;
  std::vector<ControllerState> controllers;
};

std::string Encode(const Hello& h);
std::string Encode(const Answer& a);
std::string Encode(const State& s);
absl::StatusOr<Hello> DecodeHello(absl::string_view text);
absl::StatusOr<Answer> DecodeAnswer(absl::string_view text);
// `fds`: how many descriptors came with the text.
absl::StatusOr<State> DecodeState(absl::string_view text, size_t fds);

}  // namespace umpath::handover
