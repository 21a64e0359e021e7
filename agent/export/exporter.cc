#include "agent/export/exporter.h"

#include <signal.h>
#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "agent/base/error_reason.h"
#include "agent/export/exporter_internal.h"

namespace umpath::ublk {

namespace fs = std::filesystem;
using exporter_internal::InUse;
using exporter_internal::kStopping;

namespace {

// While a device left by an earlier run waits for its head, or export-all could not
// export a head, the exporter looks again this often (the core's events wake it too).
constexpr int64_t kRetryNanos = kNanosPerSecond;

absl::Status CheckOptions(const ExporterOptions& options) {
  if (options.workers.empty()) return absl::InvalidArgumentError("ublk: no workers");
  if (options.queue_depth < 1 || options.queue_depth > kMaxQueueDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat("ublk queue depth ", options.queue_depth, " is outside 1..", kMaxQueueDepth));
  }
  if (options.max_io_bytes < 4096 || options.max_io_bytes % 4096 != 0 ||
      options.max_io_bytes > (1u << 20)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ublk largest I/O ", options.max_io_bytes, " bytes: must be 4 KiB..1 MiB, in 4 KiB steps"));
  }
  const uint64_t least = uint64_t{options.max_io_bytes} * options.workers.size();
  if (options.max_pinned_bytes < least) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the I/O buffers' budget of ", options.max_pinned_bytes >> 10, " KiB holds no device: one takes a ",
        options.max_io_bytes >> 10, " KiB buffer on each of ", options.workers.size(),
        " workers; --max_pinned_mib must be at least ", (least + (1 << 20) - 1) >> 20));
  }
  return absl::OkStatus();
}

}  // namespace


absl::StatusOr<std::unique_ptr<Exporter>> Exporter::Create(Multipath* mp, ControlPlane* plane,
                                                           ExporterOptions options) {
  if (absl::Status s = CheckOptions(options); !s.ok()) return s;
  KernelUblkOptions ko;
  ko.control_path = options.control_path;
  ko.workers = options.workers;
  ko.alloc = options.alloc;
  ko.buffer_bytes = options.max_io_bytes;
  ko.max_pinned_bytes = options.max_pinned_bytes;
  ko.log = options.log;
  absl::StatusOr<std::unique_ptr<UblkDriver>> driver = OpenKernelUblk(std::move(ko));
  if (!driver.ok()) return driver.status();
  return CreateWithDriver(mp, plane, std::move(options), std::move(*driver));
}

absl::StatusOr<std::unique_ptr<Exporter>> Exporter::CreateWithDriver(
    Multipath* mp, ControlPlane* plane, ExporterOptions options, std::unique_ptr<UblkDriver> driver) {
  if (absl::Status s = CheckOptions(options); !s.ok()) return s;
  std::error_code ec;
  fs::create_directories(options.state_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("ublk state directory ", options.state_dir, ": ", ec.message()));
  }
  auto e = std::unique_ptr<Exporter>(new Exporter(mp, plane, std::move(options), std::move(driver)));
  e->FindLeftovers();
  return e;
}

Exporter::Exporter(Multipath* mp, ControlPlane* plane, ExporterOptions options,
                   std::unique_ptr<UblkDriver> driver)
    : mp_(mp),
      plane_(plane),
      options_(std::move(options)),
      driver_(std::move(driver)),
      links_(options_.by_id_dir, options_.log) {
  const uint64_t features = driver_->Features();
  recovery_ = options_.user_recovery && (features & kFlagUserRecovery) &&
              (features & kFlagUserRecoveryReissue);
  pooled_ = (features & kFlagNeedGetData) != 0;
  quiesce_ = recovery_ && options_.quiesce && (features & kFlagQuiesce) != 0;
  const PinnedMemory pm = driver_->Pinned();
  Log(absl::StrCat(
      "ublk: features 0x", absl::Hex(features), "; user recovery ",
      recovery_ ? "on" : (options_.user_recovery ? "not offered by this kernel" : "off"),
      recovery_ ? (quiesce_ ? ", hand-over by quiesce" : ", hand-over by holding") : "",
      pooled_ ? absl::StrCat("; I/O buffers pooled, at most ", pm.budget_bytes >> 20,
                             " MiB (", pm.heads_left, " heads)")
              : "; I/O buffers per tag (the kernel does not offer NEED_GET_DATA)"));
  if (utsname u; uname(&u) == 0 && HasUblkCancelRace(u.release)) {
    Log(absl::StrCat("ublk: warning: Linux ", u.release,
                     " has the ublk race of CVE-2025-37906 (fixed in 6.15, 6.14.6 and 6.12.114): "
                     "if this agent is killed (kill -9, an OOM kill) or hands its devices over "
                     "while they have I/O, the kernel may oops; use Linux 6.15 or later"));
  }
}

