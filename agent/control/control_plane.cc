#include "agent/control/control_plane.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

namespace umpath {

absl::StatusOr<std::unique_ptr<ControlPlane>> ControlPlane::Create(const Clock* clock) {
  const int wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake < 0) return absl::ErrnoToStatus(errno, "control plane eventfd");
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) {
    const int e = errno;
    close(wake);
    return absl::ErrnoToStatus(e, "control plane epoll");
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake;
  epoll_ctl(ep, EPOLL_CTL_ADD, wake, &ev);
  return std::unique_ptr<ControlPlane>(new ControlPlane(clock, wake, ep));
}

ControlPlane::ControlPlane(const Clock* clock, int wake_fd, int epoll_fd)
    : clock_(clock), wake_fd_(wake_fd), epoll_fd_(epoll_fd) {}

ControlPlane::~ControlPlane() {
  Stop();
  close(epoll_fd_);
  close(wake_fd_);
}

void ControlPlane::Start() {
  started_ = true;
  thread_ = std::thread([this] { Loop(); });
}

void ControlPlane::Stop() {
  {
    MutexLock l(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  Wake();
  if (thread_.joinable()) thread_.join();
  // Offloaded calls are bounded by what they call (the kernel's own timeouts); their
  // results have nowhere to go.
  std::map<uint64_t, std::thread> left;
  {
    MutexLock l(&mu_);
    left.swap(offloads_);
    tasks_.clear();
    timers_.clear();
  }
  for (auto& [id, t] : left) t.join();
  MutexLock l(&mu_);
  tasks_.clear();
}

void ControlPlane::Wake() {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof one);
}

bool ControlPlane::Post(Task task) {
  {
    MutexLock l(&mu_);
    if (stopping_ && !OnControlThread()) return false;
    tasks_.push_back(std::move(task));
  }
  Wake();
  return true;
}

void ControlPlane::Run(Task task) {
  bool inline_run;
  {
    MutexLock l(&mu_);
    inline_run = OnControlThread() || !started_ || stopping_;
  }
  if (inline_run) {
    std::move(task)();
    return;
  }
  Notification done;
  Post([&task, &done] {
    std::move(task)();
    done.Notify();
  });
  done.WaitFor(std::chrono::hours(24 * 365));
}

ControlPlane::TimerId ControlPlane::At(int64_t deadline_ns, Task task) {
  TimerId id;
  {
    MutexLock l(&mu_);
    id = next_timer_++;
    timers_.emplace(std::make_pair(deadline_ns, id), std::move(task));
    timer_deadline_[id] = deadline_ns;
  }
  Wake();
  return id;
}

ControlPlane::TimerId ControlPlane::After(int64_t delay_ns, Task task) {
  return At(clock_->MonotonicNanos() + delay_ns, std::move(task));
}

void ControlPlane::Cancel(TimerId id) {
  MutexLock l(&mu_);
  auto it = timer_deadline_.find(id);
  if (it == timer_deadline_.end()) return;
  timers_.erase({it->second, id});
  timer_deadline_.erase(it);
}

absl::Status ControlPlane::Watch(int fd, std::function<void()> on_readable) {
  {
    MutexLock l(&mu_);
    watches_[fd] = std::make_shared<std::function<void()>>(std::move(on_readable));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    const int e = errno;
    MutexLock l(&mu_);
    watches_.erase(fd);
    return absl::ErrnoToStatus(e, "control plane: watch");
  }
  return absl::OkStatus();
}

void ControlPlane::Unwatch(int fd) {
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  MutexLock l(&mu_);
  watches_.erase(fd);
}

bool ControlPlane::Offload(absl::AnyInvocable<Task() &&> call) {
  MutexLock l(&mu_);
  if (stopping_) return false;
  const uint64_t id = next_offload_++;
  offloads_[id] = std::thread([this, id, call = std::move(call)]() mutable {
    Task then = std::move(call)();
    // Joined on the control thread, then its result runs there.
    Post([this, id, then = std::move(then)]() mutable {
      std::thread t;
      {
        MutexLock l(&mu_);
        auto it = offloads_.find(id);
        if (it != offloads_.end()) {
          t = std::move(it->second);
          offloads_.erase(it);
        }
      }
      if (t.joinable()) t.join();
      if (then) std::move(then)();
    });
  });
  return true;
}

int ControlPlane::TimeoutMs() {
  MutexLock l(&mu_);
  if (!tasks_.empty() || stopping_) return 0;
  if (timers_.empty()) return -1;
  const int64_t left = timers_.begin()->first.first - clock_->MonotonicNanos();
  if (left <= 0) return 0;
  // Rounded up, so a timer never fires early; capped, so a ManualClock is re-read.
  return static_cast<int>(std::min<int64_t>((left + 999'999) / 1'000'000, 60'000));
}

bool ControlPlane::RunDue(int* ran) {
  std::deque<Task> now;
  {
    MutexLock l(&mu_);
    now.swap(tasks_);
  }
  if (ran) *ran += static_cast<int>(now.size());
  for (Task& t : now) std::move(t)();
  for (;;) {
    Task t;
    {
      MutexLock l(&mu_);
      if (timers_.empty() || timers_.begin()->first.first > clock_->MonotonicNanos()) break;
      auto it = timers_.begin();
      timer_deadline_.erase(it->first.second);
      t = std::move(it->second);
      timers_.erase(it);
    }
    if (ran) ++*ran;
    std::move(t)();
  }
  MutexLock l(&mu_);
  return !(stopping_ && tasks_.empty());
}

int ControlPlane::DispatchFiles(int timeout_ms) {
  epoll_event evs[16];
  const int n = epoll_wait(epoll_fd_, evs, 16, timeout_ms);
  int ran = 0;
  for (int i = 0; i < n; ++i) {
    const int fd = evs[i].data.fd;
    if (fd == wake_fd_) {
      uint64_t v;
      [[maybe_unused]] ssize_t r = read(wake_fd_, &v, sizeof v);
      continue;
    }
    // Looked up per event: an earlier callback may have unwatched this one.
    std::shared_ptr<std::function<void()>> cb;
    {
      MutexLock l(&mu_);
      if (auto it = watches_.find(fd); it != watches_.end()) cb = it->second;
    }
    if (cb) {
      (*cb)();
      ++ran;
    }
  }
  return ran;
}

void ControlPlane::Loop() {
  thread_id_.store(std::this_thread::get_id());
  for (;;) {
    DispatchFiles(TimeoutMs());
    if (!RunDue()) break;
  }
}

int ControlPlane::RunPending() {
  int ran = DispatchFiles(0);
  RunDue(&ran);
  return ran;
}

}  // namespace umpath
