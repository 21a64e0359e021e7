#include "agent/core/multipath.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "agent/base/error_reason.h"
#include "agent/base/status_macros.h"
#include "agent/core/multipath_internal.h"

namespace umpath {

std::string HeadNameFor(absl::string_view subsys_nqn, uint32_t nsid,
                        const nvme::NamespaceIds& ids) {
  if (ids.nguid) return absl::StrCat("nguid-", nvme::HexString(*ids.nguid));
  if (ids.eui64) return absl::StrCat("eui64-", nvme::HexString(*ids.eui64));
  if (ids.uuid) return absl::StrCat("uuid-", nvme::UuidString(*ids.uuid));
  return absl::StrCat("ns", nsid, ".", subsys_nqn);
}

PathStateWord Multipath::Path::Word() const {
  PathStateWord w;
  w.controller = controller->state;
  w.ana = ana;
  w.ana_pending = ana_pending;
  w.ready = ready;
  w.admin_failed = admin_failed;
  return w;
}

absl::StatusOr<std::unique_ptr<Multipath>> Multipath::Create(MultipathOptions options) {
  if (options.clock == nullptr) return absl::InvalidArgumentError("a clock is required");
  if (options.journal_capacity == 0) {
    return absl::InvalidArgumentError("journal_capacity must be at least 1");
  }
  for (Worker* w : options.workers) {
    if (w == nullptr) return absl::InvalidArgumentError("a worker is null");
  }
  RETURN_IF_ERROR(ValidateDelayedRemovalSecs(options.default_delayed_removal_secs));
  RETURN_IF_ERROR(ValidateIoFailTimeoutSecs(options.default_io_fail_timeout_secs));
  const int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, "eventfd");
  return std::unique_ptr<Multipath>(new Multipath(std::move(options), fd));
}

Incarnation MakeIncarnation(const Clock& clock) {
  Incarnation inc;
  std::random_device rd;
  const uint64_t r = (uint64_t{rd()} << 32) | rd();
  inc.name = absl::StrCat(absl::Hex(r, absl::kZeroPad16));
  inc.first = std::max<int64_t>(clock.WallNanos() / 1000, 1);
  return inc;
}

Multipath::Multipath(MultipathOptions options, int wake_fd)
    : options_(std::move(options)),
      journal_(options_.journal_capacity, options_.clock, options_.first_revision,
               options_.incarnation),
      default_policy_(options_.default_policy),
      default_delayed_removal_secs_(options_.default_delayed_removal_secs),
      default_io_fail_timeout_secs_(options_.default_io_fail_timeout_secs),
      wake_fd_(wake_fd) {
  next_head_uid_ = std::max<uint64_t>(options_.first_head_uid, 1);
  fence_notice_ = std::make_shared<FenceNotice>();
  fence_notice_->fd = dup(wake_fd_);
}

Multipath::~Multipath() {
  Shutdown();
  close(wake_fd_);
}

void Multipath::WakeTimer() {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof(one));
}

void Multipath::Start() {
  timer_thread_ = std::thread([this] { TimerLoop(); });
}