Exporter::~Exporter() {
  if (sub_) sub_->Close();
}

void Exporter::Log(const std::string& line) const {
  if (options_.log) options_.log(line);
}

// ---- Following the core. ----

void Exporter::Start() {
  plane_->Post([this] {
    if (shut_down_) return;
    following_ = true;
    Subscribe();
    Reconcile();
  });
}

void Exporter::Subscribe() {
  if (sub_) sub_->Close();
  // Only a wake-up: what changed is read from the core itself. The flag keeps a burst
  // of events to one task.
  absl::StatusOr<std::shared_ptr<EventSubscription>> s = mp_->journal().Subscribe(
      mp_->journal().current_revision(), 1 << 14, [this] {
        if (!wake_posted_.exchange(true)) plane_->Post([this] { OnCoreChanged(); });
      });
  sub_ = s.ok() ? *s : nullptr;
}

void Exporter::OnCoreChanged() {
  wake_posted_.store(false);
  if (!following_ || !sub_) return;
  if (!sub_->Take(1 << 14).ok()) Subscribe();  // fell behind: the core is read whole anyway
  Reconcile();
}

void Exporter::StopFollowing() {
  following_ = false;
  plan_.clear();
  if (retry_timer_ != 0) plane_->Cancel(retry_timer_);
  retry_timer_ = 0;
  if (sub_) sub_->Close();
}

void Exporter::Reconcile() {
  dirty_ = true;
  if (!busy_) Next();
}

// The lane is free: API calls first, then the plan, then a new plan if the core
// changed meanwhile. Each step either answers at once or takes the lane (busy_).
void Exporter::Next() {
  while (!busy_) {
    if (!calls_.empty()) {
      ControlPlane::Task call = std::move(calls_.front());
      calls_.pop_front();
      std::move(call)();
    } else if (!plan_.empty()) {
      const Action a = plan_.front();
      plan_.pop_front();
      StartAction(a);
    } else if (dirty_ && following_ && !shut_down_) {
      dirty_ = false;
      plan_ = Plan();
    } else {
      ArmRetry();
      return;
    }
  }
}

void Exporter::Enqueue(ControlPlane::Task call) {
  calls_.push_back(std::move(call));
  if (!busy_) Next();
}

void Exporter::Offload(absl::AnyInvocable<Then() &&> work) {
  busy_ = true;
  (void)plane_->Offload([this, work = std::move(work)]() mutable -> Then {
    Then then = std::move(work)();
    return [this, then = std::move(then)]() mutable {
      std::move(then)();
      busy_ = false;
      Next();
    };
  });
  // When the plane has stopped the lane stays taken: Shutdown cleans up what it held.
}

void Exporter::ArmRetry() {
  if (!following_ || shut_down_ || retry_timer_ != 0) return;
  if (leftovers_.empty() && export_all_failed_.empty()) return;
  retry_timer_ = plane_->After(kRetryNanos, [this] {
    retry_timer_ = 0;
    Reconcile();
  });
}

