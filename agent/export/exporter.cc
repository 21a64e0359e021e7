#include "agent/export/exporter.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "agent/base/status_macros.h"
#include "absl/strings/strip.h"

namespace umpath::ublk {

namespace fs = std::filesystem;

namespace {

constexpr auto kReconcileEvery = std::chrono::seconds(1);
constexpr int kDrainTries = 2000;  // x 5 ms: how long a stopped queue may take to end

int64_t MonoNow() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Runs `fn` on the worker's thread and waits for it.
void OnWorker(Worker* w, absl::AnyInvocable<void()> fn) {
  auto done = std::make_shared<Notification>();
  w->Post([fn = std::move(fn), done]() mutable {
    fn();
    done->Notify();
  });
  done->WaitFor(std::chrono::hours(1));
}

std::string ReadFirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace

std::vector<std::string> BlockDeviceUsers(uint32_t major_num, uint32_t minor_num,
                                          const std::string& sysname) {
  std::vector<std::string> users;
  const dev_t want = makedev(major_num, minor_num);
  // Processes with it open (what fuser shows).
  std::error_code ec;
  for (const auto& proc : fs::directory_iterator("/proc", ec)) {
    const std::string pid = proc.path().filename();
    if (pid.empty() || !std::isdigit(static_cast<unsigned char>(pid[0]))) continue;
    if (pid == std::to_string(getpid())) continue;
    std::error_code ec2;
    for (const auto& fd : fs::directory_iterator(proc.path() / "fd", ec2)) {
      struct stat st;
      if (stat(fd.path().c_str(), &st) == 0 && S_ISBLK(st.st_mode) && st.st_rdev == want) {
        users.push_back(absl::StrCat("pid ", pid, " (", ReadFirstLine(proc.path() / "comm"), ")"));
        break;
      }
    }
  }
  // Mounts.
  std::ifstream mi("/proc/self/mountinfo");
  const std::string majmin = absl::StrCat(major_num, ":", minor_num);
  for (std::string line; std::getline(mi, line);) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() > 4 && f[2] == majmin) users.push_back(absl::StrCat("mounted at ", f[4]));
  }
  // Stacked devices (device-mapper, md).
  for (const auto& h : fs::directory_iterator(fs::path("/sys/block") / sysname / "holders", ec)) {
    users.push_back(absl::StrCat("held by ", h.path().filename().string()));
  }
  return users;
}

absl::StatusOr<std::unique_ptr<Exporter>> Exporter::Create(Multipath* mp, ExporterOptions options) {
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
  absl::StatusOr<std::unique_ptr<Control>> control = Control::Open(options.control_path);
  if (!control.ok()) return control.status();
  std::error_code ec;
  fs::create_directories(options.state_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("ublk state directory ", options.state_dir, ": ", ec.message()));
  }
  auto e = std::unique_ptr<Exporter>(new Exporter(mp, std::move(options), std::move(*control)));
  MutexLock l(&e->ops_mu_);
  e->FindLeftovers();
  return e;
}

Exporter::Exporter(Multipath* mp, ExporterOptions options, std::unique_ptr<Control> control)
    : mp_(mp), options_(std::move(options)), control_(std::move(control)) {
  const uint64_t features = control_->Features();
  recovery_ = options_.user_recovery && (features & kFlagUserRecovery) &&
              (features & kFlagUserRecoveryReissue);
  Log(absl::StrCat("ublk: features 0x", absl::Hex(features), "; user recovery ",
                   recovery_ ? "on" : (options_.user_recovery ? "not offered by this kernel" : "off")));
}

Exporter::~Exporter() { Shutdown(); }

void Exporter::Log(const std::string& line) const {
  if (options_.log) options_.log(line);
}

size_t Exporter::devices() const {
  MutexLock l(&ops_mu_);
  return devices_.size();
}

void Exporter::Start() {
  sub_ = [this]() -> std::shared_ptr<EventSubscription> {
    auto s = mp_->journal().Subscribe(mp_->journal().current_revision(), 1 << 14, [this] {
      MutexLock l(&wake_mu_);
      wake_ = true;
      wake_cv_.Signal();
    });
    return s.ok() ? *s : nullptr;
  }();
  thread_ = std::thread([this] { Loop(); });
}

