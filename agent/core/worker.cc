#include "agent/core/worker.h"

#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace umpath {

namespace {
// Loop iterations with nothing to do before an idle worker goes to sleep.
constexpr int kIdleSpins = 64;
static_assert(kIdleSpins > QueuePair::kMaxEmptyPollsBeforeWakeReset,
              "a queue pair's wake fd must be reset before its worker sleeps");
// With commands outstanding an idle worker still wakes this often (queue pair deadlines).
constexpr int64_t kOutstandingTickNs = 1'000'000'000;
constexpr uint32_t kPollBatch = 64;
}  // namespace

std::unique_ptr<Worker> Worker::Create(Options options) {
  const int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  if (efd < 0 || ep < 0) {
    if (efd >= 0) close(efd);
    if (ep >= 0) close(ep);
    return nullptr;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;
  epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
  return std::unique_ptr<Worker>(new Worker(std::move(options), efd, ep));
}

Worker::Worker(Options options, int event_fd, int epoll_fd)
    : options_(std::move(options)), event_fd_(event_fd), epoll_fd_(epoll_fd) {}

Worker::~Worker() {
  Stop();
  close(epoll_fd_);
  close(event_fd_);
}

void Worker::Post(absl::AnyInvocable<void()> fn) {
  {
    MutexLock lock(&inbox_mu_);
    inbox_.push_back(std::move(fn));
  }
  inbox_nonempty_.store(true, std::memory_order_release);
  const uint64_t one = 1;
  // A full eventfd counter still wakes the worker; nothing to handle.
  [[maybe_unused]] ssize_t n = write(event_fd_, &one, sizeof(one));
}

uint32_t Worker::DrainInbox() {
  if (!inbox_nonempty_.load(std::memory_order_acquire)) return 0;
  std::vector<absl::AnyInvocable<void()>> batch;
  {
    MutexLock lock(&inbox_mu_);
    batch.swap(inbox_);
    inbox_nonempty_.store(false, std::memory_order_relaxed);
  }
  for (auto& fn : batch) fn();
  return static_cast<uint32_t>(batch.size());
}

uint32_t Worker::RunOnce() {
  loop_now_ = 0;
  uint32_t work = DrainInbox();
  for (auto& q : qps_) {
    if (!q->quiesced) work += q->qp->Poll(*this, kPollBatch);
  }
  if (!draining_.empty()) work += PollDraining();
  for (IoSource* src : sources_) work += src->Poll(*this);
  if (!channels_.empty()) {
    int64_t now = 0;
    for (auto& [uid, ch] : channels_) {
      if (ch->NextRetryAt() == 0) continue;
      if (now == 0) now = Now();
      const uint32_t before = ch->waiting();
      ch->RunDeferred(now);
      work += before != ch->waiting();
    }
  }
  if (!dead_channels_.empty()) ReapDeadChannels();
  Flush();
  loop_now_ = 0;  // a submit between passes reads the clock afresh
  return work;
}

void Worker::Flush() {
  for (WorkerQueuePair* q : dirty_) {
    q->dirty = false;
    q->qp->Ring();
  }
  dirty_.clear();
  for (IoSource* src : sources_) src->Flush();
}

Channel* Worker::FindChannel(uint64_t head_uid) {
  auto it = channels_.find(head_uid);
  return it == channels_.end() ? nullptr : it->second.get();
}

uint32_t Worker::outstanding() const {
  uint32_t n = 0;
  for (const auto& q : qps_) n += q->qp->outstanding();
  for (const auto& q : draining_) n += q->qp->outstanding();
  return n;
}

uint32_t Worker::polled_outstanding() const {
  uint32_t n = 0;
  for (const auto& q : qps_) {
    if (!q->quiesced) n += q->qp->outstanding();
  }
  for (const auto& q : draining_) n += q->qp->outstanding();
  return n;
}

void Worker::SetWakeFd(WorkerQueuePair* q, bool watch) {
  const int fd = q->qp->wake_fd();
  if (fd >= 0) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = q;
    epoll_ctl(epoll_fd_, watch ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, fd, watch ? &ev : nullptr);
  }
  all_qps_wakeable_ = true;
  for (const auto& p : qps_) {
    if (!p->quiesced && p->qp->wake_fd() < 0) all_qps_wakeable_ = false;
  }
  for (const auto& p : draining_) {
    if (p->qp->wake_fd() < 0) all_qps_wakeable_ = false;
  }
}