std::deque<Exporter::Action> Exporter::Plan() {
  std::deque<Action> plan;
  // Devices whose head went away (delayed removal expired, or removed at once).
  for (const auto& [name, d] : devices_) {
    absl::StatusOr<HeadInfo> h = mp_->GetHead(name);
    if (!h.ok() || h->uid != d->head_uid) plan.push_back({Action::kTeardown, name});
  }
  // Devices an earlier run left: taken over once their head is back, removed when it
  // did not come in time.
  for (const Leftover& lo : leftovers_) {
    if (Now() >= lo.deadline) {
      plan.push_back({Action::kRemoveLeftover, lo.head});
    } else if (mp_->GetHead(lo.head).ok() && !devices_.contains(lo.head)) {
      plan.push_back({Action::kRecover, lo.head});
    }
  }
  if (options_.export_all) {
    for (const HeadInfo& h : mp_->ListHeads()) {
      if (NeedsAutoExport(h)) plan.push_back({Action::kExportAll, h.name});
    }
  } else if (options_.exports_wanted) {
    for (const std::string& name : options_.exports_wanted()) {
      absl::StatusOr<HeadInfo> h = mp_->GetHead(name);
      if (h.ok() && NeedsAutoExport(*h)) plan.push_back({Action::kExportAll, name});
    }
  }
  return plan;
}

// Once per head: a head an admin unexported stays unexported; a new head of the same
// identity (after a removal) is exported again; a head whose old device waits to be
// taken over is not exported anew.
bool Exporter::NeedsAutoExport(const HeadInfo& h) const {
  if (devices_.contains(h.name) || auto_exported_.contains(h.uid)) return false;
  for (const Leftover& lo : leftovers_) {
    if (lo.head == h.name) return false;
  }
  return true;
}

// Checked again at its turn: an API call may have come first.
void Exporter::StartAction(const Action& a) {
  const absl::StatusOr<HeadInfo> h = mp_->GetHead(a.head);
  switch (a.kind) {
    case Action::kTeardown: {
      auto it = devices_.find(a.head);
      if (it == devices_.end() || (h.ok() && h->uid == it->second->head_uid)) return;
      std::unique_ptr<Device> d = std::move(it->second);
      devices_.erase(it);
      return BeginTeardown(std::move(d), "the head was removed", nullptr);
    }
    case Action::kRecover: {
      const size_t i = FindLeftover(a.head);
      if (i == leftovers_.size() || !h.ok() || devices_.contains(a.head)) return;
      return BeginRecover(i, *h);
    }
    case Action::kRemoveLeftover: {
      const size_t i = FindLeftover(a.head);
      if (i == leftovers_.size() || Now() < leftovers_[i].deadline) return;
      const Leftover& lo = leftovers_[i];
      return BeginRemoveLeftover(
          i, lo.deadline == 0
                 ? absl::StrCat("its head came back as another disk: ", lo.last_problem)
                 : absl::StrCat("its head did not come back within ", lo.wait_secs, " s"));
    }
    case Action::kExportAll: {
      if (!h.ok() || !NeedsAutoExport(*h)) return;
      const std::string name = h->name;
      const uint64_t uid = h->uid;
      auto answer = std::make_shared<Answer<absl::StatusOr<ExportedDevice>>>(
          [this, name, uid](absl::StatusOr<ExportedDevice> dev) {
            if (dev.ok()) {
              export_all_failed_.erase(name);
              auto_exported_.insert(uid);
              return;
            }
            if (!following_) return;
            std::string& last = export_all_failed_[name];
            if (last != dev.status().message()) {
              last = std::string(dev.status().message());
              Log(absl::StrCat("ublk: export ", name, ": ", dev.status().ToString()));
            }
          });
      return BeginExport(*h, answer);
    }
  }
}

size_t Exporter::FindLeftover(absl::string_view head) const {
  size_t i = 0;
  while (i < leftovers_.size() && leftovers_[i].head != head) ++i;
  return i;
}

// ---- Export and unexport. ----

void Exporter::Export(std::string head, Done<absl::StatusOr<ExportedDevice>> done) {
  auto answer = std::make_shared<Answer<absl::StatusOr<ExportedDevice>>>(std::move(done));
  plane_->Post([this, head = std::move(head), answer] {
    Enqueue([this, head, answer] {
      if (shut_down_ || stopping_) return (*answer)(AgentStoppingError(kStopping));
      absl::StatusOr<HeadInfo> h = mp_->GetHead(head);
      if (!h.ok()) return (*answer)(h.status());
      BeginExport(*h, answer);
    });
  });
}