void Exporter::Loop() {
  for (;;) {
    {
      MutexLock l(&wake_mu_);
      if (!wake_ && !stop_) wake_cv_.WaitFor(&wake_mu_, kReconcileEvery);
      if (stop_) return;
      wake_ = false;
    }
    if (sub_) {
      // Only a wake-up: what changed is read from the core itself.
      absl::StatusOr<std::vector<Event>> ev = sub_->Take(1 << 14);
      if (!ev.ok()) {
        sub_->Close();
        auto s = mp_->journal().Subscribe(mp_->journal().current_revision(), 1 << 14, [this] {
          MutexLock l(&wake_mu_);
          wake_ = true;
          wake_cv_.Signal();
        });
        sub_ = s.ok() ? *s : nullptr;
      }
    }
    Reconcile();
  }
}

void Exporter::Reconcile() {
  MutexLock l(&ops_mu_);
  if (shut_down_) return;
  // Devices whose head went away (delayed removal expired, or removed at once).
  std::vector<std::string> gone;
  for (const auto& [name, d] : devices_) {
    absl::StatusOr<HeadInfo> h = mp_->GetHead(name);
    if (!h.ok() || h->uid != d->head_uid) gone.push_back(name);
  }
  for (const std::string& name : gone) {
    auto it = devices_.find(name);
    std::unique_ptr<Device> d = std::move(it->second);
    devices_.erase(it);
    Teardown(std::move(d), "the head was removed");
  }
  // Devices an earlier run left: take them over once their head is back.
  for (size_t i = 0; i < leftovers_.size();) {
    Leftover& lo = leftovers_[i];
    absl::StatusOr<HeadInfo> h = mp_->GetHead(lo.head);
    if (h.ok() && !devices_.contains(lo.head)) {
      absl::Status s = Recover(lo, *h);
      if (s.ok()) {
        leftovers_.erase(leftovers_.begin() + i);
        continue;
      }
      if (std::string(s.message()) != lo.last_problem) {
        lo.last_problem = std::string(s.message());
        Log(absl::StrCat("ublk: device ", lo.dev_id, " of head ", lo.head, ": recovery: ", s.message()));
      }
    }
    if (MonoNow() >= lo.deadline) {
      RemoveLeftover(lo, lo.deadline == 0
                             ? absl::StrCat("its head came back as another disk: ", lo.last_problem)
                             : absl::StrCat("its head did not come back within ",
                                            options_.recover_wait_secs, " s"));
      leftovers_.erase(leftovers_.begin() + i);
      continue;
    }
    ++i;
  }
  if (options_.export_all) {
    for (const HeadInfo& h : mp_->ListHeads()) {
      // Once per head: a head an admin unexported stays unexported; a new head of the
      // same identity (after a removal) is exported again.
      if (devices_.contains(h.name) || auto_exported_.contains(h.uid)) continue;
      bool waiting = false;
      for (const Leftover& lo : leftovers_) waiting |= lo.head == h.name;
      if (waiting) continue;  // its old device is taken over instead
      absl::StatusOr<std::string> dev = ExportLocked(h);
      if (!dev.ok()) {
        std::string& last = export_all_failed_[h.name];
        if (last != dev.status().message()) {
          last = std::string(dev.status().message());
          Log(absl::StrCat("ublk: export ", h.name, ": ", dev.status().ToString()));
        }
      } else {
        export_all_failed_.erase(h.name);
        auto_exported_.insert(h.uid);
      }
    }
  }
}

absl::StatusOr<std::string> Exporter::Export(absl::string_view head) {
  absl::StatusOr<HeadInfo> h = mp_->GetHead(head);
  if (!h.ok()) return h.status();
  MutexLock l(&ops_mu_);
  if (shut_down_) return absl::UnavailableError("the agent is shutting down");
  return ExportLocked(*h);
}

