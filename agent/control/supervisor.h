#pragma once

// Every controller the agent drives, whatever its backend, goes through one state
// machine here (SEMANTICS "Fencing", "Controller state"). The backends are drivers
// below it: they bring a controller up, fence it, bring it up again after a reset, and
// read its ANA log; the supervisor decides when, and is the only one that tells the
// core a controller is fenced, back in service, or gone.
//
//   kLive --reset--> kResetQuiescing --quiesced--> kResetFencing --fenced--> kResetFenced
//     --handed back--> kRecovering --recovered--> kLive
//   kLive --reset (the layer below resets it: a kernel controller)--> kResetBelow
//     --done--> kLive
//   any --detach / device gone--> kRetiring --quiesced--> kRetiredFencing --fenced-->
//     kRetiredFenced --queue pairs released--> gone
//   (a fence that had to let the device go, or a recovery that failed: kRetiredFenced)
//
// Each transition is an event: the state it leaves and enters, the event and why, as
// one log line ("supervisor: NAME: FROM -> TO on EVENT: WHY").
//
// Threading: everything runs on the control plane's thread; the core's callbacks and
// the drivers' own events are posted there.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "agent/control/control_plane.h"
#include "agent/core/multipath.h"

namespace umpath {

enum class SupervisedState : uint8_t {
  kLive,
  kResetQuiescing,
  kResetFencing,
  kResetFenced,
  kRecovering,
  kResetBelow,
  kRetiring,
  kRetiredFencing,
  kRetiredFenced,
  kGone,
};
absl::string_view SupervisedStateName(SupervisedState s);

enum class SupervisorEvent : uint8_t {
  kResetRequested,
  kQuiesced,         // the core: no worker uses its queue pairs
  kFenced,           // the driver: it runs nothing it was given
  kFenceReleased,    // the driver: fenced by letting the device go
  kHandedBack,       // the core: its commands went back to their heads
  kRecovered,
  kRecoveryFailed,
  kResetBelowDone,
  kDetachRequested,
  kDeviceGone,
  kQueuePairsReleased,  // the core: every worker let go of its queue pairs
};
absl::string_view SupervisorEventName(SupervisorEvent e);

// How a controller is reset: by this agent (quiesce, fence, hand back, recover), or by
// the layer below it (the kernel's NVME_IOCTL_RESET: the kernel fails or requeues what
// it holds itself).
enum class ResetKind { kFenceAndRecover, kBelow };

// The table: where `event` takes a controller in `state`; nullopt where the event means
// nothing there (it is logged and dropped).
std::optional<SupervisedState> NextState(SupervisedState state, SupervisorEvent event,
                                         ResetKind kind);

struct FenceAsk {
  bool release = false;          // let the device go once fenced (hot-unplug)
  bool shutdown_notify = false;  // the agent stops: a clean shutdown first
  // The agent stops for a successor that adopts running controllers (issue 16 item 3):
  // a driver may hand an idle controller over instead of fencing it. Nothing it was
  // given is in flight, so nothing runs twice.
  bool hand_over = false;
};
struct FenceResult {
  bool released = false;  // the device was let go (it was gone, or nothing else worked)
  std::string detail;
};
struct HealthCheck {
  enum Verdict { kOk, kFatal, kGone } verdict = kOk;
  std::string why;
};

// One controller as its backend drives it. Called on the control thread only.
class ControllerDriver {
 public:
  virtual ~ControllerDriver() = default;
  virtual ResetKind reset_kind() const = 0;
  // Why a reset cannot start now; empty when it can.
  virtual std::string ResetRefused() const { return ""; }
  // Its queue pairs are out of service: when this returns it executes nothing it was
  // given (SEMANTICS "Fencing").
  virtual FenceResult Fence(const FenceAsk& ask) = 0;
  // A reset's commands went back to their heads: bring it up again.
  virtual absl::Status Recover() = 0;
  // kBelow: the reset call, run off the control thread; it must not use the driver
  // (the controller may be let go meanwhile).
  virtual absl::AnyInvocable<absl::Status() &&> ResetBelow() {
    return [] { return absl::UnimplementedError("no reset below"); };
  }
  virtual void ReadAnaLog() = 0;
  virtual HealthCheck CheckHealth() { return {}; }
  // It leaves the core: stop watching its events.
  virtual void OnDetach(bool device_gone) { (void)device_gone; }
};

struct SupervisorOptions {
  int health_interval_ms = 0;  // CheckHealth of live controllers this often; 0: never
  std::function<void(const std::string&)> log;
};

class ControllerSupervisor {
 public:
  ControllerSupervisor(Multipath* mp, ControlPlane* plane, SupervisorOptions options);
  // On the control thread, or once the plane has stopped; and only once no worker runs
  // and the core calls no controller any more: controllers still here (StopAll said
  // how many) go with it, their queue pairs too.
  ~ControllerSupervisor();