void Multipath::TimerLoop() {
  for (;;) {
    int64_t next;
    {
      MutexLock lock(&mu_);
      if (shut_down_) return;
      next = NextDeadline();
    }
    int timeout_ms = 1000;
    if (next != 0) {
      const int64_t left = next - options_.clock->MonotonicNanos();
      timeout_ms = static_cast<int>(std::clamp<int64_t>((left + 999'999) / 1'000'000, 0, 1000));
    }
    pollfd p{wake_fd_, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) > 0) {
      uint64_t v;
      [[maybe_unused]] ssize_t n = read(wake_fd_, &v, sizeof(v));
    }
    RunPending();
  }
}

void Multipath::Shutdown() {
  {
    Locked l(this);
    if (shut_down_) return;
    shut_down_ = true;
    for (auto& h : heads_) {
      if (h->removal_deadline != 0) {
        h->removal_deadline = 0;
        Emit(Event{.type = EventType::kRemovalCancelled, .head = h->name,
                   .reason = "agent shutting down"});
      }
    }
    // Nothing may wait forever: every worker fails what it holds.
    for (Worker* w : options_.workers) w->Post([w] { w->FailAll(IoError::kShutdown); });
  }
  WakeTimer();
  if (timer_thread_.joinable()) timer_thread_.join();
  journal_.CloseAll();
}

int64_t Multipath::NextDeadline() const {
  int64_t next = 0;
  auto consider = [&next](int64_t t) {
    if (t != 0 && (next == 0 || t < next)) next = t;
  };
  for (const auto& h : heads_) {
    consider(h->removal_deadline);
    consider(h->fast_fail_deadline);
  }
  for (const auto& [name, c] : controllers_) {
    consider(c->anatt_deadline);
    if (c->fence == Fence::kFenced) consider(c->fence_at);
  }
  for (const auto& c : retired_) {
    if (c->fence == Fence::kFenced) consider(c->fence_at);
  }
  return next;
}

void Multipath::RequestAnaRead(ControllerShared* controller) {
  controller->ana_read_requested.store(true, std::memory_order_release);
  ana_reads_requested_.store(true, std::memory_order_release);
  WakeTimer();
}

void Multipath::RunPending() {
  Locked l(this);
  const int64_t now = options_.clock->MonotonicNanos();
  // Fences go on after a shutdown too: the backends let go of their controllers then.
  fence_notice_->pending.store(false, std::memory_order_relaxed);
  AdvanceFences(now);
  if (shut_down_) return;
  if (ana_reads_requested_.exchange(false, std::memory_order_acq_rel)) {
    for (auto& [name, c] : controllers_) {
      if (!c->shared->ana_read_requested.exchange(false, std::memory_order_acq_rel)) continue;
      // A worker set ANA_PENDING on the shared word; adopt it so the next store keeps it.
      for (auto& p : c->paths) StorePathState(p.get());
      if (ControllerBackend* b = c->backend) AfterUnlock([b] { b->RequestAnaLog(); });
    }
  }
  std::vector<Head*> expired;
  for (auto& h : heads_) {
    if (h->removal_deadline != 0 && h->removal_deadline <= now) expired.push_back(h.get());
  }
  for (auto& h : heads_) {
    if (h->fast_fail_deadline != 0 && h->fast_fail_deadline <= now) StartFastFail(h.get());
  }
  for (Head* h : expired) {
    RemoveHead(h,
               absl::StrCat("delayed removal expired: no path returned within ",
                            h->delayed_removal_secs, " s"),
               IoError::kHeadRemoved);
  }
  for (auto& [name, c] : controllers_) {
    if (c->anatt_deadline == 0 || c->anatt_deadline > now) continue;
    c->anatt_deadline = 0;
    Emit(Event{.type = EventType::kControllerStateChanged, .controller = c->name,
               .from = std::string(ControllerStateName(c->state)), .to = "reset-requested",
               .reason = absl::StrCat("an ANA group stayed in CHANGE for 2 x ANATT (",
                                      2 * std::max<int>(c->spec.anatt_secs, 1), " s)")});
    if (ControllerBackend* b = c->backend) AfterUnlock([b] { b->Reset(); });
  }
}

// --- Topology. ---

absl::Status Multipath::AddController(const ControllerSpec& spec, ControllerBackend* backend,
                                      std::vector<QueuePair*> queue_pairs) {
  if (spec.name.empty()) return absl::InvalidArgumentError("controller name is empty");
  if (queue_pairs.size() != options_.workers.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "controller ", spec.name, " brings ", queue_pairs.size(),
        " queue pairs; one per worker (", options_.workers.size(), ") is required"));
  }
  for (QueuePair* qp : queue_pairs) {
    if (qp == nullptr) return absl::InvalidArgumentError("a queue pair is null");
  }
  if (spec.ana_supported && spec.anagrpmax == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("controller ", spec.name, " reports ANA with ANAGRPMAX 0"));
  }
  Locked l(this);
  if (shut_down_) return absl::FailedPreconditionError("the agent is shutting down");
  if (controllers_.contains(spec.name)) {
    return absl::AlreadyExistsError(absl::StrCat("controller ", spec.name, " already exists"));
  }
  auto c = std::make_unique<Controller>();
  c->name = spec.name;
  c->spec = spec;
  c->state = spec.state;
  c->backend = backend;
  c->shared = std::make_shared<ControllerShared>();
  c->shared->id = next_controller_id_++;
  c->shared->ana_supported = spec.ana_supported;
  c->shared->crdt = spec.crdt;
  c->qps = queue_pairs;
  // Queue pairs reach the workers before any snapshot that names them.
  for (size_t i = 0; i < options_.workers.size(); ++i) {
    Worker* w = options_.workers[i];
    w->Post([w, id = c->shared->id, qp = queue_pairs[i]] { w->AddQueuePair(id, qp); });
  }
  Emit(Event{.type = EventType::kControllerAdded, .controller = c->name,
             .to = std::string(ControllerStateName(c->state)),
             .reason = absl::StrCat(spec.transport, " ", spec.address, " ", spec.subsys_nqn)});
  if (spec.ana_supported && c->state == ControllerState::kLive && backend) {
    AfterUnlock([backend] { backend->RequestAnaLog(); });
  }
  controllers_.emplace(spec.name, std::move(c));
  return absl::OkStatus();
}

