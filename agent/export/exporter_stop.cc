// The exporter's stop: what a stop would leave in use (CheckStop), the stop itself
// (a hand-over, with the quiesce where the kernel has it, or a removal), and the last
// steps of the agent's shutdown.
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/base/error_reason.h"
#include "agent/export/exporter.h"
#include "agent/export/exporter_internal.h"

namespace umpath::ublk {

using exporter_internal::InUse;
using exporter_internal::kStopping;

// ---- The stop. ----

absl::string_view StopModeName(StopMode mode) {
  switch (mode) {
    case StopMode::kHandOver: return "handover";
    case StopMode::kRemove: return "remove";
    case StopMode::kForceRemove: return "force-remove";
  }
  return "handover";
}

std::vector<Exporter::StopTarget> Exporter::StopTargets() const {
  std::vector<StopTarget> out;
  for (const auto& [name, d] : devices_) {
    out.push_back({.dev_id = d->dev_id,
                   .served = true,
                   .bdev = d->bdev,
                   .head = name,
                   .head_uid = d->head_uid,
                   .quiesce = d->quiesce});
  }
  for (const Leftover& lo : leftovers_) {
    out.push_back({.dev_id = lo.dev_id, .bdev = absl::StrCat("/dev/ublkb", lo.dev_id), .head = lo.head});
  }
  return out;
}

void Exporter::CheckStop(StopMode mode, Done<absl::Status> done) {
  auto answer = std::make_shared<Answer<absl::Status>>(std::move(done));
  plane_->Post([this, mode, answer] {
    Enqueue([this, mode, answer] {
      if (shut_down_ || stopping_) return (*answer)(AgentStoppingError(kStopping));
      const bool removes = mode == StopMode::kRemove || (mode == StopMode::kHandOver && !recovery_);
      std::vector<StopTarget> targets = StopTargets();
      if (!removes || targets.empty()) return (*answer)(absl::OkStatus());
      Offload([this, mode, targets = std::move(targets), answer]() -> Then {
        std::vector<std::string> in_use, devices, heads, all_users;
        for (const StopTarget& t : targets) {
          const std::vector<std::string> users = driver_->Users(t.dev_id);
          if (users.empty()) continue;
          in_use.push_back(absl::StrCat(t.bdev, " of head ", t.head, " (", absl::StrJoin(users, ", "), ")"));
          devices.push_back(t.bdev);
          heads.push_back(t.head);
          all_users.insert(all_users.end(), users.begin(), users.end());
        }
        absl::Status s;
        if (!in_use.empty()) {
          s = InUse(absl::FailedPreconditionError(absl::StrCat(
              "block devices in use: ", absl::StrJoin(in_use, ", "),
              mode == StopMode::kRemove
                  ? "; a removing stop would pull them from under their users"
                  : "; this kernel's ublk has no user recovery, so a stop removes them",
              ": unmount or close them first, or force it")),
                    absl::StrJoin(devices, ","), absl::StrJoin(heads, ","), all_users);
        }
        return [answer, s] { (*answer)(s); };
      });
    });
  });
}

void Exporter::BeginStop(StopMode mode, Done<absl::Status> done) {
  auto answer = std::make_shared<Answer<absl::Status>>(std::move(done));
  plane_->Post([this, mode, answer] {
    // Before the calls still waiting: they are answered as the agent stops.
    calls_.push_front([this, mode, answer] {
      if (mode == StopMode::kHandOver && !recovery_) {
        return (*answer)(absl::FailedPreconditionError(
            "this kernel's ublk has no user recovery: the devices are removed instead"));
      }
      StopFollowing();
      stopping_ = true;
      Offload([this, mode, targets = StopTargets(), answer]() mutable -> Then {
        // Who uses a device is read once, as the stop begins (a signal's stop cannot be
        // refused): what opens it later finds it going, or held when it is handed over.
        for (StopTarget& t : targets) {
          if (mode != StopMode::kHandOver) t.users = driver_->Users(t.dev_id);
          t.keep = mode == StopMode::kHandOver ||
                   (mode == StopMode::kRemove && !t.users.empty() && recovery_);
        }
        HandOverQueues(targets);
        return [this, mode, targets = std::move(targets), answer] {
          FinishBeginStop(mode, targets);
          (*answer)(absl::OkStatus());
        };
      });
    });
    if (!busy_) Next();
  });
}

// Each device kept for the next agent must not answer a request it cannot finish: the
// next agent gets that one (user recovery reissues what the kernel had given this
// agent), and never a request this agent answered, so no command runs twice. Without a
// quiesce that is all: the queues hold what comes from now on, and what fails as the
// controllers go. A quiesced device gets no new request (the kernel keeps it), and
// what its queues have is answered here while the controllers still serve, so none is
// left to reissue; only what is still in service when the time is up is held.
void Exporter::HandOverQueues(const std::vector<StopTarget>& targets) {
  const auto start = std::chrono::steady_clock::now();
  const auto elapsed_ms = [start] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now() - start)
        .count();
  };
  std::vector<const StopTarget*> quiesced;
  for (const StopTarget& t : targets) {
    if (!t.keep || !t.served) continue;
    if (t.quiesce) {
      const int64_t left = options_.handover_quiesce_ms - elapsed_ms();
      absl::Status s =
          left > 0
              ? driver_->Quiesce(
                    t.dev_id, static_cast<uint32_t>(std::min<int64_t>(left, UINT32_MAX)))
              : absl::DeadlineExceededError("no time was left");
      if (s.ok()) {
        quiesced.push_back(&t);
        continue;
      }
      // Every failure leaves the device as holding expects: the kernel either keeps new
      // requests already (EBUSY) or still hands them over, to be held.
      Log(absl::StrCat("ublk: ", t.bdev, " of head ", t.head,
                       ": no quiesce for the hand-over (", s.message(),
                       "); its queues hold what comes instead"));
    }
    driver_->HoldQueues(t.dev_id);
  }
  std::vector<uint32_t> unanswered(quiesced.size(), 0);
  for (;;) {
    bool any = false;
    for (size_t i = 0; i < quiesced.size(); ++i) {
      unanswered[i] = driver_->Unanswered(quiesced[i]->dev_id);
      any = any || unanswered[i] > 0;
    }
    if (!any || elapsed_ms() >= options_.handover_quiesce_ms) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  for (size_t i = 0; i < quiesced.size(); ++i) {
    const StopTarget& t = *quiesced[i];
    // What fails from now on (the controllers go) is the next agent's to do.
    driver_->HoldQueues(t.dev_id);
    Log(absl::StrCat(
        "ublk: ", t.bdev, " of head ", t.head, " quiesced for the hand-over in ",
        elapsed_ms(), " ms: ",
        unanswered[i] == 0
            ? std::string("every request it had is answered")
            : absl::StrCat(unanswered[i],
                           " request(s) still in service, held for the next agent")));
  }
}