void Exporter::Unexport(std::string head, Done<absl::Status> done) {
  auto answer = std::make_shared<Answer<absl::Status>>(std::move(done));
  plane_->Post([this, head = std::move(head), answer] {
    Enqueue([this, head, answer] {
      if (shut_down_ || stopping_) return (*answer)(AgentStoppingError(kStopping));
      BeginUnexport(head, answer);
    });
  });
}

absl::Status Exporter::CheckExportable(const HeadInfo& head, uint32_t* max_io) const {
  if (auto it = devices_.find(head.name); it != devices_.end()) {
    return WithReason(absl::UnavailableError(absl::StrCat("head ", head.name, "'s earlier device ",
                                                         it->second->bdev, " is still being removed")),
                      reason::kDeviceRetiring, {{"head", head.name}, {"device", it->second->bdev}});
  }
  if (const size_t i = FindLeftover(head.name); i < leftovers_.size()) {
    return WithReason(absl::FailedPreconditionError(absl::StrCat(
                          "head ", head.name, " still has device /dev/ublkb", leftovers_[i].dev_id,
                          " from the agent's last run; it is taken over once it can be (",
                          leftovers_[i].last_problem, ")")),
                      reason::kRecoveryPending,
                      {{"head", head.name}, {"device", absl::StrCat("/dev/ublkb", leftovers_[i].dev_id)}});
  }
  if (pooled_) {
    if (const PinnedMemory pm = driver_->Pinned(); pm.heads_left == 0) {
      return WithReason(absl::ResourceExhaustedError(absl::StrCat(
          "head ", head.name, " cannot be exported: the I/O buffers' budget (--max_pinned_mib=",
          pm.budget_bytes >> 20, ", ", pm.buffer_bytes >> 10,
          " KiB buffers) is taken by the heads already exported, each guaranteed one buffer per "
          "worker; unexport one or raise --max_pinned_mib")),
                        reason::kBufferBudgetTaken, {{"head", head.name}});
    }
  }
  if (head.block_size < 512 || head.block_size > 4096 || (head.block_size & (head.block_size - 1))) {
    return WithReason(absl::FailedPreconditionError(absl::StrCat(
                          "head ", head.name, " has ", head.block_size,
                          "-byte blocks; a block device takes 512..4096 (a power of two)")),
                      reason::kHeadNotExportable, {{"head", head.name}});
  }
  *max_io = options_.max_io_bytes;
  if (head.limits.max_transfer_bytes != 0 && head.limits.max_transfer_bytes < *max_io) {
    *max_io = head.limits.max_transfer_bytes & ~uint32_t{4095};
  }
  if (*max_io < head.block_size || *max_io < 4096) {
    return WithReason(absl::FailedPreconditionError(absl::StrCat("head ", head.name, ": its paths move at most ",
                                                                head.limits.max_transfer_bytes,
                                                                " bytes per command")),
                      reason::kHeadNotExportable, {{"head", head.name}});
  }
  return absl::OkStatus();
}

void Exporter::BeginExport(const HeadInfo& head,
                           std::shared_ptr<Answer<absl::StatusOr<ExportedDevice>>> answer) {
  if (auto it = devices_.find(head.name);
      it != devices_.end() && it->second->head_uid == head.uid) {
    return (*answer)(ExportedDevice{it->second->bdev, it->second->ids});  // idempotent
  }
  uint32_t max_io = 0;
  if (absl::Status s = CheckExportable(head, &max_io); !s.ok()) return (*answer)(s);
  busy_dev_ = std::make_unique<Device>();
  busy_dev_->head = head.name;
  busy_dev_->head_uid = head.uid;
  Offload([this, d = busy_dev_.get(), head, max_io, answer]() -> Then {
    absl::Status s = MakeDevice(d, head, max_io);
    return [this, s, answer] {
      std::unique_ptr<Device> dev = std::move(busy_dev_);
      if (!s.ok()) return (*answer)(s);
      const ExportedDevice out{dev->bdev, dev->ids};
      const std::string name = dev->head;
      const uint64_t uid = dev->head_uid;
      devices_[name] = std::move(dev);
      if (absl::Status e = mp_->SetHeadExport(name, uid, out.path, "exported", out.ids); !e.ok()) {
        Log(absl::StrCat("ublk: ", e.message()));
      }
      (*answer)(out);
    };
  });
}

