#include "agent/control/supervisor.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "agent/base/error_reason.h"

namespace umpath {

absl::string_view SupervisedStateName(SupervisedState s) {
  switch (s) {
    case SupervisedState::kLive: return "live";
    case SupervisedState::kResetQuiescing: return "reset-quiescing";
    case SupervisedState::kResetFencing: return "reset-fencing";
    case SupervisedState::kResetFenced: return "reset-fenced";
    case SupervisedState::kRecovering: return "recovering";
    case SupervisedState::kResetBelow: return "reset-below";
    case SupervisedState::kRetiring: return "retiring";
    case SupervisedState::kRetiredFencing: return "retired-fencing";
    case SupervisedState::kRetiredFenced: return "retired-fenced";
    case SupervisedState::kGone: return "gone";
  }
  return "?";
}

absl::string_view SupervisorEventName(SupervisorEvent e) {
  switch (e) {
    case SupervisorEvent::kResetRequested: return "reset-requested";
    case SupervisorEvent::kQuiesced: return "quiesced";
    case SupervisorEvent::kFenced: return "fenced";
    case SupervisorEvent::kFenceReleased: return "fence-released";
    case SupervisorEvent::kHandedBack: return "handed-back";
    case SupervisorEvent::kRecovered: return "recovered";
    case SupervisorEvent::kRecoveryFailed: return "recovery-failed";
    case SupervisorEvent::kResetBelowDone: return "reset-below-done";
    case SupervisorEvent::kDetachRequested: return "detach-requested";
    case SupervisorEvent::kDeviceGone: return "device-gone";
    case SupervisorEvent::kQueuePairsReleased: return "queue-pairs-released";
  }
  return "?";
}

std::optional<SupervisedState> NextState(SupervisedState state, SupervisorEvent event,
                                         ResetKind kind) {
  using S = SupervisedState;
  using E = SupervisorEvent;
  const bool leave = event == E::kDetachRequested || event == E::kDeviceGone;
  switch (state) {
    case S::kLive:
      if (event == E::kResetRequested) {
        return kind == ResetKind::kBelow ? S::kResetBelow : S::kResetQuiescing;
      }
      if (leave) return S::kRetiring;
      break;
    case S::kResetQuiescing:
      if (event == E::kQuiesced) return S::kResetFencing;
      // The core finishes the quiesce under way; the fence then ends in a removal.
      if (leave) return S::kRetiring;
      break;
    case S::kResetFencing:
      if (event == E::kFenced) return S::kResetFenced;
      if (event == E::kFenceReleased) return S::kRetiredFenced;
      break;
    case S::kResetFenced:
      if (event == E::kHandedBack) return S::kRecovering;
      if (leave) return S::kRetiredFenced;
      break;
    case S::kRecovering:
      if (event == E::kRecovered) return S::kLive;
      if (event == E::kRecoveryFailed) return S::kRetiredFenced;
      break;
    case S::kResetBelow:
      if (event == E::kResetBelowDone) return S::kLive;
      if (leave) return S::kRetiring;
      break;
    case S::kRetiring:
      if (event == E::kQuiesced) return S::kRetiredFencing;
      break;
    case S::kRetiredFencing:
      if (event == E::kFenced || event == E::kFenceReleased) return S::kRetiredFenced;
      break;
    case S::kRetiredFenced:
      if (event == E::kQueuePairsReleased) return S::kGone;
      break;
    case S::kGone:
      break;
  }
  return std::nullopt;
}

namespace {

bool InCore(SupervisedState s) {
  return s != SupervisedState::kRetiring && s != SupervisedState::kRetiredFencing &&
         s != SupervisedState::kRetiredFenced && s != SupervisedState::kGone;
}

}  // namespace

// One controller: its driver, where it is, and the core's callbacks, which only post.
struct ControllerSupervisor::Entry final : ControllerBackend {
  ControllerSupervisor* sup = nullptr;
  ControlPlane* plane = nullptr;
  std::weak_ptr<bool> alive;
  uint64_t id = 0;
  std::string name;
  uint16_t cqt_ms = 0;
  std::unique_ptr<ControllerDriver> driver;
  SupervisedState state = SupervisedState::kLive;
  bool release = false;   // the device is gone: let it go once fenced
  bool stopping = false;  // the agent stops: a clean shutdown first