absl::StatusOr<std::string> Exporter::ExportLocked(const HeadInfo& head) {
  if (auto it = devices_.find(head.name); it != devices_.end()) {
    if (it->second->head_uid == head.uid) return it->second->bdev;
  }
  for (const Leftover& lo : leftovers_) {
    if (lo.head == head.name) {
      return absl::FailedPreconditionError(absl::StrCat(
          "head ", head.name, " still has device /dev/ublkb", lo.dev_id,
          " from the agent's last run; it is taken over once it can be (", lo.last_problem, ")"));
    }
  }
  if (head.block_size < 512 || head.block_size > 4096 || (head.block_size & (head.block_size - 1))) {
    return absl::FailedPreconditionError(absl::StrCat(
        "head ", head.name, " has ", head.block_size,
        "-byte blocks; a block device takes 512..4096 (a power of two)"));
  }
  uint32_t max_io = options_.max_io_bytes;
  if (head.limits.max_transfer_bytes != 0 && head.limits.max_transfer_bytes < max_io) {
    max_io = head.limits.max_transfer_bytes & ~uint32_t{4095};
  }
  if (max_io < head.block_size || max_io < 4096) {
    return absl::FailedPreconditionError(
        absl::StrCat("head ", head.name, ": its paths move at most ",
                     head.limits.max_transfer_bytes, " bytes per command"));
  }
  ublksrv_ctrl_dev_info want;
  std::memset(&want, 0, sizeof want);
  want.nr_hw_queues = static_cast<uint16_t>(options_.workers.size());
  want.queue_depth = options_.queue_depth;
  want.max_io_buf_bytes = max_io;
  want.dev_id = static_cast<uint32_t>(-1);
  want.flags = kFlagCmdIoctlEncode | (recovery_ ? kFlagUserRecovery | kFlagUserRecoveryReissue : 0);
  absl::StatusOr<ublksrv_ctrl_dev_info> info = control_->Add(want);
  if (!info.ok()) return info.status();
  auto d = std::make_unique<Device>();
  d->dev_id = info->dev_id;
  d->head = head.name;
  d->head_uid = head.uid;
  d->bdev = absl::StrCat("/dev/ublkb", d->dev_id);
  d->queues = info->nr_hw_queues;
  auto fail = [&](const absl::Status& s) {
    ops_mu_.AssertHeld();  // called only below, under the lock
    CloseQueues(d.get());
    if (absl::Status del = control_->Delete(d->dev_id); !del.ok()) Log(std::string(del.message()));
    return absl::Status(s.code(), absl::StrCat("export ", head.name, ": ", s.message()));
  };
  DeviceShape shape;
  shape.size_blocks = head.size_blocks;
  shape.block_size = head.block_size;
  shape.max_io_bytes = info->max_io_buf_bytes;
  shape.write_zeroes = head.limits.write_zeroes;
  shape.deallocate = head.limits.deallocate;
  shape.volatile_write_cache = head.limits.volatile_write_cache;
  if (absl::Status s = control_->SetParams(d->dev_id, ParamsFor(shape)); !s.ok()) return fail(s);
  if (absl::Status s = OpenQueues(d.get(), head, info->queue_depth, info->max_io_buf_bytes); !s.ok()) {
    return fail(s);
  }
  // Blocks until every queue fetched, then adds the disk (whose partition scan is I/O
  // the workers already serve).
  if (absl::Status s = control_->Start(d->dev_id, getpid()); !s.ok()) return fail(s);
  WriteRecord(*d);
  const std::string bdev = d->bdev;
  Log(absl::StrCat("ublk: head ", head.name, " exported as ", bdev, " (", d->queues, " queue(s) of ",
                   info->queue_depth, ", largest I/O ", info->max_io_buf_bytes, " bytes",
                   recovery_ ? ", user recovery" : "", ")"));
  devices_[head.name] = std::move(d);
  if (absl::Status s = mp_->SetHeadExport(head.name, head.uid, bdev, "exported"); !s.ok()) {
    Log(absl::StrCat("ublk: ", s.message()));
  }
  return bdev;
}

