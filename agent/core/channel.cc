#include "agent/core/channel.h"

#include <algorithm>

#include "agent/core/worker.h"
#include "absl/base/optimization.h"
#include "agent/nvme/status.h"

namespace umpath {

namespace {
constexpr nvme::Status kQueueGone = nvme::Status::Make(nvme::status_code::kHostAbortedCommand);
}  // namespace

const char* IoErrorName(IoError e) {
  switch (e) {
    case IoError::kNone: return "ok";
    case IoError::kNvme: return "nvme-error";
    case IoError::kNoPath: return "no-usable-path";
    case IoError::kHeadRemoved: return "head-removed";
    case IoError::kShutdown: return "shutdown";
    case IoError::kFastFail: return "fast-fail";
  }
  return "unknown";
}

Channel::Channel(Worker* worker, uint64_t head_uid) : worker_(worker), head_uid_(head_uid) {}

Channel::~Channel() = default;

IoPolicy Channel::policy() const {
  return current_ ? current_->snapshot->policy : IoPolicy::kNuma;
}

const std::shared_ptr<HeadShared>& Channel::head_shared() const {
  static const std::shared_ptr<HeadShared> kNone;
  return current_ ? current_->snapshot->head : kNone;
}

void Channel::Submit(IoRequest* req) {
  req->channel = this;
  req->arrived_at = worker_->LoopNow();
  req->requeued = false;
  req->retries = 0;
  req->failovers = 0;
  req->counted_in_flight = false;
  req->epoch = nullptr;
  req->last_status = nvme::Status{};
  if (removed_) {
    Finish(req, IoResult{removed_why_, {}});
    return;
  }
  Dispatch(req);
}

void Channel::Dispatch(IoRequest* req) {
  if (current_) {
    const int slot = selector_.Select(current_->snapshot->policy, current_->candidates);
    if (slot != PathSelector::kNone) {
      SubmitTo(req, slot);
      return;
    }
  }
  NoPath(req);
}

void Channel::SubmitTo(IoRequest* req, int slot_index) {
  Epoch* epoch = current_.get();
  const Slot& slot = epoch->slots[slot_index];
  // A fixed buffer only the frontend's ring can name: a queue pair that cannot borrow
  // that ring (vfio) gets the data in the request's DMA buffer, copied once; the request
  // keeps using that copy wherever it fails over to next.
  if (req->fixed != nullptr && !req->fixed->staged && !slot.qp->qp->TakesFixedBuffers()) {
    if (!req->fixed->stage(req)) {
      Finish(req, IoResult{IoError::kNvme, nvme::Status::Make(nvme::status_code::kDataTransferError,
                                                              /*dnr=*/true)});
      return;
    }
    req->fixed->staged = true;
  }
  if (epoch->snapshot->policy == IoPolicy::kQueueDepth) {
    slot.path->in_flight.fetch_add(1, std::memory_order_relaxed);
    req->counted_in_flight = true;
  }
  req->epoch = epoch;
  req->slot = static_cast<uint16_t>(slot_index);
  req->nsid = slot.nsid;
  switch (slot.qp->qp->Submit(req)) {
    case SubmitResult::kOk:
      req->submitted_at = worker_->LoopNow();
      req->requeued = false;
      ++epoch->in_flight;
      ++in_flight_;
      PathWorkerCounters::Add(slot.counters->submitted, 1);
      PathWorkerCounters::Add(slot.counters->in_flight, 1);
      worker_->MarkDirty(slot.qp);
      return;
    case SubmitResult::kBusy:
      if (req->counted_in_flight) slot.path->DecrementInFlight();
      req->counted_in_flight = false;
      req->epoch = nullptr;
      busy_.PushBack(req);
      UpdateWaiting();
      return;
    case SubmitResult::kGone:
      slot.qp->gone = true;
      if (req->counted_in_flight) slot.path->DecrementInFlight();
      req->counted_in_flight = false;
      req->epoch = nullptr;
      Failover(req, slot, slot_index, epoch, kQueueGone);
      return;
  }
}

// SEMANTICS "No usable path: queue or fail".
void Channel::NoPath(IoRequest* req) {
  bool wait = false;
  if (current_ && current_->snapshot->head->fail_fast.load(std::memory_order_acquire)) {
    Finish(req, IoResult{IoError::kFastFail, req->last_status});
    return;
  }
  if (current_) {
    wait = current_->snapshot->head->queue_if_no_path.load(std::memory_order_acquire);
    for (const Slot& s : current_->slots) {
      if (wait) break;
      const ControllerState c = s.path->Load().controller;
      wait = c == ControllerState::kLive || c == ControllerState::kResetting ||
             c == ControllerState::kConnecting;
    }
  }
  if (wait) {
    Requeue(req);
    UpdateWaiting();
    return;
  }
  IoError why = IoError::kNoPath;
  if (current_) {
    const uint8_t removed = current_->snapshot->head->removed_with.load(std::memory_order_acquire);
    if (removed != 0) why = static_cast<IoError>(removed);
  }
  Finish(req, IoResult{why, req->last_status});
}

void Channel::OnCompletion(IoRequest* req, nvme::Status status) {
  auto* epoch = static_cast<Epoch*>(req->epoch);
  const int slot_index = req->slot;
  const Slot slot = epoch->slots[slot_index];
  req->epoch = nullptr;
  --epoch->in_flight;
  --in_flight_;
  if (req->counted_in_flight) {
    slot.path->DecrementInFlight();
    req->counted_in_flight = false;
  }
  PathWorkerCounters::Add(slot.counters->in_flight, -1);
  req->last_status = status;

  const nvme::Disposition d = nvme::Decide(status, req->retries >= kMaxRetries);
  if (ABSL_PREDICT_TRUE(d == nvme::Disposition::kComplete)) {
    PathWorkerCounters::Add(slot.counters->completed, 1);
    PathWorkerCounters::Add(slot.counters->bytes, req->data_len);
    const int64_t latency = worker_->LoopNow() - req->submitted_at;
    PathWorkerCounters::Add(slot.counters->latency_ns_sum, static_cast<uint64_t>(latency));
    if (latency <= 1'000'000) {
      PathWorkerCounters::Add(slot.counters->latency_le_1ms, 1);
    } else if (latency <= 10'000'000) {
      PathWorkerCounters::Add(slot.counters->latency_le_10ms, 1);
    }
    if (epoch != current_.get()) ReleaseEpochIfDone(epoch);  // the common case skips the call
    Finish(req, IoResult{IoError::kNone, status});
    return;
  }
  PathWorkerCounters::Add(slot.counters->errors, 1);
  slot.counters->last_error_status.store(status.ToCompletionField(), std::memory_order_relaxed);
  if (d == nvme::Disposition::kFailToCaller) {
    ReleaseEpochIfDone(epoch);
    Finish(req, IoResult{IoError::kNvme, status});
    return;
  }
  if (removed_) {
    ReleaseEpochIfDone(epoch);
    Finish(req, IoResult{removed_why_, status});
    return;
  }
  if (d == nvme::Disposition::kFailover) {
    Failover(req, slot, slot_index, epoch, status);
    ReleaseEpochIfDone(epoch);
    return;
  }
  // Retry on the same path, after the Command Retry Delay the status asks for.
  ++req->retries;
  PathWorkerCounters::Add(slot.counters->retries, 1);
  const int64_t delay = nvme::RetryDelayNanos(status, slot.controller->crdt);
  PathShared* path = slot.path;
  ReleaseEpochIfDone(epoch);
  if (delay == 0) {
    RetrySamePath(req, path);
    return;
  }
  req->not_before = worker_->Now() + delay;
  // Compared, never dereferenced, until it is found in the current path table.
  req->retry_path = path;
  retry_.PushBack(req);
  UpdateWaiting();
}

// SEMANTICS "Completion disposition" 3: the caller never sees a path error.
void Channel::Failover(IoRequest* req, const Slot& slot, int slot_index, Epoch* epoch,
                       nvme::Status status) {
  if (req->failovers >= kMaxFailovers) {
    Finish(req, IoResult{IoError::kNvme, status});
    return;
  }
  ++req->failovers;
  PathWorkerCounters::Add(slot.counters->failovers, 1);
  if (epoch == current_.get()) selector_.Forget(slot_index);
  if (nvme::IsAnaError(status) && slot.controller->ana_supported) {
    const uint32_t old = slot.path->state.fetch_or(kAnaPendingBit, std::memory_order_acq_rel);
    if (!(old & kAnaPendingBit)) worker_->RequestAnaRead(slot.controller);
  }
  Requeue(req);
  Kick();
}

void Channel::RetrySamePath(IoRequest* req, const PathShared* path) {
  if (removed_) {
    Finish(req, IoResult{removed_why_, req->last_status});
    return;
  }
  if (current_) {
    for (size_t i = 0; i < current_->slots.size(); ++i) {
      const Slot& slot = current_->slots[i];
      if (slot.path == path && !slot.qp->gone && slot.path->Load().selectable()) {
        SubmitTo(req, static_cast<int>(i));
        return;
      }
    }
  }
  Dispatch(req);  // the path is gone or unusable: choose again
}

void Channel::Kick() {
  IoList pending;
  requeue_.TakeAll(pending);
  while (IoRequest* r = pending.PopFront()) Dispatch(r);
  UpdateWaiting();
}

void Channel::RunDeferred(int64_t now) {
  if (!busy_.empty()) {
    IoList pending;
    busy_.TakeAll(pending);
    while (IoRequest* r = pending.PopFront()) Dispatch(r);
  }
  if (!retry_.empty()) {
    IoList pending;
    retry_.TakeAll(pending);
    while (IoRequest* r = pending.PopFront()) {
      if (r->not_before <= now) {
        RetrySamePath(r, static_cast<const PathShared*>(r->retry_path));
      } else {
        retry_.PushBack(r);
      }
    }
  }
  UpdateWaiting();
}

int64_t Channel::NextRetryAt() const {
  int64_t next = 0;
  for (IoRequest* r = retry_.front(); r; r = r->next) {
    if (next == 0 || r->not_before < next) next = r->not_before;
  }
  if (!busy_.empty()) next = 1;  // as soon as possible
  return next;
}

void Channel::Adopt(std::shared_ptr<const HeadSnapshot> snapshot) {
  auto epoch = std::make_unique<Epoch>();
  const int w = worker_->options().index;
  for (const PathRecordShared& p : snapshot->paths) {
    WorkerQueuePair* qp = worker_->FindQueuePair(p.controller->id);
    if (!qp) continue;  // not registered on this worker: not a path here
    epoch->slots.push_back(Slot{p.state.get(), p.controller.get(), &p.counters[w], qp, p.nsid});
    epoch->candidates.push_back(
        PathCandidate{p.state.get(), worker_->Distance(p.numa_node), &qp->gone});
  }
  if (snapshot->head && snapshot->head->counters) {
    counters_ = &snapshot->head->counters[w];
    block_size_ = snapshot->head->block_size;
  }
  epoch->snapshot = std::move(snapshot);
  if (current_) {
    if (current_->in_flight > 0) {
      retired_.push_back(std::move(current_));
    }
  }
  current_ = std::move(epoch);
  // A new path list or policy: every cached path is stale.
  selector_.Reset();
  Kick();
}

void Channel::ReleaseEpochIfDone(Epoch* epoch) {
  if (epoch == current_.get() || epoch->in_flight > 0) return;
  auto it = std::find_if(retired_.begin(), retired_.end(),
                         [epoch](const auto& e) { return e.get() == epoch; });
  if (it != retired_.end()) retired_.erase(it);
}

void Channel::Fail(IoError why) {
  removed_ = true;
  removed_why_ = why;
  for (IoList* list : {&requeue_, &retry_, &busy_}) {
    IoList pending;
    list->TakeAll(pending);
    while (IoRequest* r = pending.PopFront()) Finish(r, IoResult{why, r->last_status});
  }
  UpdateWaiting();
}

void Channel::FailWaitingFast() {
  IoList pending;
  requeue_.TakeAll(pending);
  while (IoRequest* r = pending.PopFront()) Finish(r, IoResult{IoError::kFastFail, r->last_status});
  UpdateWaiting();
}

void Channel::Requeue(IoRequest* req) {
  // Kick puts what still finds no path back here: one wait, one count.
  if (!req->requeued && counters_ != nullptr) HeadWorkerCounters::Add(counters_->requeued, 1);
  req->requeued = true;
  requeue_.PushBack(req);
}

void Channel::Finish(IoRequest* req, IoResult result) {
  req->epoch = nullptr;
  req->next = nullptr;
  // Before on_complete: the caller may reuse the request from inside it.
  if (ABSL_PREDICT_TRUE(counters_ != nullptr)) CountAnswer(*req, result);
  req->on_complete(req, result);
}

namespace {

// Bytes an answered request moved (or, for a discard, released).
uint64_t BytesOf(const IoRequest& req, uint32_t block_size) {
  switch (req.opcode) {
    case nvme::IoOpcode::kRead:
    case nvme::IoOpcode::kWrite: return req.data_len;
    case nvme::IoOpcode::kWriteZeroes: return uint64_t{req.blocks} * block_size;
    case nvme::IoOpcode::kFlush: return 0;
    case nvme::IoOpcode::kDatasetManagement: break;
  }
  // The range list (io_request.h): 16 bytes a range, its length in blocks at byte 4.
  const auto* ranges = static_cast<const uint8_t*>(req.data);
  if (ranges == nullptr || req.data_len < uint64_t{req.blocks} * 16) return 0;
  uint64_t blocks = 0;
  for (uint32_t i = 0; i < req.blocks; ++i) {
    const uint8_t* r = ranges + size_t{i} * 16 + 4;
    blocks += uint32_t{r[0]} | uint32_t{r[1]} << 8 | uint32_t{r[2]} << 16 | uint32_t{r[3]} << 24;
  }
  return blocks * block_size;
}

}  // namespace

void Channel::CountAnswer(const IoRequest& req, const IoResult& result) {
  HeadWorkerCounters& c = *counters_;
  const size_t op = static_cast<size_t>(HeadOpOf(req.opcode));
  HeadWorkerCounters::Add(c.ios[op], 1);
  if (ABSL_PREDICT_TRUE(result.ok())) {
    HeadWorkerCounters::Add(c.bytes[op], BytesOf(req, block_size_));
  } else {
    HeadWorkerCounters::Add(c.errors[static_cast<size_t>(result.error)], 1);
  }
  const int64_t latency = std::max<int64_t>(worker_->LoopNow() - req.arrived_at, 0);
  HeadWorkerCounters::Add(c.latency[HeadLatencyBucket(latency)], 1);
  HeadWorkerCounters::Add(c.latency_ns_sum, static_cast<uint64_t>(latency));
}

void Channel::UpdateWaiting() {
  if (!current_) return;
  std::atomic<uint32_t>& w = current_->snapshot->head->waiting[worker_->options().index];
  const uint32_t n = waiting();
  if (w.load(std::memory_order_relaxed) != n) w.store(n, std::memory_order_relaxed);
}

}  // namespace umpath
