// The control API of Multipath: settings, queries and the watch. Topology, ANA and
// delayed removal are in multipath.cc.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "agent/base/error_reason.h"
#include "agent/base/status_macros.h"
#include "agent/core/multipath.h"
#include "agent/core/multipath_internal.h"

namespace umpath {

NamespaceSpec PathSpecFromIdentify(std::string controller, uint32_t nsid,
                                   const nvme::NamespaceIdentity& ns,
                                   const std::optional<nvme::NamespaceIds>& descriptors,
                                   const nvme::ControllerIdentity& ctrl,
                                   uint32_t max_transfer_bytes) {
  NamespaceSpec spec;
  spec.controller = std::move(controller);
  spec.nsid = nsid;
  spec.ids = ns.ids;
  if (descriptors) {
    if (descriptors->nguid) spec.ids.nguid = descriptors->nguid;
    if (descriptors->eui64) spec.ids.eui64 = descriptors->eui64;
    if (descriptors->uuid) spec.ids.uuid = descriptors->uuid;
  }
  spec.ana_group_id = ns.ana_group_id;
  spec.size_blocks = ns.size_blocks;
  spec.block_size = ns.block_size;
  spec.max_transfer_bytes = max_transfer_bytes;
  spec.write_zeroes = (ctrl.oncs & (1u << 3)) != 0;
  spec.deallocate = (ctrl.oncs & (1u << 2)) != 0;
  spec.volatile_write_cache = ctrl.volatile_write_cache;
  return spec;
}

// --- Control API. ---

absl::Status Multipath::SetDelayedRemoval(absl::string_view name, int64_t secs,
                                          std::optional<HeadInfo>* removed) {
  RETURN_IF_ERROR(ValidateDelayedRemovalSecs(secs));
  Locked l(this);
  Head* h = FindHead(name);
  if (!h) return HeadNotFoundError(name);
  if (h->delayed_removal_secs == secs) return absl::OkStatus();
  const uint32_t old = h->delayed_removal_secs;
  h->delayed_removal_secs = static_cast<uint32_t>(secs);
  h->shared->queue_if_no_path.store(secs > 0, std::memory_order_release);
  Emit(Event{.type = EventType::kDelayedRemovalChanged, .head = h->name,
             .from = absl::StrCat(old), .to = absl::StrCat(secs)});
  if (h->removal_deadline != 0) {
    // umpath (the kernel leaves its timer alone): the deadline follows the value.
    const int64_t now = options_.clock->MonotonicNanos();
    const int64_t deadline = h->lost_at + secs * kNanosPerSecond;
    if (secs == 0 || deadline <= now) {
      if (removed != nullptr) {
        *removed = DescribeHead(*h);
        (*removed)->removal_pending = false;
        (*removed)->removal_deadline_wall_nanos = 0;
      }
      RemoveHead(h,
                 absl::StrCat("delayed_removal_secs changed to ", secs,
                              " during a pending removal; its deadline has passed"),
                 IoError::kHeadRemoved);
      return absl::OkStatus();
    }
    h->removal_deadline = deadline;
    Emit(Event{.type = EventType::kRemovalRescheduled, .head = h->name,
               .from = absl::StrCat(old), .to = absl::StrCat(secs),
               .reason = "delayed_removal_secs changed",
               .deadline_wall_nanos = ToWall(deadline)});
    WakeTimer();
  }
  KickHead(h);  // waiting I/O is re-examined under the new value
  return absl::OkStatus();
}

absl::Status Multipath::SetDefaultDelayedRemoval(int64_t secs) {
  RETURN_IF_ERROR(ValidateDelayedRemovalSecs(secs));
  Locked l(this);
  if (default_delayed_removal_secs_ == secs) return absl::OkStatus();
  Emit(Event{.type = EventType::kDefaultsChanged,
             .from = absl::StrCat("delayed_removal_secs=", default_delayed_removal_secs_),
             .to = absl::StrCat("delayed_removal_secs=", secs)});
  default_delayed_removal_secs_ = static_cast<uint32_t>(secs);
  return absl::OkStatus();
}

absl::Status Multipath::SetIoFailTimeout(absl::string_view name, int64_t secs) {
  RETURN_IF_ERROR(ValidateIoFailTimeoutSecs(secs));
  Locked l(this);
  Head* h = FindHead(name);
  if (!h) return HeadNotFoundError(name);
  if (h->io_fail_timeout_secs == secs) return absl::OkStatus();
  const uint32_t old = h->io_fail_timeout_secs;
  h->io_fail_timeout_secs = static_cast<uint32_t>(secs);
  Emit(Event{.type = EventType::kIoFailTimeoutChanged, .head = h->name,
             .from = absl::StrCat(old), .to = absl::StrCat(secs)});
  // 0: no limit of its own any more; a fast fail under way ends (I/O waits again).
  if (secs == 0 && h->shared->fail_fast.exchange(false, std::memory_order_acq_rel)) {
    Emit(Event{.type = EventType::kFastFailEnded, .head = h->name,
               .reason = "io_fail_timeout_secs set to 0"});
  }
  // An outage under way: the deadline follows the value (lost-at + new value; one
  // already passed fails at the timer's next turn).
  UpdateFastFail(h);
  return absl::OkStatus();
}

absl::Status Multipath::SetDefaultIoFailTimeout(int64_t secs) {
  RETURN_IF_ERROR(ValidateIoFailTimeoutSecs(secs));
  Locked l(this);
  if (default_io_fail_timeout_secs_ == secs) return absl::OkStatus();
  Emit(Event{.type = EventType::kDefaultsChanged,
             .from = absl::StrCat("io_fail_timeout_secs=", default_io_fail_timeout_secs_),
             .to = absl::StrCat("io_fail_timeout_secs=", secs)});
  default_io_fail_timeout_secs_ = static_cast<uint32_t>(secs);
  return absl::OkStatus();
}

absl::Status Multipath::SetPolicy(absl::string_view name, absl::string_view policy) {
  ASSIGN_OR_RETURN(IoPolicy p, ParseIoPolicy(policy));
  Locked l(this);
  Head* h = FindHead(name);
  if (!h) return HeadNotFoundError(name);
  if (h->policy == p) return absl::OkStatus();
  Emit(Event{.type = EventType::kPolicyChanged, .head = h->name,
             .from = std::string(IoPolicyName(h->policy)), .to = std::string(IoPolicyName(p))});
  h->policy = p;
  Publish(h);  // clears every cached path and resubmits what waits
  return absl::OkStatus();
}

absl::Status Multipath::SetDefaultPolicy(absl::string_view policy) {
  ASSIGN_OR_RETURN(IoPolicy p, ParseIoPolicy(policy));
  Locked l(this);
  if (default_policy_ == p) return absl::OkStatus();
  Emit(Event{.type = EventType::kDefaultsChanged,
             .from = absl::StrCat("policy=", IoPolicyName(default_policy_)),
             .to = absl::StrCat("policy=", IoPolicyName(p))});
  default_policy_ = p;
  return absl::OkStatus();
}

absl::Status Multipath::FailPath(absl::string_view head, absl::string_view path,
                                 absl::string_view reason) {
  Locked l(this);
  Head* h = FindHead(head);
  if (!h) return HeadNotFoundError(head);
  Path* p = FindHeadPath(h, path);
  if (!p) return PathNotFoundError(head, path);
  if (p->admin_failed) return absl::OkStatus();
  const PathStateWord before = p->Word();
  p->admin_failed = true;
  p->fail_reason = reason.empty() ? "failed by an administrator" : std::string(reason);
  StorePathState(p);
  Emit(Event{.type = EventType::kPathStateChanged, .head = h->name, .path = p->controller->name,
             .controller = p->controller->name, .from = AnaText(before),
             .to = AnaText(p->Word()), .reason = p->fail_reason});
  KickHead(h);
  return absl::OkStatus();
}

absl::Status Multipath::ReinstatePath(absl::string_view head, absl::string_view path) {
  Locked l(this);
  Head* h = FindHead(head);
  if (!h) return HeadNotFoundError(head);
  Path* p = FindHeadPath(h, path);
  if (!p) return PathNotFoundError(head, path);
  if (!p->admin_failed) return absl::OkStatus();
  const PathStateWord before = p->Word();
  p->admin_failed = false;
  p->fail_reason.clear();
  StorePathState(p);
  Emit(Event{.type = EventType::kPathStateChanged, .head = h->name, .path = p->controller->name,
             .controller = p->controller->name, .from = AnaText(before),
             .to = AnaText(p->Word()), .reason = "reinstated"});
  KickHead(h);
  return absl::OkStatus();
}

absl::Status Multipath::SetHeadExport(absl::string_view head, uint64_t uid,
                                      absl::string_view device, absl::string_view reason,
                                      const BlockDeviceIds& ids) {
  Locked l(this);
  Head* h = FindHead(head);
  if (!h || h->uid != uid) {
    if (device.empty() && !shut_down_) {
      // The head went first (its delayed removal expired): the device's end is still news.
      Emit(Event{.type = EventType::kHeadUnexported, .head = std::string(head),
                 .reason = std::string(reason)});
      return absl::OkStatus();
    }
    return HeadNotFoundError(head);
  }
  h->export_ids = device.empty() ? BlockDeviceIds{} : ids;
  if (h->export_device == device) return absl::OkStatus();
  const std::string before = h->export_device;
  h->export_device = std::string(device);
  Emit(Event{.type = device.empty() ? EventType::kHeadUnexported : EventType::kHeadExported,
             .head = h->name, .from = before, .to = h->export_device,
             .reason = std::string(reason)});
  return absl::OkStatus();
}

absl::Status Multipath::SetVolume(absl::string_view head, absl::string_view volume) {
  RETURN_IF_ERROR(ValidateVolume(volume));
  Locked l(this);
  Head* h = FindHead(head);
  if (!h) return HeadNotFoundError(head);
  h->volume = std::string(volume);
  return absl::OkStatus();
}

std::vector<HeadInfo> Multipath::ListHeads() const {
  MutexLock lock(&mu_);
  std::vector<HeadInfo> out;
  for (const auto& h : heads_) out.push_back(DescribeHead(*h));
  std::sort(out.begin(), out.end(),
            [](const HeadInfo& a, const HeadInfo& b) { return a.name < b.name; });
  return out;
}

std::vector<HeadInfo> Multipath::ListHeadsPage(absl::string_view after, size_t limit,
                                               const std::function<bool(const HeadInfo&)>& keep,
                                               bool* more) const {
  MutexLock lock(&mu_);
  std::vector<const Head*> next;
  next.reserve(heads_.size());
  for (const auto& h : heads_) {
    if (h->name > after) next.push_back(h.get());
  }
  std::sort(next.begin(), next.end(), [](const Head* a, const Head* b) { return a->name < b->name; });
  std::vector<HeadInfo> out;
  *more = false;
  for (const Head* h : next) {
    HeadInfo info = DescribeHead(*h);
    if (!keep(info)) continue;
    if (out.size() == limit) {
      *more = true;
      break;
    }
    out.push_back(std::move(info));
  }
  return out;
}

absl::StatusOr<HeadInfo> Multipath::GetHead(absl::string_view name) const {
  MutexLock lock(&mu_);
  const Head* h = FindHead(name);
  if (!h) return HeadNotFoundError(name);
  return DescribeHead(*h);
}

std::vector<ControllerInfo> Multipath::ListControllers() const {
  MutexLock lock(&mu_);
  std::vector<ControllerInfo> out;
  for (const auto& [name, c] : controllers_) out.push_back(DescribeController(*c));
  std::sort(out.begin(), out.end(),
            [](const ControllerInfo& a, const ControllerInfo& b) { return a.name < b.name; });
  return out;
}

absl::StatusOr<ControllerInfo> Multipath::GetController(absl::string_view name) const {
  MutexLock lock(&mu_);
  auto it = controllers_.find(name);
  if (it == controllers_.end()) {
    return ControllerNotFoundError(name);
  }
  return DescribeController(*it->second);
}

Defaults Multipath::GetDefaults() const {
  MutexLock lock(&mu_);
  return Defaults{default_policy_, default_delayed_removal_secs_, default_io_fail_timeout_secs_};
}

absl::StatusOr<Multipath::WatchStart> Multipath::WatchState(size_t queue_limit,
                                                            std::function<void()> notify) {
  MutexLock lock(&mu_);
  // Every Append happens under mu_, so nothing slips between the state and the stream.
  WatchStart start;
  start.revision = journal_.current_revision();
  for (const auto& h : heads_) start.heads.push_back(DescribeHead(*h));
  for (const auto& [name, c] : controllers_) start.controllers.push_back(DescribeController(*c));
  ASSIGN_OR_RETURN(start.subscription,
                   journal_.Subscribe(start.revision, queue_limit, std::move(notify)));
  return start;
}

HeadInfo Multipath::DescribeHead(const Head& h) const {
  HeadInfo info;
  info.name = h.name;
  info.uid = h.uid;
  info.subsys_nqn = h.subsys_nqn;
  info.nsid = h.nsid;
  if (h.ids.nguid) info.nguid = nvme::HexString(*h.ids.nguid);
  if (h.ids.eui64) info.eui64 = nvme::HexString(*h.ids.eui64);
  if (h.ids.uuid) info.uuid = nvme::UuidString(*h.ids.uuid);
  info.size_blocks = h.size_blocks;
  info.block_size = h.block_size;
  info.limits = h.limits;
  info.export_device = h.export_device;
  info.export_ids = h.export_ids;
  info.volume = h.volume;
  info.policy = h.policy;
  info.delayed_removal_secs = h.delayed_removal_secs;
  info.io_fail_timeout_secs = h.io_fail_timeout_secs;
  info.failing_fast = h.shared->fail_fast.load(std::memory_order_acquire);
  info.removal_pending = h.removal_deadline != 0;
  info.removal_deadline_wall_nanos = h.removal_deadline ? ToWall(h.removal_deadline) : 0;
  info.created_wall_nanos = h.created_wall;
  const size_t workers = options_.workers.size();
  for (size_t w = 0; w < workers; ++w) {
    info.waiting_ios += h.shared->waiting[w].load(std::memory_order_relaxed);
    info.io.AddWorker(h.shared->counters[w]);
  }
  info.no_path_nanos = h.no_path_nanos;
  if (h.no_path_since != 0) info.no_path_nanos += options_.clock->MonotonicNanos() - h.no_path_since;
  for (const Path* p : h.paths) {
    const PathStateWord s = p->shared.state->Load();
    PathInfo pi;
    pi.name = p->controller->name;
    pi.head = h.name;
    pi.controller = p->controller->name;
    pi.controller_state = s.controller;
    pi.nsid = p->nsid;
    pi.ana_group_id = p->ana_group_id;
    pi.ana_state = s.ana;
    pi.ana_pending = s.ana_pending;
    pi.ready = s.ready;
    pi.admin_failed = s.admin_failed;
    pi.usable = s.usable();
    pi.selectable = s.selectable();
    pi.numa_node = p->shared.numa_node;
    for (size_t w = 0; w < workers; ++w) {
      const PathWorkerCounters& c = p->shared.counters[w];
      pi.counters.submitted += c.submitted.load(std::memory_order_relaxed);
      pi.counters.completed += c.completed.load(std::memory_order_relaxed);
      pi.counters.errors += c.errors.load(std::memory_order_relaxed);
      pi.counters.failovers += c.failovers.load(std::memory_order_relaxed);
      pi.counters.retries += c.retries.load(std::memory_order_relaxed);
      pi.counters.bytes += c.bytes.load(std::memory_order_relaxed);
      pi.counters.in_flight += c.in_flight.load(std::memory_order_relaxed);
      const uint64_t fast = c.latency_le_1ms.load(std::memory_order_relaxed);
      pi.counters.latency_le_1ms += fast;
      pi.counters.latency_le_10ms += fast + c.latency_le_10ms.load(std::memory_order_relaxed);
      pi.counters.latency_ns_sum += c.latency_ns_sum.load(std::memory_order_relaxed);
      if (const uint16_t e = c.last_error_status.load(std::memory_order_relaxed); e != 0) {
        pi.counters.last_error_status = e;
      }
    }
    info.live_paths += s.controller == ControllerState::kLive;
    info.selectable_paths += s.selectable();
    info.paths.push_back(std::move(pi));
  }
  return info;
}

ControllerInfo Multipath::DescribeController(const Controller& c) const {
  ControllerInfo info;
  info.name = c.name;
  info.subsys_nqn = c.spec.subsys_nqn;
  info.transport = c.spec.transport;
  info.address = c.spec.address;
  info.state = c.state;
  info.numa_node = c.spec.numa_node;
  info.ana_supported = c.spec.ana_supported;
  info.anagrpmax = c.spec.anagrpmax;
  info.anatt_secs = c.spec.anatt_secs;
  info.anatt_timer_armed = c.anatt_deadline != 0;
  info.cqt_ms = c.spec.cqt_ms;
  info.fenced_ios = c.fenced_ios;
  for (const QueuePair* qp : c.qps) info.stray_completions += qp->stray_completions();
  for (const Head* h : HeadsOf(c)) info.heads.push_back(h->name);
  return info;
}


}  // namespace umpath