absl::Status Exporter::OpenQueues(Device* d, const HeadInfo& head, uint16_t depth,
                                  uint32_t buffer_bytes) {
  if (d->queues > options_.workers.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the device has ", d->queues, " queues and this agent ", options_.workers.size(),
        " workers; start it with --workers=", d->queues, " or more"));
  }
  const std::string cdev = absl::StrCat("/dev/ublkc", d->dev_id);
  // devtmpfs makes the node as the driver adds the device; udev may still be chowning.
  for (int i = 0; i < 200 && d->cdev_fd < 0; ++i) {
    d->cdev_fd = open(cdev.c_str(), O_RDWR | O_CLOEXEC);
    if (d->cdev_fd < 0 && errno != ENOENT) break;
    if (d->cdev_fd < 0) usleep(10'000);
  }
  if (d->cdev_fd < 0) {
    return absl::FailedPreconditionError(absl::StrCat("open ", cdev, ": ", std::strerror(errno)));
  }
  absl::StatusOr<IoMemory> mem = options_.alloc(uint64_t{d->queues} * depth * buffer_bytes);
  if (!mem.ok()) return mem.status();
  d->memory = std::move(*mem);
  IoShape shape;
  shape.block_size = head.block_size;
  shape.buffer_bytes = buffer_bytes;
  shape.write_zeroes = head.limits.write_zeroes;
  shape.deallocate = head.limits.deallocate;
  for (uint16_t q = 0; q < d->queues; ++q) {
    Queue::Options qo;
    qo.cdev_fd = d->cdev_fd;
    qo.q_id = q;
    qo.depth = depth;
    qo.head_uid = head.uid;
    qo.shape = shape;
    qo.buffers = static_cast<uint8_t*>(d->memory.host) + size_t{q} * depth * buffer_bytes;
    d->q.push_back(std::make_unique<Queue>(qo));
  }
  absl::Status result;
  for (uint16_t q = 0; q < d->queues; ++q) {
    Worker* w = options_.workers[q];
    Queue* queue = d->q[q].get();
    absl::Status s;
    OnWorker(w, [&s, queue, w] {
      s = queue->Open();
      if (s.ok()) w->AddSource(queue);
    });
    if (!s.ok() && result.ok()) result = s;
  }
  return result;
}

void Exporter::CloseQueues(Device* d) {
  for (size_t q = 0; q < d->q.size(); ++q) {
    Worker* w = options_.workers[q];
    Queue* queue = d->q[q].get();
    // A stopped device cancels what its queues fetched; wait until every tag ended and
    // nothing is left in the core (which calls back into the queue).
    bool drained = false, in_core = false;
    for (int i = 0; i < kDrainTries && !drained; ++i) {
      OnWorker(w, [&] {
        queue->Drain(*w);
        drained = queue->drained();
        in_core = queue->in_core() > 0;
      });
      if (!drained) usleep(5'000);
      // Tags only fetched are cancelled when the ring goes; tags in the core are not.
      if (!in_core && i >= 20) break;
    }
    if (in_core) {
      Log(absl::StrCat("ublk: device ", d->dev_id, " queue ", q,
                       ": requests still in the core after the device stopped; keeping the queue"));
      continue;
    }
    OnWorker(w, [&] {
      w->RemoveSource(queue, nullptr);
      queue->Close();
    });
  }
  if (d->cdev_fd >= 0) {
    close(d->cdev_fd);
    d->cdev_fd = -1;
  }
}

void Exporter::Teardown(std::unique_ptr<Device> d, const std::string& reason) {
  // STOP_DEV removes the disk; what the kernel still has queued fails, what the core
  // holds completes first (the head is gone, or the device is idle).
  if (absl::Status s = control_->Stop(d->dev_id); !s.ok()) Log(std::string(s.message()));
  CloseQueues(d.get());
  if (absl::Status s = control_->Delete(d->dev_id); !s.ok()) Log(std::string(s.message()));
  EraseRecord(d->dev_id);
  Log(absl::StrCat("ublk: ", d->bdev, " of head ", d->head, " removed: ", reason));
  if (absl::Status s = mp_->SetHeadExport(d->head, d->head_uid, "",
                                          absl::StrCat(d->bdev, " removed: ", reason));
      !s.ok() && !absl::IsNotFound(s)) {
    Log(absl::StrCat("ublk: ", s.message()));
  }
  // Queues still holding requests must outlive them (logged above): kept, not freed.
  for (auto& q : d->q) {
    if (q && q->in_core() > 0) {
      zombies_.push_back(std::move(d));
      break;
    }
  }
}

absl::Status Exporter::Unexport(absl::string_view head) {
  absl::StatusOr<HeadInfo> h = mp_->GetHead(head);
  MutexLock l(&ops_mu_);
  auto it = devices_.find(head);
  if (it == devices_.end()) {
    if (!h.ok()) return h.status();
    return absl::OkStatus();  // not exported: nothing to do
  }
  Device* d = it->second.get();
  struct stat st;
  if (stat(d->bdev.c_str(), &st) == 0) {
    std::vector<std::string> users =
        BlockDeviceUsers(major(st.st_rdev), minor(st.st_rdev), absl::StrCat("ublkb", d->dev_id));
    if (!users.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          d->bdev, " of head ", d->head, " is in use (", absl::StrJoin(users, ", "),
          "); close or unmount it first"));
    }
  }
  std::unique_ptr<Device> owned = std::move(it->second);
  devices_.erase(it);
  Teardown(std::move(owned), "unexported");
  return absl::OkStatus();
}