WorkerQueuePair* Worker::FindQueuePair(uint32_t controller_id) {
  for (auto& q : qps_) {
    if (q->controller_id == controller_id) return q.get();
  }
  return nullptr;
}

uint32_t Worker::Distance(int numa_node) const {
  // Unknown placement counts as local, as the kernel does for NUMA_NO_NODE.
  if (numa_node < 0 || static_cast<size_t>(numa_node) >= options_.distances.size()) {
    return 10;
  }
  return options_.distances[numa_node];
}

void Worker::AddQueuePair(uint32_t controller_id, QueuePair* qp) {
  auto q = std::make_unique<WorkerQueuePair>();
  q->controller_id = controller_id;
  q->qp = qp;
  WorkerQueuePair* raw = q.get();
  qps_.push_back(std::move(q));
  dirty_.reserve(qps_.size());
  SetWakeFd(raw, true);
}

void Worker::QuiesceQueuePair(uint32_t controller_id) {
  WorkerQueuePair* q = FindQueuePair(controller_id);
  if (q == nullptr) return;
  if (q->quiesced) return;
  q->quiesced = true;
  q->gone = true;  // path selection skips it from the next I/O on
  // Not polled, so its interrupts must not wake this worker either (a level-triggered
  // eventfd nobody reads would keep it spinning).
  SetWakeFd(q, false);
  // Commands placed but not yet rung stay unrung: the controller is about to be fenced.
  if (q->dirty) {
    q->dirty = false;
    dirty_.erase(std::remove(dirty_.begin(), dirty_.end(), q), dirty_.end());
  }
}

void Worker::HandBackQueuePair(uint32_t controller_id, HandBackThen then,
                               absl::AnyInvocable<void(uint32_t)> done) {
  auto it = std::find_if(qps_.begin(), qps_.end(), [&](const auto& q) {
    return q->controller_id == controller_id;
  });
  if (it == qps_.end()) {
    if (done) done(0);
    return;
  }
  WorkerQueuePair* q = it->get();
  QuiesceQueuePair(controller_id);
  const uint32_t before = q->qp->outstanding();
  q->qp->AbortAll(*this);  // its I/O fails over to the other paths
  const uint32_t handed_back = before - q->qp->outstanding();
  if (then == HandBackThen::kKeepQuiesced) {
    if (done) done(handed_back);
    return;
  }
  std::unique_ptr<WorkerQueuePair> owned = std::move(*it);
  qps_.erase(it);
  if (owned->qp->outstanding() == 0) {
    if (done) done(handed_back);
    return;
  }
  // The kernel still holds commands: they come back through Poll, are never completed
  // here, and the queue pair goes only once they have.
  owned->draining = true;
  owned->drained = [done = std::move(done), handed_back]() mutable {
    if (done) done(handed_back);
  };
  WorkerQueuePair* raw = owned.get();
  draining_.push_back(std::move(owned));
  SetWakeFd(raw, true);
}

uint32_t Worker::PollDraining() {
  uint32_t work = 0;
  for (size_t i = 0; i < draining_.size();) {
    WorkerQueuePair* q = draining_[i].get();
    work += q->qp->Poll(*this, kPollBatch);
    if (q->qp->outstanding() > 0) {
      ++i;
      continue;
    }
    std::unique_ptr<WorkerQueuePair> owned = std::move(draining_[i]);
    draining_.erase(draining_.begin() + static_cast<std::ptrdiff_t>(i));
    SetWakeFd(owned.get(), false);
    if (owned->drained) owned->drained();
    ++work;
  }
  return work;
}

void Worker::ResumeQueuePair(uint32_t controller_id) {
  WorkerQueuePair* q = FindQueuePair(controller_id);
  if (q == nullptr || !q->quiesced) return;
  q->quiesced = false;
  q->gone = false;
  SetWakeFd(q, true);
}

void Worker::AddSource(IoSource* source) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = source;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, source->wake_fd(), &ev);
  sources_.push_back(source);
}