// Offload thread.
absl::Status Exporter::MakeDevice(Device* d, const HeadInfo& head, uint32_t max_io) {
  ublksrv_ctrl_dev_info want;
  std::memset(&want, 0, sizeof want);
  want.nr_hw_queues = static_cast<uint16_t>(options_.workers.size());
  want.queue_depth = options_.queue_depth;
  want.max_io_buf_bytes = max_io;
  want.flags = kFlagCmdIoctlEncode |
               (recovery_ ? kFlagUserRecovery | kFlagUserRecoveryReissue : 0) |
               (pooled_ ? DataFlagsFor(driver_->Features(), options_.data) : 0) | (quiesce_ ? kFlagQuiesce : 0);
  // The record comes first, under the number the device is then made with: an agent
  // killed at any step from here on leaves a record the next one finds (with no device,
  // it is forgotten; with one never started, the device is removed).
  absl::StatusOr<ublksrv_ctrl_dev_info> info;
  for (uint32_t id = 0, tries = 0;; ++id) {
    if (driver_->Info(id).ok() || fs::exists(fs::path(options_.state_dir) / std::to_string(id))) continue;
    d->dev_id = id;
    if (absl::Status s = WriteRecord(*d); !s.ok()) return Prefixed(absl::StrCat("export ", head.name), s);
    want.dev_id = id;
    info = driver_->Add(want);
    if (info.ok()) break;
    EraseRecord(id);
    // Another ublk server took the number meanwhile: the next one.
    if (!absl::IsAlreadyExists(info.status()) || ++tries == 8) {
      return Prefixed(absl::StrCat("export ", head.name), info.status());
    }
  }
  if (options_.test_crash_after_add) {
    Log(absl::StrCat("ublk: device ", d->dev_id, " added; killing this agent (the crash test hook)"));
    raise(SIGKILL);
  }
  d->added = true;
  d->quiesce = quiesce_ && (info->flags & kFlagQuiesce) != 0;
  d->bdev = absl::StrCat("/dev/ublkb", d->dev_id);
  DeviceShape shape;
  shape.size_blocks = head.size_blocks;
  shape.block_size = head.block_size;
  shape.max_io_bytes = info->max_io_buf_bytes;
  shape.write_zeroes = head.limits.write_zeroes;
  shape.deallocate = head.limits.deallocate;
  shape.volatile_write_cache = head.limits.volatile_write_cache;
  absl::Status s = driver_->SetParams(d->dev_id, ParamsFor(shape));
  if (s.ok()) s = driver_->OpenQueues(d->dev_id, SetupFor(head, *info));
  // Blocks until every queue fetched, then adds the disk (whose partition scan is I/O
  // the workers already serve).
  if (s.ok()) s = driver_->Start(d->dev_id);
  if (!s.ok()) {
    driver_->CloseQueues(d->dev_id);
    if (absl::Status del = driver_->Delete(d->dev_id); !del.ok()) Log(std::string(del.message()));
    EraseRecord(d->dev_id);
    d->added = false;
    return Prefixed(absl::StrCat("export ", head.name), s);
  }
  Identify(d);
  Log(absl::StrCat("ublk: head ", head.name, " exported as ", d->bdev, " (", d->ids.major, ":",
                   d->ids.minor, ", diskseq ", d->ids.diskseq, ", ", info->nr_hw_queues,
                   " queue(s) of ", info->queue_depth, ", largest I/O ", info->max_io_buf_bytes,
                   " bytes", recovery_ ? ", user recovery" : "",
                   d->ids.by_id_link.empty() ? "" : ", linked as ", d->ids.by_id_link, ")"));
  return absl::OkStatus();
}