void Exporter::StopFollowing() {
  {
    MutexLock l(&wake_mu_);
    stop_ = true;
    wake_cv_.Signal();
  }
  if (thread_.joinable()) thread_.join();
  if (sub_) sub_->Close();
}

void Exporter::Shutdown() {
  StopFollowing();
  MutexLock l(&ops_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  while (!devices_.empty()) {
    auto it = devices_.begin();
    std::unique_ptr<Device> d = std::move(it->second);
    devices_.erase(it);
    Teardown(std::move(d), "the agent is shutting down");
  }
  for (const Leftover& lo : leftovers_) RemoveLeftover(lo, "the agent is shutting down");
  leftovers_.clear();
}

// ---- Devices that outlive the agent. ----

void Exporter::WriteRecord(const Device& d) const {
  const fs::path dir(options_.state_dir);
  const fs::path tmp = dir / absl::StrCat(".", d.dev_id, ".tmp");
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << "head=" << d.head << "\n";
    out.flush();
    if (!out) {
      Log(absl::StrCat("ublk: cannot record device ", d.dev_id, " in ", options_.state_dir));
      return;
    }
  }
  std::error_code ec;
  fs::rename(tmp, dir / std::to_string(d.dev_id), ec);
  if (ec) Log(absl::StrCat("ublk: record device ", d.dev_id, ": ", ec.message()));
}

void Exporter::EraseRecord(uint32_t dev_id) const {
  std::error_code ec;
  fs::remove(fs::path(options_.state_dir) / std::to_string(dev_id), ec);
}

void Exporter::FindLeftovers() {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(options_.state_dir, ec)) {
    uint32_t dev_id;
    if (!absl::SimpleAtoi(e.path().filename().string(), &dev_id)) continue;
    const std::string line = ReadFirstLine(e.path());
    absl::string_view head_view = line;
    if (!absl::ConsumePrefix(&head_view, "head=") || head_view.empty()) {
      Log(absl::StrCat("ublk: ", e.path().string(), ": not a device record; ignored"));
      continue;
    }
    const std::string head(head_view);
    absl::StatusOr<ublksrv_ctrl_dev_info> info = control_->Info(dev_id);
    if (!info.ok()) {
      // Gone already (the kernel removed it, or a reboot): forget it.
      EraseRecord(dev_id);
      continue;
    }
    if (info->ublksrv_pid > 0 && info->ublksrv_pid != getpid() && kill(info->ublksrv_pid, 0) == 0 &&
        info->state == kStateLive) {
      Log(absl::StrCat("ublk: device ", dev_id, " of head ", head, " is served by running pid ",
                       info->ublksrv_pid, "; left alone"));
      continue;
    }
    Leftover lo{dev_id, head, MonoNow() + options_.recover_wait_secs * 1'000'000'000, ""};
    if (!(info->flags & kFlagUserRecovery)) {
      // No recovery: the kernel stopped it when its agent went; only removal is left.
      RemoveLeftover(lo, "it was made without user recovery");
      continue;
    }
    Log(absl::StrCat("ublk: device ", dev_id, " of head ", head, " left by pid ", info->ublksrv_pid,
                     " (state ", info->state, "); taken over when the head appears, or removed in ",
                     options_.recover_wait_secs, " s"));
    leftovers_.push_back(std::move(lo));
  }
}