void Worker::RemoveSource(IoSource* source, absl::AnyInvocable<void()> released) {
  auto it = std::find(sources_.begin(), sources_.end(), source);
  if (it != sources_.end()) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, source->wake_fd(), nullptr);
    sources_.erase(it);
  }
  if (released) released();
}

void Worker::AdoptSnapshot(std::shared_ptr<const HeadSnapshot> snapshot) {
  auto& ch = channels_[snapshot->head_uid];
  if (!ch) ch = std::make_unique<Channel>(this, snapshot->head_uid);
  ch->Adopt(std::move(snapshot));
}

void Worker::KickHead(uint64_t head_uid) {
  if (Channel* ch = FindChannel(head_uid)) {
    ch->ResetSelection();
    ch->Kick();
  }
}

void Worker::DropHead(uint64_t head_uid, IoError why) {
  auto it = channels_.find(head_uid);
  if (it == channels_.end()) return;
  std::unique_ptr<Channel> ch = std::move(it->second);
  channels_.erase(it);
  ch->Fail(why);
  // Commands still on a queue pair point at the channel: keep it until they are back.
  if (ch->in_flight() > 0) dead_channels_.push_back(std::move(ch));
}

void Worker::FailWaitingFast(uint64_t head_uid) {
  if (Channel* ch = FindChannel(head_uid)) ch->FailWaitingFast();
}

void Worker::FailAll(IoError why) {
  std::vector<uint64_t> uids;
  for (auto& [uid, ch] : channels_) uids.push_back(uid);
  for (uint64_t uid : uids) DropHead(uid, why);
}

void Worker::ReapDeadChannels() {
  dead_channels_.erase(std::remove_if(dead_channels_.begin(), dead_channels_.end(),
                                      [](const auto& ch) { return ch->in_flight() == 0; }),
                       dead_channels_.end());
}

void Worker::OnCompletion(IoRequest* req, nvme::Status status) {
  req->channel->OnCompletion(req, status);
}

void Worker::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void Worker::Stop() {
  stop_.store(true, std::memory_order_release);
  if (thread_.joinable()) {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(event_fd_, &one, sizeof(one));
    thread_.join();
  } else {
    DrainInbox();  // driven by hand: what was posted still runs, nothing is dropped
  }
}

void Worker::Loop() {
  int idle = 0;
  while (!stop_.load(std::memory_order_acquire)) {
    loop_passes_.store(loop_passes_.load(std::memory_order_relaxed) + 1,
                       std::memory_order_relaxed);
    if (RunOnce() > 0) {
      idle = 0;
      continue;
    }
    // Commands outstanding on a queue pair that cannot wake us: keep polling, but
    // let the other thread of this core run.
    if (polled_outstanding() > 0 && !all_qps_wakeable_) {
      if (++idle > kIdleSpins) sched_yield();
      continue;
    }
    if (++idle < kIdleSpins) continue;
    idle = 0;
    int64_t next = 0;
    for (auto& [uid, ch] : channels_) {
      const int64_t t = ch->NextRetryAt();
      if (t != 0 && (next == 0 || t < next)) next = t;
    }
    // Commands outstanding: wake now and then even without a completion, so a queue
    // pair can notice a command past its deadline (a controller that stopped answering).
    if (polled_outstanding() > 0) {
      const int64_t tick = Now() + kOutstandingTickNs;
      if (next == 0 || tick < next) next = tick;
    }
    Sleep(next);
  }
  DrainInbox();
}

// An idle worker does not spin: it sleeps on its inbox eventfd and on the queue pairs'
// completion eventfds, until the next retry is due.
void Worker::Sleep(int64_t until) {
  if (inbox_nonempty_.load(std::memory_order_acquire)) return;
  int timeout_ms = -1;
  if (until != 0) {
    const int64_t left = until - Now();
    if (left <= 0) return;
    timeout_ms = static_cast<int>(std::min<int64_t>((left + 999'999) / 1'000'000, 1000));
  }
  sleeps_.store(sleeps_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  epoll_event evs[16];
  const int n = epoll_wait(epoll_fd_, evs, 16, timeout_ms);
  for (int i = 0; i < n; ++i) {
    if (evs[i].data.ptr == nullptr) {
      uint64_t v;
      [[maybe_unused]] ssize_t r = read(event_fd_, &v, sizeof(v));
    }
  }
}

}  // namespace umpath