  void Post(absl::AnyInvocable<void(ControllerSupervisor*, Entry*) &&> fn) {
    plane->Post([alive = alive, sup = sup, id = id, fn = std::move(fn)]() mutable {
      if (alive.expired()) return;
      if (Entry* e = sup->ById(id)) std::move(fn)(sup, e);
    });
  }
  void Event(SupervisorEvent ev, std::string why) {
    Post([ev, why = std::move(why)](ControllerSupervisor* s, Entry* e) mutable {
      s->On(e, ev, std::move(why));
    });
  }
  void RequestAnaLog() override {
    Post([](ControllerSupervisor*, Entry* e) {
      if (InCore(e->state) && e->state != SupervisedState::kResetBelow) e->driver->ReadAnaLog();
    });
  }
  void Reset() override { Event(SupervisorEvent::kResetRequested, "requested by the core"); }
  void OnQuiesced() override { Event(SupervisorEvent::kQuiesced, "queue pairs out of service"); }
  void OnHandedBack() override { Event(SupervisorEvent::kHandedBack, "commands handed back"); }
  void OnQueuePairsReleased() override {
    Event(SupervisorEvent::kQueuePairsReleased, "the workers let go");
  }
};

ControllerSupervisor::ControllerSupervisor(Multipath* mp, ControlPlane* plane,
                                           SupervisorOptions options)
    : mp_(mp), plane_(plane), options_(std::move(options)) {
  if (options_.health_interval_ms > 0) ArmHealthCheck();
}

ControllerSupervisor::~ControllerSupervisor() {
  plane_->Cancel(health_timer_);
  plane_->Cancel(stop_timer_);
  alive_.reset();
  entries_.clear();
  std::map<uint64_t, GoneWaiter> waiters = std::move(gone_waiters_);
  for (auto& [id, w] : waiters) {
    plane_->Cancel(w.timer);
    std::move(w.then)(false);
  }
}

void ControllerSupervisor::Log(const std::string& line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::fprintf(stderr, "umpath-supervisor: %s\n", line.c_str());
  }
}

ControllerSupervisor::Entry* ControllerSupervisor::ById(uint64_t id) const {
  auto it = entries_.find(id);
  return it == entries_.end() ? nullptr : it->second.get();
}

ControllerSupervisor::Entry* ControllerSupervisor::Live(absl::string_view name) const {
  for (const auto& [id, e] : entries_) {
    if (e->name == name && InCore(e->state)) return e.get();
  }
  return nullptr;
}

absl::Status ControllerSupervisor::Add(std::unique_ptr<ControllerDriver> driver,
                                       const ControllerSpec& spec,
                                       const std::vector<QueuePair*>& qps) {
  if (stopping_) return absl::FailedPreconditionError("the agent is stopping");
  if (Live(spec.name) != nullptr) {
    return WithReason(absl::AlreadyExistsError(absl::StrCat(spec.name, " is already attached")),
                      reason::kControllerAttached, {{"controller", spec.name}});
  }
  auto e = std::make_unique<Entry>();
  e->sup = this;
  e->plane = plane_;
  e->alive = alive_;
  e->id = next_id_++;
  e->name = spec.name;
  e->cqt_ms = spec.cqt_ms;
  e->driver = std::move(driver);
  if (absl::Status s = mp_->AddController(spec, e.get(), qps); !s.ok()) return s;
  Log(absl::StrCat(spec.name, ": live (added)"));
  entries_[e->id] = std::move(e);
  return absl::OkStatus();
}

absl::Status ControllerSupervisor::Reset(absl::string_view name, std::string why) {
  Entry* e = Live(name);
  if (e == nullptr) return ControllerNotFoundError(name);
  if (e->state != SupervisedState::kLive) {
    return absl::FailedPreconditionError(absl::StrCat(
        name, " is already resetting (", SupervisedStateName(e->state), ")"));
  }
  if (std::string refused = e->driver->ResetRefused(); !refused.empty()) {
    return absl::FailedPreconditionError(refused);
  }
  On(e, SupervisorEvent::kResetRequested, std::move(why));
  return absl::OkStatus();
}

absl::Status ControllerSupervisor::Detach(absl::string_view name, std::string why,
                                          bool device_gone) {
  Entry* e = Live(name);
  if (e == nullptr) return ControllerNotFoundError(name, absl::StrCat(name, " is not attached"));
  On(e, device_gone ? SupervisorEvent::kDeviceGone : SupervisorEvent::kDetachRequested,
     std::move(why));
  return absl::OkStatus();
}