  // A controller its driver brought up joins the core (its paths are the backend's to
  // add). ALREADY_EXISTS when one of that name is live. Refused, the driver goes with it.
  absl::Status Add(std::unique_ptr<ControllerDriver> driver, const ControllerSpec& spec,
                   const std::vector<QueuePair*>& qps);
  // FAILED_PRECONDITION unless live and the driver can; NOT_FOUND.
  absl::Status Reset(absl::string_view name, std::string why);
  // Its paths fail over, it is fenced, and it goes once the workers let go. NOT_FOUND
  // unless live or resetting.
  absl::Status Detach(absl::string_view name, std::string why, bool device_gone = false);
  // The driver of a controller that has not left the core; nullptr otherwise.
  ControllerDriver* Find(absl::string_view name) const;
  // Where the controller of that name is (the one not retiring first).
  std::optional<SupervisedState> StateOf(absl::string_view name) const;
  // Any controller of that name, leaving or not.
  bool Known(absl::string_view name) const;
  // Whether that name is free again: `then` runs on the control thread (posted, never
  // from inside this call) with true once no controller of that name is known, at once
  // when none is; with false after `timeout_ns`, or when the supervisor goes first.
  // For a caller that brings a controller back just after it was detached or lost: its
  // removal event comes before the workers have let it go.
  void WhenGone(absl::string_view name, int64_t timeout_ns, absl::AnyInvocable<void(bool gone) &&> then);

  // The one shutdown path: every controller is detached (a clean shutdown first);
  // `done` runs once all are gone, or after `grace_ns` (plus the largest CQT) with the
  // number left, which stay until the supervisor goes: a worker may still hold their
  // queue pairs.
  // `hand_over`: for a successor that adopts them (FenceAsk::hand_over).
  void StopAll(int64_t grace_ns, absl::AnyInvocable<void(size_t left) &&> done,
               bool hand_over = false);

 private:
  struct Entry;
  Entry* ById(uint64_t id) const;
  Entry* Live(absl::string_view name) const;
  void On(Entry* e, SupervisorEvent event, std::string why);
  void Enter(Entry* e, SupervisedState from, SupervisedState to, const std::string& why);
  void LeaveCore(Entry* e, const std::string& why);
  void DoFence(Entry* e);
  void DoRecover(Entry* e);
  void DoResetBelow(Entry* e);
  void Erase(Entry* e);
  void RunGoneWaiters(const std::string& name);
  void ArmHealthCheck();
  void CheckHealth();
  void MaybeStopped();
  void Log(const std::string& line) const;

  Multipath* const mp_;
  ControlPlane* const plane_;
  const SupervisorOptions options_;
  std::map<uint64_t, std::unique_ptr<Entry>> entries_;
  uint64_t next_id_ = 1;
  ControlPlane::TimerId health_timer_ = 0;
  bool stopping_ = false;
  bool hand_over_ = false;
  ControlPlane::TimerId stop_timer_ = 0;
  absl::AnyInvocable<void(size_t) &&> stop_done_;
  struct GoneWaiter {
    std::string name;
    ControlPlane::TimerId timer = 0;
    absl::AnyInvocable<void(bool) &&> then;
  };
  std::map<uint64_t, GoneWaiter> gone_waiters_;
  uint64_t next_waiter_ = 1;
  // Lives as long as the supervisor: tasks posted for it check it first.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace umpath
