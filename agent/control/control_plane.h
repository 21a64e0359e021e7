#pragma once

// The control side's one thread (DESIGN.md "Threads"): every topology change, from
// every backend, runs here one at a time, so the state it touches needs no lock.
// Others reach it by posting a task: gRPC handlers (they finish their reactor when the
// task answers), the core's callbacks, a worker's command timeout. Kernel files it
// watches (interrupt eventfds, the uevent socket) call back here, and so do timers.
//
// Nothing that blocks runs here: a call that may take long (a kernel controller reset,
// a fabrics connect, creating a block device) goes to Offload, which runs it on a
// thread of its own and brings its result back as a task.
//
// Time is the injected Clock's; a test with a ManualClock advances it and calls Wake.

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "agent/base/mutex.h"
#include "agent/core/clock.h"

namespace umpath {

class ControlPlane {
 public:
  using Task = absl::AnyInvocable<void() &&>;
  using TimerId = uint64_t;

  static absl::StatusOr<std::unique_ptr<ControlPlane>> Create(const Clock* clock = SystemClock::Get());
  // Stops the thread (Stop).
  ~ControlPlane();

  void Start();
  // Ends the loop once what is queued now has run, waits for offloaded calls, and joins
  // the thread. Tasks posted later, and results of offloaded calls, are dropped.
  void Stop();

  // Any thread. Runs `task` on the control thread, after what was posted before it.
  // False (and `task` dropped) once the plane stops.
  bool Post(Task task);
  // Any thread but the control thread (there it runs `task` at once): posts `task` and
  // waits for it to have run. For start-up and tests.
  void Run(Task task);
  // Any thread: fire `task` on the control thread once the clock reaches `deadline_ns`.
  TimerId At(int64_t deadline_ns, Task task);
  TimerId After(int64_t delay_ns, Task task);
  // A timer not yet fired does not fire. Any thread.
  void Cancel(TimerId id);
  // Any thread: `on_readable` runs on the control thread while `fd` is readable
  // (level-triggered: it must read what is there). Unwatch before closing `fd`.
  absl::Status Watch(int fd, std::function<void()> on_readable);
  void Unwatch(int fd);
  // Runs `call` on a thread of its own; the task it returns runs on the control thread
  // (dropped once the plane stops). False (and `call` dropped) once the plane stops.
  bool Offload(absl::AnyInvocable<Task() &&> call);
  // Re-reads the clock (tests that moved a ManualClock) and looks at the queue.
  void Wake();
  // A plane that was never started (unit tests drive it by hand): runs what is queued
  // and due now on the calling thread, and the watched files that are readable.
  // Returns how many tasks, timers and files ran.
  int RunPending();

  bool OnControlThread() const { return std::this_thread::get_id() == thread_id_.load(); }
  const Clock& clock() const { return *clock_; }

 private:
  ControlPlane(const Clock* clock, int wake_fd, int epoll_fd);
  void Loop();
  // Runs what is queued and what is due; false once stopped.
  bool RunDue(int* ran = nullptr);
  int DispatchFiles(int timeout_ms);
  int TimeoutMs();

  const Clock* const clock_;
  const int wake_fd_, epoll_fd_;
  std::thread thread_;
  std::atomic<std::thread::id> thread_id_{};

  Mutex mu_;
  std::deque<Task> tasks_ ABSL_GUARDED_BY(mu_);
  // By deadline; the id breaks ties in the order they were set.
  std::map<std::pair<int64_t, TimerId>, Task> timers_ ABSL_GUARDED_BY(mu_);
  std::map<TimerId, int64_t> timer_deadline_ ABSL_GUARDED_BY(mu_);
  TimerId next_timer_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<int, std::shared_ptr<std::function<void()>>> watches_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::thread> offloads_ ABSL_GUARDED_BY(mu_);
  uint64_t next_offload_ ABSL_GUARDED_BY(mu_) = 1;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ = false;
};

}  // namespace umpath