ControllerDriver* ControllerSupervisor::Find(absl::string_view name) const {
  Entry* e = Live(name);
  return e ? e->driver.get() : nullptr;
}

std::optional<SupervisedState> ControllerSupervisor::StateOf(absl::string_view name) const {
  if (Entry* e = Live(name)) return e->state;
  for (const auto& [id, e] : entries_) {
    if (e->name == name) return e->state;
  }
  return std::nullopt;
}

bool ControllerSupervisor::Known(absl::string_view name) const { return StateOf(name).has_value(); }

void ControllerSupervisor::WhenGone(absl::string_view name, int64_t timeout_ns,
                                    absl::AnyInvocable<void(bool gone) &&> then) {
  const uint64_t id = next_waiter_++;
  GoneWaiter& w = gone_waiters_[id];
  w.name = std::string(name);
  w.then = std::move(then);
  if (!Known(name)) {
    RunGoneWaiters(w.name);
    return;
  }
  w.timer = plane_->After(timeout_ns, [this, alive = std::weak_ptr<bool>(alive_), id] {
    if (alive.expired()) return;
    auto it = gone_waiters_.find(id);
    if (it == gone_waiters_.end()) return;
    absl::AnyInvocable<void(bool) &&> then = std::move(it->second.then);
    gone_waiters_.erase(it);
    std::move(then)(false);
  });
}

// Posted: a waiter may add a controller of that name, which must not happen inside the
// transition that erased the last one.
void ControllerSupervisor::RunGoneWaiters(const std::string& name) {
  for (auto it = gone_waiters_.begin(); it != gone_waiters_.end();) {
    if (it->second.name != name) {
      ++it;
      continue;
    }
    plane_->Cancel(it->second.timer);
    auto shared = std::make_shared<absl::AnyInvocable<void(bool) &&>>(std::move(it->second.then));
    it = gone_waiters_.erase(it);
    if (!plane_->Post([shared] { std::move (*shared)(true); })) std::move(*shared)(false);
  }
}

void ControllerSupervisor::On(Entry* e, SupervisorEvent event, std::string why) {
  if (event == SupervisorEvent::kDeviceGone) e->release = true;
  const SupervisedState from = e->state;
  const std::optional<SupervisedState> to = NextState(from, event, e->driver->reset_kind());
  if (!to) {
    if (event != SupervisorEvent::kDeviceGone) {
      Log(absl::StrCat(e->name, ": ", SupervisedStateName(from), ": ",
                       SupervisorEventName(event), " changes nothing (", why, ")"));
    }
    return;
  }
  e->state = *to;
  Log(absl::StrCat(e->name, ": ", SupervisedStateName(from), " -> ", SupervisedStateName(*to),
                   " on ", SupervisorEventName(event), ": ", why));
  Enter(e, from, *to, why);
}

// What entering a state does. A step that finishes at once (a fence, a recovery) feeds
// its outcome back as the next event.
void ControllerSupervisor::Enter(Entry* e, SupervisedState from, SupervisedState to,
                                 const std::string& why) {
  using S = SupervisedState;
  if (InCore(from) && !InCore(to)) LeaveCore(e, why);
  switch (to) {
    case S::kResetQuiescing:
      (void)mp_->SetControllerState(e->name, ControllerState::kResetting, why);
      if (absl::Status s = mp_->QuiesceController(e->name); !s.ok()) {
        Log(absl::StrCat(e->name, ": quiesce: ", s.message()));
      }
      return;
    case S::kResetBelow:
      DoResetBelow(e);
      return;
    case S::kResetFencing:
    case S::kRetiredFencing:
      DoFence(e);
      return;
    case S::kRecovering:
      DoRecover(e);
      return;
    case S::kLive:
      if (from == S::kRecovering) {
        (void)mp_->ResumeController(e->name);
        (void)mp_->SetControllerState(e->name, ControllerState::kLive, "reset done");
        e->driver->ReadAnaLog();
      }
      return;
    case S::kGone:
      Erase(e);
      return;
    default:
      return;
  }
}

void ControllerSupervisor::LeaveCore(Entry* e, const std::string& why) {
  e->driver->OnDetach(e->release);
  (void)mp_->RemoveController(e->name, why);
}