absl::Status Multipath::SetControllerState(absl::string_view name, ControllerState state,
                                           absl::string_view reason) {
  Locked l(this);
  Controller* c = FindController(name);
  if (!c) return ControllerNotFoundError(name);
  if (c->state == state) return absl::OkStatus();
  const ControllerState old = c->state;
  c->state = state;
  const bool relive = state == ControllerState::kLive;
  for (auto& p : c->paths) {
    // SEMANTICS: in-flight counters reset when the controller re-identifies.
    if (relive) p->shared.state->in_flight.store(0, std::memory_order_relaxed);
    StorePathState(p.get());
  }
  Emit(Event{.type = EventType::kControllerStateChanged, .controller = c->name,
             .from = std::string(ControllerStateName(old)),
             .to = std::string(ControllerStateName(state)), .reason = std::string(reason)});
  if (relive && c->spec.ana_supported && c->backend) {
    ControllerBackend* b = c->backend;
    AfterUnlock([b] { b->RequestAnaLog(); });
  }
  // Waiting I/O is re-examined: a LIVE controller takes it, a dead one may fail it.
  for (Head* h : HeadsOf(*c)) KickHead(h);
  return absl::OkStatus();
}

absl::Status Multipath::RemoveController(absl::string_view name, absl::string_view reason) {
  Locked l(this);
  Controller* c = FindController(name);
  if (!c) return ControllerNotFoundError(name);
  const std::string why = reason.empty() ? "controller removed" : std::string(reason);
  c->state = ControllerState::kDead;
  // Workers adopt the snapshots without these paths first (inbox order): new I/O and
  // what comes back from the controller go to what remains.
  for (auto& p : c->paths) DetachPath(p.get(), why);
  c->paths.clear();
  Emit(Event{.type = EventType::kControllerRemoved, .controller = c->name, .reason = why});
  auto it = controllers_.find(name);
  std::unique_ptr<Controller> owned = std::move(it->second);
  controllers_.erase(it);
  Controller* raw = owned.get();
  raw->removing = true;
  retired_.push_back(std::move(owned));
  switch (raw->fence) {
    case Fence::kNone:
      StartQuiesce(raw);
      break;
    case Fence::kHandedBack:  // a reset's hand back is done: only the queue pairs go
      StartHandBack(raw);
      break;
    default:  // a fence under way ends with the queue pairs gone (removing)
      break;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Multipath::AddPath(const NamespaceSpec& ns) {
  if (ns.nsid == 0 || ns.nsid == 0xffffffff) {
    return absl::InvalidArgumentError(absl::StrCat("invalid NSID ", ns.nsid));
  }
  Locked l(this);
  if (shut_down_) return absl::FailedPreconditionError("the agent is shutting down");
  Controller* c = FindController(ns.controller);
  if (!c) return ControllerNotFoundError(ns.controller);
  for (const auto& p : c->paths) {
    if (p->nsid == ns.nsid) {
      return absl::AlreadyExistsError(absl::StrCat("controller ", c->name,
                                                   " already has a path to NSID ", ns.nsid));
    }
  }
  ASSIGN_OR_RETURN(Head* head, HeadForPath(ns, *c));
  AttachPath(ns, c, head);
  return head->name;
}

absl::StatusOr<Multipath::Head*> Multipath::HeadForPath(const NamespaceSpec& ns,
                                                        const Controller& c) {
  Head* head = nullptr;
  if (auto it = heads_by_namespace_.find(std::make_pair(c.spec.subsys_nqn, ns.nsid));
      it != heads_by_namespace_.end()) {
    head = it->second;
  }
  if (head && !(head->ids == ns.ids)) {
    // The kernel's "IDs don't match": never joins.
    return RejectPath(c, head->name,
                      absl::StrCat("namespace identifiers do not match head ", head->name,
                                   ": head has ", head->ids.ToString(), ", path has ",
                                   ns.ids.ToString()));
  }
  if (head) return head;
  const std::string name = HeadNameFor(c.spec.subsys_nqn, ns.nsid, ns.ids);
  if (FindHead(name)) {
    return RejectPath(c, name,
                      absl::StrCat("identifier ", name, " is already used by head ", name,
                                   " of another subsystem or NSID"));
  }
  return CreateHead(ns, c);
}

absl::Status Multipath::RejectPath(const Controller& c, std::string head,
                                   std::string why) {
  Emit(Event{.type = EventType::kPathRejected, .head = std::move(head), .path = c.name,
             .controller = c.name, .reason = why});
  return absl::FailedPreconditionError(why);
}

void Multipath::AttachPath(const NamespaceSpec& ns, Controller* c, Head* head) {
  auto p = std::make_unique<Path>();
  p->controller = c;
  p->nsid = ns.nsid;
  p->ana_group_id = ns.ana_group_id;
  // READY: capacity and format match the head (SEMANTICS "Objects").
  p->ready = ns.size_blocks == head->size_blocks && ns.block_size == head->block_size;
  // A head offers what all of its paths can do. An export already made keeps the limits
  // it was made with; a path that can do less than those still serves, and a command
  // it cannot take fails over to the others (or fails with the device's status).
  if (ns.max_transfer_bytes != 0 && (head->limits.max_transfer_bytes == 0 ||
                                     ns.max_transfer_bytes < head->limits.max_transfer_bytes)) {
    head->limits.max_transfer_bytes = ns.max_transfer_bytes;
  }
  head->limits.write_zeroes = head->limits.write_zeroes && ns.write_zeroes;
  head->limits.deallocate = head->limits.deallocate && ns.deallocate;
  head->limits.volatile_write_cache = head->limits.volatile_write_cache || ns.volatile_write_cache;
  if (c->spec.ana_supported) SetInitialAna(p.get(), *c);
  p->shared.state = std::make_shared<PathShared>();
  p->shared.controller = c->shared;
  p->shared.counters = std::shared_ptr<PathWorkerCounters[]>(
      new PathWorkerCounters[std::max<size_t>(options_.workers.size(), 1)]);
  p->shared.numa_node = c->spec.numa_node;
  p->shared.nsid = ns.nsid;
  Path* raw = p.get();
  c->paths.push_back(std::move(p));
  // Not its head's yet: the head's fast fail and no-path time are looked at once it is
  // in the head's list (below), not for an instant without it.
  StorePathState(raw);
  raw->head = head;
  head->paths.push_back(raw);
  Emit(Event{.type = EventType::kPathAdded, .head = head->name, .path = c->name,
             .controller = c->name, .to = AnaText(raw->Word())});
  UpdateFastFail(head);
  if (head->removal_deadline != 0) {
    head->removal_deadline = 0;
    head->lost_at = 0;
    Emit(Event{.type = EventType::kRemovalCancelled, .head = head->name, .path = c->name,
               .reason = "a path returned before the deadline"});
  }
  Publish(head);  // workers adopt it and resubmit what waits
}

void Multipath::SetInitialAna(Path* p, const Controller& c) {
  std::optional<nvme::AnaState> st;
  if (c.last_ana_log) {
    st = c.last_ana_log->StateOfNamespace(p->nsid);
    const nvme::AnaGroupDescriptor* g = c.last_ana_log->FindGroup(p->ana_group_id);
    if (!st && g != nullptr && g->nsids.empty()) st = g->state;  // an RGO log
  }
  if (st) {
    p->ana = *st;
  } else {
    p->ana_pending = true;  // until the controller's ANA log says
    if (ControllerBackend* b = c.backend) AfterUnlock([b] { b->RequestAnaLog(); });
  }
}

Multipath::Head* Multipath::CreateHead(const NamespaceSpec& ns, const Controller& c) {
  auto h = std::make_unique<Head>();
  h->name = HeadNameFor(c.spec.subsys_nqn, ns.nsid, ns.ids);
  h->uid = next_head_uid_++;
  h->subsys_nqn = c.spec.subsys_nqn;
  h->nsid = ns.nsid;
  h->ids = ns.ids;
  h->size_blocks = ns.size_blocks;
  h->block_size = ns.block_size;
  h->limits.max_transfer_bytes = ns.max_transfer_bytes;
  h->limits.write_zeroes = ns.write_zeroes;
  h->limits.deallocate = ns.deallocate;
  h->limits.volatile_write_cache = ns.volatile_write_cache;
  h->policy = default_policy_;
  h->delayed_removal_secs = default_delayed_removal_secs_;
  h->io_fail_timeout_secs = default_io_fail_timeout_secs_;
  std::string restored;
  if (options_.initial_settings) {
    if (std::optional<HeadSettings> saved = options_.initial_settings(h->name)) {
      if (saved->policy) {
        h->policy = *saved->policy;
        absl::StrAppend(&restored, " policy=", IoPolicyName(h->policy));
      }
      if (saved->delayed_removal_secs && ValidateDelayedRemovalSecs(*saved->delayed_removal_secs).ok()) {
        h->delayed_removal_secs = *saved->delayed_removal_secs;
        absl::StrAppend(&restored, " delayed_removal_secs=", h->delayed_removal_secs);
      }
      if (saved->io_fail_timeout_secs && ValidateIoFailTimeoutSecs(*saved->io_fail_timeout_secs).ok()) {
        h->io_fail_timeout_secs = *saved->io_fail_timeout_secs;
        absl::StrAppend(&restored, " io_fail_timeout_secs=", h->io_fail_timeout_secs);
      }
      if (saved->volume && ValidateVolume(*saved->volume).ok()) h->volume = *saved->volume;
    }
  }
  h->created_wall = options_.clock->WallNanos();
  h->shared = std::make_shared<HeadShared>();
  h->shared->queue_if_no_path.store(h->delayed_removal_secs > 0);
  h->shared->waiting = std::make_unique<std::atomic<uint32_t>[]>(
      std::max<size_t>(options_.workers.size(), 1));
  // Made here, with the head, so no I/O allocates them.
  h->shared->counters = std::make_unique<HeadWorkerCounters[]>(std::max<size_t>(options_.workers.size(), 1));
  h->shared->block_size = h->block_size;
  Emit(Event{.type = EventType::kHeadCreated, .head = h->name,
             .reason = absl::StrCat("subsystem ", h->subsys_nqn, " nsid ", h->nsid,
                                    restored.empty() ? "" : "; restored", restored)});
  heads_by_name_[h->name] = h.get();
  heads_by_namespace_[std::make_pair(h->subsys_nqn, h->nsid)] = h.get();
  heads_.push_back(std::move(h));
  return heads_.back().get();
}

absl::Status Multipath::RemovePath(absl::string_view controller, uint32_t nsid,
                                   absl::string_view reason) {
  Locked l(this);
  Controller* c = FindController(controller);
  if (!c) return ControllerNotFoundError(controller);
  auto it = std::find_if(c->paths.begin(), c->paths.end(),
                         [nsid](const auto& p) { return p->nsid == nsid; });
  if (it == c->paths.end()) {
    return absl::NotFoundError(
        absl::StrCat("controller ", controller, " has no path to NSID ", nsid));
  }
  DetachPath(it->get(), reason.empty() ? "namespace removed" : reason);
  c->paths.erase(it);
  return absl::OkStatus();
}

void Multipath::DetachPath(Path* p, absl::string_view reason) {
  Head* h = p->head;
  // Workers holding an older snapshot must not choose it any more.
  PathStateWord w = p->Word();
  w.controller = ControllerState::kDead;
  p->shared.state->Store(w);
  if (!h) return;
  h->paths.erase(std::remove(h->paths.begin(), h->paths.end(), p), h->paths.end());
  p->head = nullptr;
  UpdateFastFail(h);
  Emit(Event{.type = EventType::kPathRemoved, .head = h->name, .path = p->controller->name,
             .controller = p->controller->name, .reason = std::string(reason)});
  if (h->paths.empty() && h->removal_deadline == 0 && h->delayed_removal_secs == 0) {
    // Removed at once: no empty snapshot first, or waiting I/O would fail as "no
    // path" before the head's removal fails it as "head removed".
    RemoveHead(h, "last path removed and delayed_removal_secs is 0", IoError::kHeadRemoved);
    return;
  }
  Publish(h);
  if (h->paths.empty()) OnLastPathGone(h);
}

// SEMANTICS "Delayed removal": one removal per outage, armed at most once.
void Multipath::OnLastPathGone(Head* h) {
  if (h->removal_deadline != 0) return;
  if (h->delayed_removal_secs == 0) {
    RemoveHead(h, "last path removed and delayed_removal_secs is 0", IoError::kHeadRemoved);
    return;
  }
  const int64_t now = options_.clock->MonotonicNanos();
  h->lost_at = now;
  h->removal_deadline = now + int64_t{h->delayed_removal_secs} * kNanosPerSecond;
  Emit(Event{.type = EventType::kRemovalScheduled, .head = h->name,
             .reason = absl::StrCat("last path removed; waiting ", h->delayed_removal_secs,
                                    " s for a path to return"),
             .deadline_wall_nanos = ToWall(h->removal_deadline)});
  WakeTimer();
}

void Multipath::AccountNoPath(Head* h, bool selectable) {
  if (selectable == (h->no_path_since == 0)) return;
  const int64_t now = options_.clock->MonotonicNanos();
  if (selectable) {
    h->no_path_nanos += now - h->no_path_since;
    h->no_path_since = 0;
  } else {
    h->no_path_since = now;
  }
}

void Multipath::UpdateFastFail(Head* h) {
  const bool usable = std::any_of(h->paths.begin(), h->paths.end(),
                                  [](const Path* p) { return p->Word().selectable(); });
  AccountNoPath(h, usable);
  if (usable) {
    h->unusable_since = 0;
    h->fast_fail_deadline = 0;
    if (h->shared->fail_fast.exchange(false, std::memory_order_acq_rel)) {
      Emit(Event{.type = EventType::kFastFailEnded, .head = h->name,
                 .reason = "a path is usable again"});
    }
    return;
  }
  if (h->shared->fail_fast.load(std::memory_order_relaxed)) return;
  if (h->unusable_since == 0) h->unusable_since = options_.clock->MonotonicNanos();
  const int64_t deadline =
      h->io_fail_timeout_secs == 0 ? 0 : h->unusable_since + int64_t{h->io_fail_timeout_secs} * kNanosPerSecond;
  if (deadline != h->fast_fail_deadline) {
    h->fast_fail_deadline = deadline;
    if (deadline != 0) WakeTimer();
  }
}

void Multipath::StartFastFail(Head* h) {
  h->fast_fail_deadline = 0;
  h->shared->fail_fast.store(true, std::memory_order_release);
  Emit(Event{.type = EventType::kFastFailStarted, .head = h->name,
             .reason = absl::StrCat("no usable path for io_fail_timeout_secs (", h->io_fail_timeout_secs,
                                    " s): waiting I/O fails, and new I/O until a path is usable")});
  for (Worker* w : options_.workers) {
    w->Post([w, uid = h->uid] { w->FailWaitingFast(uid); });
  }
}

void Multipath::RemoveHead(Head* h, std::string reason, IoError why) {
  Emit(Event{.type = EventType::kHeadRemoved, .head = h->name, .reason = std::move(reason)});
  h->shared->removed_with.store(static_cast<uint8_t>(why), std::memory_order_release);
  for (Path* p : h->paths) p->head = nullptr;
  for (Worker* w : options_.workers) {
    w->Post([w, uid = h->uid, why] { w->DropHead(uid, why); });
  }
  heads_by_name_.erase(h->name);
  heads_by_namespace_.erase(std::make_pair(h->subsys_nqn, h->nsid));
  heads_.erase(std::find_if(heads_.begin(), heads_.end(),
                            [h](const auto& x) { return x.get() == h; }));
}

void Multipath::Publish(Head* h) {
  auto snap = std::make_shared<HeadSnapshot>();
  snap->head_uid = h->uid;
  snap->generation = ++h->generation;
  snap->policy = h->policy;
  snap->head = h->shared;
  for (Path* p : h->paths) snap->paths.push_back(p->shared);
  std::shared_ptr<const HeadSnapshot> frozen = std::move(snap);
  for (Worker* w : options_.workers) {
    w->Post([w, frozen] { w->AdoptSnapshot(frozen); });
  }
}

void Multipath::KickHead(Head* h) {
  for (Worker* w : options_.workers) {
    w->Post([w, uid = h->uid] { w->KickHead(uid); });
  }
}

void Multipath::StorePathState(Path* p, bool clear_ana_pending) {
  std::atomic<uint32_t>& word = p->shared.state->state;
  uint32_t old = word.load(std::memory_order_acquire);
  for (;;) {
    // A worker may have set ANA_PENDING since; keep it until an ANA log clears it.
    if (!clear_ana_pending && (old & kAnaPendingBit)) p->ana_pending = true;
    if (clear_ana_pending) p->ana_pending = false;
    if (word.compare_exchange_weak(old, p->Word().Pack(), std::memory_order_acq_rel)) break;
  }
  if (p->head) UpdateFastFail(p->head);
}

std::vector<Multipath::Head*> Multipath::HeadsOf(const Controller& c) const {
  std::vector<Head*> out;
  for (const auto& p : c.paths) {
    if (p->head && std::find(out.begin(), out.end(), p->head) == out.end()) {
      out.push_back(p->head);
    }
  }
  return out;
}

// --- ANA. ---

absl::Status Multipath::OnAnaLog(absl::string_view controller, absl::Span<const uint8_t> log) {
  Locked l(this);
  Controller* c = FindController(controller);
  if (!c) return ControllerNotFoundError(controller);
  if (!c->spec.ana_supported) {
    return absl::FailedPreconditionError(
        absl::StrCat("controller ", controller, " does not report ANA"));
  }
  absl::StatusOr<nvme::AnaLog> parsed = nvme::ParseAnaLog(log, c->spec.anagrpmax);
  if (!parsed.ok()) {
    // Rejected whole: no path state changes.
    Emit(Event{.type = EventType::kAnaLogRejected, .controller = c->name,
               .reason = std::string(parsed.status().message())});
    return parsed.status();
  }
  ApplyAnaLog(c, *parsed);
  return absl::OkStatus();
}

void Multipath::ApplyAnaLog(Controller* c, const nvme::AnaLog& log) {
  bool changed = false;
  for (auto& p : c->paths) {
    const PathStateWord before = PathStateWord::Unpack(p->shared.state->state.load());
    bool listed = false;
    for (const auto& g : log.groups) {
      if (std::binary_search(g.nsids.begin(), g.nsids.end(), p->nsid)) {
        p->ana = g.state;
        p->ana_group_id = g.group_id;
        listed = true;
      }
    }
    // A log read with RGO (groups only) lists no NSIDs: the namespace's group, from
    // Identify Namespace ANAGRPID, gives its state.
    if (const nvme::AnaGroupDescriptor* g = log.FindGroup(p->ana_group_id);
        !listed && g != nullptr && g->nsids.empty()) {
      p->ana = g->state;
    }
    // A namespace the log does not list keeps its state, but the read it waited for
    // has happened.
    StorePathState(p.get(), /*clear_ana_pending=*/true);
    const PathStateWord after = p->Word();
    changed |= before.Pack() != after.Pack();
    if (before.Pack() != after.Pack() && p->head) {
      Emit(Event{.type = EventType::kPathStateChanged, .head = p->head->name,
                 .path = c->name, .controller = c->name, .from = AnaText(before),
                 .to = AnaText(after), .reason = "ANA log"});
    }
  }
  const bool change = std::any_of(log.groups.begin(), log.groups.end(), [](const auto& g) {
    return g.state == nvme::AnaState::kChange;
  });
  if (change && c->anatt_deadline == 0) {
    // SEMANTICS "ANA": a group in CHANGE for 2 x ANATT resets the controller.
    c->anatt_deadline = options_.clock->MonotonicNanos() +
                        2 * int64_t{std::max<uint8_t>(c->spec.anatt_secs, 1)} * kNanosPerSecond;
    WakeTimer();
  } else if (!change) {
    c->anatt_deadline = 0;
  }
  c->last_ana_log = log;
  // Waiting I/O is looked at again only if a path may have become selectable: a log
  // that changes nothing (a backend that polls reads many) wakes no worker.
  if (changed) {
    for (Head* h : HeadsOf(*c)) KickHead(h);
  }
}

// --- Helpers. ---

Multipath::Controller* Multipath::FindController(absl::string_view name) {
  auto it = controllers_.find(name);
  return it == controllers_.end() ? nullptr : it->second.get();
}

Multipath::Head* Multipath::FindHead(absl::string_view name) const {
  auto it = heads_by_name_.find(name);
  return it == heads_by_name_.end() ? nullptr : it->second;
}

Multipath::Path* Multipath::FindHeadPath(Head* h, absl::string_view path) {
  for (Path* p : h->paths) {
    if (p->controller->name == path) return p;
  }
  return nullptr;
}

int64_t Multipath::ToWall(int64_t mono) const {
  return mono - options_.clock->MonotonicNanos() + options_.clock->WallNanos();
}

void Multipath::Emit(Event e) { journal_.Append(std::move(e)); }

}  // namespace umpath