void Exporter::RemoveLeftover(const Leftover& l, const std::string& why) {
  if (absl::Status s = control_->Stop(l.dev_id); !s.ok() && !absl::IsNotFound(s)) {
    Log(std::string(s.message()));
  }
  if (absl::Status s = control_->Delete(l.dev_id); !s.ok() && !absl::IsNotFound(s)) {
    Log(std::string(s.message()));
  }
  EraseRecord(l.dev_id);
  Log(absl::StrCat("ublk: /dev/ublkb", l.dev_id, " of head ", l.head, " removed: ", why));
}

absl::Status Exporter::Recover(Leftover& l, const HeadInfo& head) {
  absl::StatusOr<ublksrv_ctrl_dev_info> info = control_->Info(l.dev_id);
  if (!info.ok()) return info.status();
  if (info->state != kStateQuiesced) {
    return absl::UnavailableError(absl::StrCat("the device is in state ", info->state,
                                               ", not yet quiesced after its agent left"));
  }
  if (info->nr_hw_queues > options_.workers.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("it has ", info->nr_hw_queues, " queues and this agent ",
                     options_.workers.size(), " workers"));
  }
  // The device keeps the capacity and block size it was made with: a head that came
  // back different is not the same disk, and the device cannot be taken over.
  absl::StatusOr<ublk_params> params = control_->GetParams(l.dev_id);
  if (!params.ok()) return params.status();
  const uint64_t sectors = head.size_blocks * (head.block_size / 512);
  if (params->basic.dev_sectors != sectors ||
      (1u << params->basic.logical_bs_shift) != head.block_size) {
    l.deadline = 0;  // removed by the caller's next check
    return absl::FailedPreconditionError(absl::StrCat(
        "the device has ", params->basic.dev_sectors, " sectors of ",
        1u << params->basic.logical_bs_shift, " B and the head ", sectors, " of ",
        head.block_size, " B"));
  }
  // The old agent's files must be closed (EBUSY until its exit completes).
  RETURN_IF_ERROR(control_->StartRecovery(l.dev_id));
  auto d = std::make_unique<Device>();
  d->dev_id = l.dev_id;
  d->head = head.name;
  d->head_uid = head.uid;
  d->bdev = absl::StrCat("/dev/ublkb", l.dev_id);
  d->queues = info->nr_hw_queues;
  if (absl::Status s = OpenQueues(d.get(), head, info->queue_depth, info->max_io_buf_bytes); !s.ok()) {
    CloseQueues(d.get());
    return s;
  }
  // Unquiesces the disk: what waited in the kernel (and what the old agent had taken,
  // reissued) now reaches this agent's queues.
  if (absl::Status s = control_->EndRecovery(l.dev_id, getpid()); !s.ok()) {
    CloseQueues(d.get());
    return s;
  }
  const std::string bdev = d->bdev;
  Log(absl::StrCat("ublk: ", bdev, " of head ", head.name, " taken over from pid ",
                   info->ublksrv_pid));
  devices_[head.name] = std::move(d);
  auto_exported_.insert(head.uid);
  if (absl::Status s = mp_->SetHeadExport(head.name, head.uid, bdev,
                                          "taken over from the agent's last run");
      !s.ok()) {
    Log(absl::StrCat("ublk: ", s.message()));
  }
  return absl::OkStatus();
}

}  // namespace umpath::ublk