// Control thread: what BeginStop keeps, and for each device in use, what becomes of it.
void Exporter::FinishBeginStop(StopMode mode, const std::vector<StopTarget>& targets) {
  for (const StopTarget& t : targets) {
    if (t.served) {
      if (auto it = devices_.find(t.head); it != devices_.end()) it->second->hand_over = t.keep;
    } else if (const size_t i = FindLeftover(t.head); i < leftovers_.size()) {
      leftovers_[i].keep = t.keep;
    }
    if (t.users.empty()) continue;
    const std::string users = absl::StrJoin(t.users, ", ");
    if (!t.keep) {
      Log(absl::StrCat("ublk: ", t.bdev, " of head ", t.head, " is in use (", users,
                       ") and is removed all the same (",
                       mode == StopMode::kForceRemove ? "a forced stop"
                                                      : "this kernel's ublk has no user recovery",
                       ")"));
      continue;
    }
    const std::string what = absl::StrCat(
        t.bdev, t.served ? " handed over to the next agent" : " left for the next agent",
        " instead of removed: in use (", users, ")");
    Log(absl::StrCat("ublk: ", what, " (head ", t.head, ")"));
    if (absl::Status s = mp_->SetHeadExport(t.head, t.head_uid, "", what);
        !s.ok() && !absl::IsNotFound(s)) {
      Log(absl::StrCat("ublk: ", s.message()));
    }
  }
}

void Exporter::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  StopFollowing();
  // Calls that never got the lane, and a job whose result never came back (the plane
  // stopped under it).
  calls_.clear();
  if (busy_dev_ && busy_dev_->added) {
    RemoveDevice(*busy_dev_, Deletion::kNoWait);
    FinishTeardown(*busy_dev_, "the agent is shutting down");
  }
  busy_dev_.reset();
  while (!devices_.empty()) {
    auto it = devices_.begin();
    std::unique_ptr<Device> d = std::move(it->second);
    devices_.erase(it);
    if (d->hand_over) {
      LetGo(*d);
      continue;
    }
    RemoveDevice(*d, Deletion::kNoWait);
    FinishTeardown(*d, "the agent is shutting down");
  }
  for (const Leftover& lo : leftovers_) {
    if (lo.keep) {
      Log(absl::StrCat("ublk: /dev/ublkb", lo.dev_id, " of head ", lo.head,
                       " left for the next agent, as it was"));
      continue;
    }
    RemoveLeftoverDevice(lo.dev_id, lo.head, Deletion::kNoWait);
    LeftoverRemoved(lo, "the agent is shutting down");
  }
  leftovers_.clear();
}

// A hand-over's end: the device stays, with its record and what its queues held, for
// the next agent to take over (as after a crash, without the crash).
void Exporter::LetGo(const Device& d) {
  const uint32_t held = driver_->ReleaseQueues(d.dev_id);
  Log(absl::StrCat("ublk: ", d.bdev, " of head ", d.head, " handed over to the next agent (", held,
                   " request(s) held for it)"));
}

}  // namespace umpath::ublk
