// SEMANTICS "Fencing": the one place where commands given to a controller come back
// without their completion. A controller's queue pairs leave service in steps, each
// step posted to every worker and moved on, on the control side, when the last worker
// has done it:
//
//   kNone --Quiesce/Remove--> kQuiescing --workers--> kQuiesced --backend fences,
//   ControllerFenced--> kFenced --CQT--> kHandingBack --workers--> kHandedBack
//   (a reset: ResumeController --> kNone) or gone (a removal: OnQueuePairsReleased).
//
// The wait for CQT is per controller, on the core's timer: I/O on other paths never
// waits for it.

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "agent/base/error_reason.h"
#include "agent/core/multipath.h"
#include "agent/core/multipath_internal.h"

namespace umpath {

Multipath::FenceNotice::~FenceNotice() {
  if (fd >= 0) close(fd);
}

void Multipath::FenceNotice::Notify() {
  pending.store(true, std::memory_order_release);
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(fd, &one, sizeof one);
}

// The controller of that name that waits to be fenced: a removed one, or one in the
// topology (a reset). A name in use again names the new controller only when it is the
// one waiting.
Multipath::Controller* Multipath::FindFencing(absl::string_view name) {
  for (const auto& c : retired_) {
    if (c->name == name && c->fence == Fence::kQuiesced) return c.get();
  }
  if (auto it = controllers_.find(name); it != controllers_.end()) return it->second.get();
  return nullptr;
}

namespace {

// Posts one fence step to every worker: `step(worker, done)` runs on the worker, which
// calls `done` once it has done it (maybe later); the notice fires after the last one.
// Returns the count of workers still to do it.
template <typename Notice, typename Step>
std::shared_ptr<std::atomic<int>> PostToEveryWorker(const std::vector<Worker*>& workers,
                                                    const std::shared_ptr<Notice>& notice,
                                                    Step step) {
  auto left = std::make_shared<std::atomic<int>>(static_cast<int>(workers.size()));
  for (Worker* w : workers) {
    w->Post([w, step, left, notice] {
      step(w, [left, notice] {
        if (left->fetch_sub(1, std::memory_order_acq_rel) == 1) notice->Notify();
      });
    });
  }
  if (workers.empty()) notice->Notify();
  return left;
}

}  // namespace

void Multipath::StartQuiesce(Controller* c) {
  c->fence = Fence::kQuiescing;
  c->step_left = PostToEveryWorker(options_.workers, fence_notice_,
                                   [id = c->shared->id](Worker* w, auto done) {
                                     w->QuiesceQueuePair(id);
                                     done();
                                   });
}

void Multipath::StartHandBack(Controller* c) {
  c->fence = Fence::kHandingBack;
  c->fence_at = 0;
  c->step_handed_back = std::make_shared<std::atomic<uint64_t>>(0);
  c->handback_removes = c->removing;
  const Worker::HandBackThen then =
      c->removing ? Worker::HandBackThen::kRemove : Worker::HandBackThen::kKeepQuiesced;
  c->step_left = PostToEveryWorker(
      options_.workers, fence_notice_,
      [id = c->shared->id, then, handed = c->step_handed_back](Worker* w, auto done) {
        w->HandBackQueuePair(id, then, [handed, done](uint32_t n) {
          handed->fetch_add(n, std::memory_order_relaxed);
          done();
        });
      });
}

absl::Status Multipath::QuiesceController(absl::string_view name) {
  Locked l(this);
  Controller* c = FindController(name);
  if (!c) return ControllerNotFoundError(name);
  if (c->fence != Fence::kNone) {
    return absl::FailedPreconditionError(
        absl::StrCat("controller ", name, " is already out of service"));
  }
  StartQuiesce(c);
  return absl::OkStatus();
}

absl::Status Multipath::ControllerFenced(absl::string_view name) {
  Locked l(this);
  Controller* c = FindFencing(name);
  if (!c) return ControllerNotFoundError(name);
  if (c->fence != Fence::kQuiesced) {
    return absl::FailedPreconditionError(
        absl::StrCat("controller ", name, " is not quiesced; nothing to fence"));
  }
  c->fence = Fence::kFenced;
  c->fence_at = options_.clock->MonotonicNanos() + int64_t{c->spec.cqt_ms} * 1'000'000;
  if (c->spec.cqt_ms == 0) {
    StartHandBack(c);
  } else {
    WakeTimer();
  }
  return absl::OkStatus();
}

absl::Status Multipath::ResumeController(absl::string_view name) {
  Locked l(this);
  Controller* c = FindController(name);
  if (!c) return ControllerNotFoundError(name);
  if (c->fence != Fence::kHandedBack) {
    return absl::FailedPreconditionError(
        absl::StrCat("controller ", name, " has not handed its commands back"));
  }
  c->fence = Fence::kNone;
  for (Worker* w : options_.workers) {
    w->Post([w, id = c->shared->id] { w->ResumeQueuePair(id); });
  }
  for (Head* h : HeadsOf(*c)) KickHead(h);
  return absl::OkStatus();
}

// Moves one controller's fence on; true when a removed controller is done with.
bool Multipath::AdvanceFence(Controller* c, int64_t now) {
  const bool step_done =
      c->step_left && c->step_left->load(std::memory_order_acquire) == 0;
  ControllerBackend* backend = c->backend;
  switch (c->fence) {
    case Fence::kQuiescing:
      if (!step_done) return false;
      c->fence = Fence::kQuiesced;
      if (backend) AfterUnlock([backend] { backend->OnQuiesced(); });
      return false;
    case Fence::kFenced:
      if (now >= c->fence_at) StartHandBack(c);
      return false;
    case Fence::kHandingBack: {
      if (!step_done) return false;
      const uint64_t n = c->step_handed_back->load(std::memory_order_relaxed);
      c->fenced_ios += n;
      fenced_ios_total_.fetch_add(n, std::memory_order_relaxed);
      if (c->removing && !c->handback_removes) {
        // A reset's hand back, and the removal came meanwhile: once more, to remove.
        StartHandBack(c);
        return false;
      }
      c->fence = Fence::kHandedBack;
      if (!c->removing) {
        if (backend) AfterUnlock([backend] { backend->OnHandedBack(); });
        return false;
      }
      if (backend) AfterUnlock([backend] { backend->OnQueuePairsReleased(); });
      return true;
    }
    default:
      return false;
  }
}

void Multipath::AdvanceFences(int64_t now) {
  for (auto& [name, c] : controllers_) AdvanceFence(c.get(), now);
  for (size_t i = 0; i < retired_.size();) {
    if (AdvanceFence(retired_[i].get(), now)) {
      retired_.erase(retired_.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      ++i;
    }
  }
}

}  // namespace umpath