void ControllerSupervisor::DoFence(Entry* e) {
  const FenceResult r = e->driver->Fence({.release = e->release,
                                          .shutdown_notify = e->stopping,
                                          .hand_over = e->stopping && hand_over_ && !e->release});
  std::string detail = r.detail;
  if (absl::Status s = mp_->ControllerFenced(e->name); !s.ok()) {
    absl::StrAppend(&detail, "; ", s.message());
  }
  if (e->cqt_ms != 0) absl::StrAppend(&detail, "; CQT ", e->cqt_ms, " ms");
  On(e, r.released ? SupervisorEvent::kFenceReleased : SupervisorEvent::kFenced, detail);
}

void ControllerSupervisor::DoRecover(Entry* e) {
  if (absl::Status s = e->driver->Recover(); !s.ok()) {
    On(e, SupervisorEvent::kRecoveryFailed, absl::StrCat("reset failed: ", s.message()));
    return;
  }
  On(e, SupervisorEvent::kRecovered, "reset done");
}

void ControllerSupervisor::DoResetBelow(Entry* e) {
  (void)mp_->SetControllerState(e->name, ControllerState::kResetting, "reset requested");
  plane_->Offload([this, alive = std::weak_ptr<bool>(alive_), id = e->id,
                   call = e->driver->ResetBelow()]() mutable -> ControlPlane::Task {
    absl::Status s = std::move(call)();
    return [this, alive, id, s]() {
      if (alive.expired()) return;
      if (Entry* e = ById(id)) {
        On(e, SupervisorEvent::kResetBelowDone, s.ok() ? "reset done" : std::string(s.message()));
      }
    };
  });
}

void ControllerSupervisor::Erase(Entry* e) {
  const std::string name = e->name;
  entries_.erase(e->id);
  if (!Known(name)) RunGoneWaiters(name);
  MaybeStopped();
}

void ControllerSupervisor::ArmHealthCheck() {
    health_timer_ = plane_->After(int64_t{options_.health_interval_ms} * 1'000'000,
                                  [this, alive = std::weak_ptr<bool>(alive_)] {
                                    if (!alive.expired()) CheckHealth();
                                  });
}

void ControllerSupervisor::CheckHealth() {
  std::vector<uint64_t> ids;
  for (const auto& [id, e] : entries_) {
    if (e->state == SupervisedState::kLive) ids.push_back(id);
  }
  for (uint64_t id : ids) {
    Entry* e = ById(id);
    if (e == nullptr || e->state != SupervisedState::kLive) continue;
    const HealthCheck h = e->driver->CheckHealth();
    if (h.verdict == HealthCheck::kGone) On(e, SupervisorEvent::kDeviceGone, h.why);
    if (h.verdict == HealthCheck::kFatal) On(e, SupervisorEvent::kResetRequested, h.why);
  }
  if (!stopping_) ArmHealthCheck();
}

void ControllerSupervisor::StopAll(int64_t grace_ns, absl::AnyInvocable<void(size_t) &&> done,
                                   bool hand_over) {
  stopping_ = true;
  hand_over_ = hand_over;
  stop_done_ = std::move(done);
  plane_->Cancel(health_timer_);
  uint16_t cqt_ms = 0;
  std::vector<uint64_t> ids;
  for (const auto& [id, e] : entries_) {
    cqt_ms = std::max(cqt_ms, e->cqt_ms);
    if (InCore(e->state)) ids.push_back(id);
  }
  for (uint64_t id : ids) {
    if (Entry* e = ById(id); e != nullptr && InCore(e->state)) {
      e->stopping = true;
      On(e, SupervisorEvent::kDetachRequested, "agent stopping");
    }
  }
  stop_timer_ = plane_->After(grace_ns + int64_t{cqt_ms} * 1'000'000,
                              [this, alive = std::weak_ptr<bool>(alive_)] {
                                if (alive.expired() || !stop_done_) return;
                                Log(absl::StrCat(entries_.size(),
                                                 " controller(s) not let go in time; left as they are"));
                                std::move(stop_done_)(entries_.size());
                                stop_done_ = nullptr;
                              });
  MaybeStopped();
}

void ControllerSupervisor::MaybeStopped() {
  if (!stopping_ || !entries_.empty() || !stop_done_) return;
  plane_->Cancel(stop_timer_);
  std::move(stop_done_)(0);
  stop_done_ = nullptr;
}

}  // namespace umpath
