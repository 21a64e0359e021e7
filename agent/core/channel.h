#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "agent/core/io_request.h"
#include "agent/core/path_selector.h"
#include "agent/core/queue_pair.h"
#include "agent/core/snapshot.h"

namespace umpath {

class Worker;
struct WorkerQueuePair;

// One worker's access to one head (SPDK's nvme_bdev_channel): its path table, its
// selection state, and its requeue and retry lists.
//
// Threading: confined to the owning worker. It reads the published snapshot and the
// PathShared atomics; it writes only its own fields, its per-worker counters and, under
// the queue-depth policy, the paths' in-flight counters.
class Channel {
 public:
  // SEMANTICS "Completion disposition": the kernel's nvme_max_retries default.
  static constexpr uint8_t kMaxRetries = 5;
  // A path that keeps failing over without ever being marked unusable would bounce a
  // request forever; past this many failovers the request fails with its last status.
  static constexpr uint8_t kMaxFailovers = 64;

  Channel(Worker* worker, uint64_t head_uid);
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // Data path. The request completes through its on_complete, possibly before Submit
  // returns (no path and nothing to wait for, or the head is gone).
  void Submit(IoRequest* req);
  void OnCompletion(IoRequest* req, nvme::Status status);

  // Worker loop: retries whose delay passed and submissions the queue refused (busy).
  void RunDeferred(int64_t now);
  int64_t NextRetryAt() const;  // 0 when none

  // Control messages, run on the worker thread.
  void Adopt(std::shared_ptr<const HeadSnapshot> snapshot);
  void Kick();  // resubmit everything waiting, through path selection
  // A path's state changed on the control side: choose afresh (clears the numa cache).
  void ResetSelection() { selector_.Reset(); }
  void Fail(IoError why);  // the head is gone or the agent stops
  // SEMANTICS "Fast fail": what waits for a usable path fails (kFastFail); what waits for
  // a retry delay or a full queue has a path and stays.
  void FailWaitingFast();

  uint64_t head_uid() const { return head_uid_; }
  bool removed() const { return removed_; }
  uint32_t in_flight() const { return in_flight_; }
  uint32_t waiting() const { return requeue_.size() + retry_.size() + busy_.size(); }
  IoPolicy policy() const;
  // The head's per-worker counters this channel writes (null before the first Adopt);
  // they belong to the head, so a test may read them after the head is gone.
  const std::shared_ptr<HeadShared>& head_shared() const;

 private:
  struct Slot {
    PathShared* path;
    ControllerShared* controller;
    PathWorkerCounters* counters;
    WorkerQueuePair* qp;
    uint32_t nsid;
  };
  // The path table of one snapshot. Requests point at the epoch they were issued in, so
  // an epoch outlives a topology change until its last request completes.
  struct Epoch {
    std::shared_ptr<const HeadSnapshot> snapshot;
    std::vector<Slot> slots;
    std::vector<PathCandidate> candidates;  // parallel to slots
    uint32_t in_flight = 0;
  };

  void Dispatch(IoRequest* req);
  void SubmitTo(IoRequest* req, int slot);
  void NoPath(IoRequest* req);
  void Failover(IoRequest* req, const Slot& slot, int slot_index, Epoch* epoch,
                nvme::Status status);
  void RetrySamePath(IoRequest* req, const PathShared* path);
  void Finish(IoRequest* req, IoResult result);
  // Issue 20: what the application saw (counted in Finish, once per I/O).
  void CountAnswer(const IoRequest& req, const IoResult& result);
  // Onto requeue_, counted once until the request reaches a path again.
  void Requeue(IoRequest* req);
  void ReleaseEpochIfDone(Epoch* epoch);
  void UpdateWaiting();

  Worker* const worker_;
  const uint64_t head_uid_;
  std::unique_ptr<Epoch> current_;
  std::vector<std::unique_ptr<Epoch>> retired_;
  PathSelector selector_;
  IoList requeue_;  // waiting for a usable path
  IoList retry_;    // waiting for the controller's Command Retry Delay
  IoList busy_;     // the queue pair was full
  // This worker's slot of the head's counters: HeadShared is the same for every snapshot
  // of the head and lives as long as current_ holds one.
  HeadWorkerCounters* counters_ = nullptr;
  uint32_t block_size_ = 512;
  uint32_t in_flight_ = 0;
  bool removed_ = false;
  IoError removed_why_ = IoError::kNone;
};

}  // namespace umpath