// Offload thread. A device without its ids still serves: they are news for the caller,
// not what the disk needs.
void Exporter::Identify(Device* d) {
  absl::StatusOr<BlockDeviceIds> ids = driver_->DiskIds(d->dev_id);
  if (!ids.ok()) Log(absl::StrCat("ublk: ", d->bdev, " of head ", d->head, ": ", ids.status().message()));
  d->ids = ids.value_or(BlockDeviceIds{});
  d->ids.by_id_link = links_.Link(d->head, d->bdev);
}

QueueSetup Exporter::SetupFor(const HeadInfo& head, const ublksrv_ctrl_dev_info& info) {
  QueueSetup setup;
  setup.queues = info.nr_hw_queues;
  setup.depth = info.queue_depth;
  setup.head_uid = head.uid;
  setup.shape.block_size = head.block_size;
  setup.shape.buffer_bytes = info.max_io_buf_bytes;
  setup.shape.write_zeroes = head.limits.write_zeroes;
  setup.shape.deallocate = head.limits.deallocate;
  setup.data = DataModeOf(info.flags);
  setup.pooled = setup.data != DataMode::kTagBuffers;
  return setup;
}

void Exporter::BeginUnexport(const std::string& head, std::shared_ptr<Answer<absl::Status>> answer) {
  auto it = devices_.find(head);
  if (it == devices_.end()) {
    return (*answer)(absl::OkStatus());  // not exported (or gone): nothing to do
  }
  busy_dev_ = std::move(it->second);
  devices_.erase(it);
  Offload([this, d = busy_dev_.get(), answer]() -> Then {
    std::vector<std::string> users = driver_->Users(d->dev_id);
    if (!users.empty()) {
      return [this, answer, users = std::move(users)] {
        const std::string bdev = busy_dev_->bdev;
        const std::string name = busy_dev_->head;
        devices_[name] = std::move(busy_dev_);
        (*answer)(InUse(absl::FailedPreconditionError(absl::StrCat(
                            bdev, " of head ", name, " is in use (", absl::StrJoin(users, ", "),
                            "); close or unmount it first")),
                        bdev, name, users));
      };
    }
    RemoveDevice(*d);
    return [this, answer] {
      std::unique_ptr<Device> dev = std::move(busy_dev_);
      FinishTeardown(*dev, "unexported");
      (*answer)(absl::OkStatus());
    };
  });
}

void Exporter::BeginTeardown(std::unique_ptr<Device> d, std::string reason,
                             std::shared_ptr<Answer<absl::Status>> answer) {
  busy_dev_ = std::move(d);
  Offload([this, d = busy_dev_.get(), reason = std::move(reason), answer]() -> Then {
    RemoveDevice(*d);
    return [this, reason, answer] {
      std::unique_ptr<Device> dev = std::move(busy_dev_);
      FinishTeardown(*dev, reason);
      if (answer) (*answer)(absl::OkStatus());
    };
  });
}

// Offload thread (or Shutdown's). STOP_DEV removes the disk; what the kernel still has
// queued fails, what the core holds completes first (the head is gone, or the device
// is idle).
void Exporter::RemoveDevice(const Device& d, Deletion deletion) {
  // The link first: it never names a number the kernel may give the next device.
  links_.Unlink(d.head, d.bdev);
  if (absl::Status s = driver_->Stop(d.dev_id); !s.ok()) Log(std::string(s.message()));
  driver_->CloseQueues(d.dev_id);
  absl::Status s = deletion == Deletion::kWait ? driver_->Delete(d.dev_id)
                                               : driver_->DeleteNoWait(d.dev_id);
  if (!s.ok()) Log(std::string(s.message()));
  EraseRecord(d.dev_id);
}

void Exporter::FinishTeardown(const Device& d, const std::string& reason) {
  Log(absl::StrCat("ublk: ", d.bdev, " of head ", d.head, " removed: ", reason));
  if (absl::Status s = mp_->SetHeadExport(d.head, d.head_uid, "",
                                          absl::StrCat(d.bdev, " removed: ", reason));
      !s.ok() && !absl::IsNotFound(s)) {
    Log(absl::StrCat("ublk: ", s.message()));
  }
}

}  // namespace umpath::ublk
