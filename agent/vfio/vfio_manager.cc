#include "agent/vfio/vfio_manager.h"

#include <linux/netlink.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent/base/uevent.h"
#include "agent/vfio/fence.h"
#include "agent/vfio/regs.h"

namespace umpath::vfio {

namespace fs = std::filesystem;

namespace {

constexpr const char* kPciDevices = "/sys/bus/pci/devices";

std::string ReadLine(const fs::path& p) {
  std::ifstream in(p);
  std::string s;
  std::getline(in, s);
  return s;
}

bool WriteSysfs(const fs::path& p, const std::string& value) {
  std::ofstream out(p);
  out << value;
  out.flush();
  return static_cast<bool>(out);
}

// Admin commands that quiesce a controller before a disable: short, since a controller
// being reset may not answer at all.
constexpr int kQuiesceTimeoutMs = 1000;

void Log(const std::string& line) { std::fprintf(stderr, "umpath-vfio: %s\n", line.c_str()); }

}  // namespace

std::vector<std::string> ListNvmeFunctions() {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(kPciDevices, ec)) {
    if (ReadLine(e.path() / "class") == "0x010802") out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

absl::Status BindToVfio(const std::string& bdf) {
  const fs::path dev = fs::path(kPciDevices) / bdf;
  std::error_code ec;
  if (!fs::exists(dev, ec)) return absl::NotFoundError(absl::StrCat("no PCI device ", bdf));
  std::string had = "no driver";
  // A function that just appeared may still be probed by its default driver (nvme
  // probes asynchronously): try a few times, letting go of whatever bound meanwhile.
  for (int attempt = 0; attempt < 5; ++attempt) {
    const fs::path driver = fs::read_symlink(dev / "driver", ec);
    if (!ec && driver.filename() == "vfio-pci") return absl::OkStatus();
    if (!ec) {
      had = driver.filename().string();
      if (!WriteSysfs(dev / "driver" / "unbind", bdf)) {
        return absl::InternalError(absl::StrCat("could not unbind ", bdf, " from ", had));
      }
    }
    if (!WriteSysfs(dev / "driver_override", "vfio-pci")) {
      return absl::InternalError(absl::StrCat("could not set driver_override of ", bdf));
    }
    (void)WriteSysfs("/sys/bus/pci/drivers_probe", bdf);  // fails while a probe is running
    for (int i = 0; i < 10; ++i) {
      const fs::path now = fs::read_symlink(dev / "driver", ec);
      if (!ec && now.filename() == "vfio-pci") return absl::OkStatus();
      if (!ec) break;  // another driver got it: unbind again
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  return absl::FailedPreconditionError(absl::StrCat(
      bdf, " did not bind to vfio-pci (it had ", had, "; is the vfio-pci module loaded?)"));
}

// One claimed controller: its device, its queue pairs (one per worker), and what the
// core asks of it.
//
// Threading: the atomics are set by the core's timer thread (ControllerBackend calls)
// and worker threads (command timeouts), and read on the event thread; everything else
// is the event thread's, under the manager's lock.
struct VfioManager::Ctrl final : ControllerBackend, FenceOps {
  VfioManager* mgr = nullptr;
  std::string bdf;
  std::unique_ptr<VfioController> dev;
  nvme::ControllerIdentity id;
  std::vector<VfioQueuePair*> qps;
  std::vector<uint32_t> nsids;
  std::vector<nvme::NamespaceIds> ns_ids;  // parallel to nsids
  int admin_fd = -1;
  int release_fd = -1;
  bool resetting = false;     // quiesced for a reset; serves again after FinishReset
  bool removing = false;      // removed from the core; in retiring_
  bool release_wanted = false;  // the function goes as soon as it is fenced
  bool stopping = false;      // the agent stops: a normal shutdown notification first
  std::atomic<bool> reset_requested{false};
  std::atomic<bool> ana_requested{false};
  std::atomic<bool> quiesced{false};     // the core: fence it now
  std::atomic<bool> handed_back{false};  // the core: its commands went back
  std::atomic<bool> released{false};     // the core: the workers let go

  void RequestAnaLog() override {
    ana_requested = true;
    mgr->Wake();
  }
  void Reset() override {
    reset_requested = true;
    mgr->Wake();
  }
  void OnQuiesced() override {
    quiesced = true;
    mgr->Wake();
  }
  void OnHandedBack() override {
    handed_back = true;
    mgr->Wake();
  }
  void OnQueuePairsReleased() override {
    released = true;
    mgr->Wake();
  }

  // FenceOps, over the device (the event thread).
  bool Gone() override { return dev->released() || dev->ReadCsts() == regs::kCstsGone; }
  bool Fatal() override { return (dev->ReadCsts() & regs::kCstsCfs) != 0; }
  absl::Status DeleteIoQueues() override { return dev->DeleteIoQueues(kQuiesceTimeoutMs); }
  absl::Status ShutdownNotify() override { return dev->ShutdownNotify(2000); }
  absl::Status Disable() override { return dev->Disable(); }
  absl::Status ClearBusMaster() override { return dev->device().ClearBusMaster(); }
  absl::Status ResetFunction() override { return dev->device().ResetFunction(); }
  void Release() override { dev->ReleaseDevice(); }
};

absl::StatusOr<std::unique_ptr<VfioManager>> VfioManager::Create(Multipath* mp,
                                                                 std::vector<Worker*> workers,
                                                                 VfioManagerOptions options) {
  if (workers.empty()) return absl::InvalidArgumentError("no workers");
  if (workers.size() > 64) return absl::InvalidArgumentError("at most 64 workers over vfio");
  if (options.queue_depth < 2 || options.queue_depth > 4096) {
    return absl::InvalidArgumentError("queue depth must be 2..4096");
  }
  absl::StatusOr<std::unique_ptr<VfioContainer>> container = VfioContainer::Open();
  if (!container.ok()) return container.status();
  const int wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  if (wake < 0 || ep < 0) return absl::ErrnoToStatus(errno, "eventfd/epoll");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;
  epoll_ctl(ep, EPOLL_CTL_ADD, wake, &ev);
  std::unique_ptr<VfioManager> m(new VfioManager(mp, std::move(workers), std::move(options),
                                                 std::move(*container), wake, ep));
  // Kernel uevents: a function that appears (hot-add) is claimed without a restart.
  if (absl::StatusOr<int> ue = OpenUeventSocket(); ue.ok()) {
    m->uevent_fd_ = *ue;
    epoll_event uev{};
    uev.events = EPOLLIN;
    uev.data.ptr = &m->uevent_fd_;
    epoll_ctl(ep, EPOLL_CTL_ADD, *ue, &uev);
  } else {
    Log(absl::StrCat("no kernel uevents (", ue.status().message(),
                     "): functions that appear later are not claimed"));
  }
  return m;
}

VfioManager::VfioManager(Multipath* mp, std::vector<Worker*> workers, VfioManagerOptions options,
                         std::unique_ptr<VfioContainer> container, int wake_fd, int epoll_fd)
    : mp_(mp),
      workers_(std::move(workers)),
      options_(std::move(options)),
      container_(std::move(container)),
      wake_fd_(wake_fd),
      epoll_fd_(epoll_fd) {}

VfioManager::~VfioManager() {
  Stop();
  if (uevent_fd_ >= 0) close(uevent_fd_);
  close(epoll_fd_);
  close(wake_fd_);
}

void VfioManager::Wake() {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof one);
}

std::vector<std::string> VfioManager::ConfiguredDevices() const {
  std::vector<std::string> bdfs;
  for (const std::string& d : options_.devices) {
    if (d == "all") {
      for (const std::string& f : ListNvmeFunctions()) {
        std::error_code ec;
        const fs::path drv = fs::read_symlink(fs::path(kPciDevices) / f / "driver", ec);
        if (options_.bind || (!ec && drv.filename() == "vfio-pci")) bdfs.push_back(f);
      }
    } else {
      bdfs.push_back(d);
    }
  }
  return bdfs;
}

std::vector<std::pair<std::string, absl::Status>> VfioManager::AttachConfigured() {
  std::vector<std::pair<std::string, absl::Status>> out;
  for (const std::string& bdf : ConfiguredDevices()) {
    absl::Status s = Attach(bdf);
    if (!s.ok()) Log(absl::StrCat(bdf, ": not attached: ", s.ToString()));
    MutexLock l(&mu_);
    last_attempt_[bdf] = s.ToString();
    out.emplace_back(bdf, std::move(s));
  }
  return out;
}

void VfioManager::Rescan() {
  for (const std::string& bdf : ConfiguredDevices()) {
    const bool known =
        std::any_of(ctrls_.begin(), ctrls_.end(), [&](const auto& c) { return c->bdf == bdf; }) ||
        std::any_of(retiring_.begin(), retiring_.end(), [&](const auto& c) { return c->bdf == bdf; });
    std::error_code ec;
    if (known || !fs::exists(fs::path(kPciDevices) / bdf, ec)) continue;
    absl::Status s = AttachLocked(bdf);
    std::string& last = last_attempt_[bdf];
    if (s.ok()) {
      Log(absl::StrCat(bdf, ": appeared and attached"));
    } else if (last != s.ToString()) {
      Log(absl::StrCat(bdf, ": appeared, not attached: ", s.ToString()));
    }
    last = s.ToString();
  }
}

void VfioManager::ReadUevents() {
  // PCI functions that appear or change driver.
  umpath::ReadUevents(uevent_fd_, [this](const Uevent& e) {
    mu_.AssertHeld();
    if (e.Has("SUBSYSTEM=pci") && (e.Has("ACTION=add") || e.Has("ACTION=bind"))) rescan_ = true;
  });
}

absl::Status VfioManager::Attach(const std::string& bdf) {
  MutexLock l(&mu_);
  return AttachLocked(bdf);
}

absl::Status VfioManager::AttachLocked(const std::string& bdf) {
  for (const auto& c : ctrls_) {
    if (c->bdf == bdf) return absl::AlreadyExistsError(absl::StrCat(bdf, " is already attached"));
  }
  if (options_.bind) {
    if (absl::Status s = BindToVfio(bdf); !s.ok()) return s;
  }
  auto c = std::make_unique<Ctrl>();
  c->mgr = this;
  c->bdf = bdf;
  absl::StatusOr<std::unique_ptr<VfioController>> dev = VfioController::Open(container_.get(), bdf);
  if (!dev.ok()) return dev.status();
  c->dev = std::move(*dev);
  auto fail = [&](absl::string_view step, const absl::Status& s) {
    (void)c->dev->Disable();  // nothing of a half-made controller keeps running
    return absl::Status(s.code(), absl::StrCat(bdf, ": ", step, ": ", s.message()));
  };
  if (absl::Status s = c->dev->Enable(); !s.ok()) return fail("enable", s);
  absl::StatusOr<nvme::ControllerIdentity> id = c->dev->IdentifyController();
  if (!id.ok()) return fail("identify controller", id.status());
  c->id = *id;
  const uint16_t nworkers = static_cast<uint16_t>(workers_.size());
  absl::StatusOr<uint16_t> granted = c->dev->SetNumberOfQueues(nworkers);
  if (!granted.ok()) return fail("set number of queues", granted.status());
  if (*granted < nworkers) {
    return fail("set number of queues",
                absl::ResourceExhaustedError(absl::StrCat("granted ", *granted, " I/O queues, ",
                                                          nworkers, " workers need one each")));
  }
  if (absl::Status s = c->dev->EnableInterrupts(nworkers); !s.ok()) return fail("MSI-X", s);
  absl::StatusOr<int> rel = c->dev->EnableReleaseRequest();
  if (rel.ok()) {
    c->release_fd = *rel;
  } else {
    Log(absl::StrCat(bdf, ": no release request (", rel.status().message(),
                     "); a hot-unplug will be seen as a lost device"));
  }
  c->admin_fd = c->dev->vector_fd(0);
  // MDTS in units of the minimum page (CAP.MPSMIN, 4 KiB here); 0 is no limit: cap it at
  // 1 MiB so PRP list pages stay bounded per command.
  const uint32_t max_transfer =
      c->id.mdts == 0 ? (1u << 20) : std::min<uint32_t>(1u << 20, c->dev->cap().mps_min() << c->id.mdts);
  for (uint16_t w = 0; w < nworkers; ++w) {
    IoQueueOptions qo;
    qo.qid = static_cast<uint16_t>(w + 1);
    qo.depth = options_.queue_depth;
    qo.max_transfer = max_transfer;
    qo.timeout_ns = options_.io_timeout_ms * 1'000'000;
    qo.registry = &registry_;
    Ctrl* raw = c.get();
    qo.on_timeout = [raw] {
      raw->reset_requested = true;
      raw->mgr->Wake();
    };
    absl::StatusOr<VfioQueuePair*> qp = c->dev->CreateIoQueue(std::move(qo));
    if (!qp.ok()) return fail(absl::StrCat("create I/O queue ", w + 1), qp.status());
    c->qps.push_back(*qp);
  }
  absl::StatusOr<std::vector<uint32_t>> nsids = c->dev->ActiveNamespaces();
  if (!nsids.ok()) return fail("active namespaces", nsids.status());
  std::vector<NamespaceSpec> specs;
  for (uint32_t nsid : *nsids) {
    absl::StatusOr<nvme::NamespaceIdentity> ns = c->dev->IdentifyNamespace(nsid);
    if (!ns.ok()) return fail(absl::StrCat("identify namespace ", nsid), ns.status());
    absl::StatusOr<nvme::NamespaceIds> ids = c->dev->NamespaceIdDescriptors(nsid);
    nvme::NamespaceIds merged = ids.ok() ? *ids : nvme::NamespaceIds{};
    if (!merged.nguid) merged.nguid = ns->ids.nguid;
    if (!merged.eui64) merged.eui64 = ns->ids.eui64;
    NamespaceSpec spec;
    spec.controller = bdf;
    spec.nsid = nsid;
    spec.ids = merged;
    spec.ana_group_id = ns->ana_group_id;
    spec.size_blocks = ns->size_blocks;
    spec.block_size = ns->block_size;
    spec.max_transfer_bytes = max_transfer;
    spec.write_zeroes = (c->id.oncs & (1u << 3)) != 0;
    spec.deallocate = (c->id.oncs & (1u << 2)) != 0;
    spec.volatile_write_cache = c->id.volatile_write_cache;
    specs.push_back(spec);
    c->nsids.push_back(nsid);
    c->ns_ids.push_back(merged);
  }
  if (absl::Status s = c->dev->ConfigureAsyncEvents(c->id.ana_supported); !s.ok()) {
    Log(absl::StrCat(bdf, ": asynchronous event configuration: ", s.message()));
  }
  if (absl::Status s = c->dev->PostAsyncEventRequests(1); !s.ok()) return fail("AER", s);

  ControllerSpec cs;
  cs.name = bdf;
  cs.subsys_nqn = c->id.subsys_nqn;
  cs.transport = "pcie";
  cs.address = bdf;
  const std::string numa = ReadLine(fs::path(kPciDevices) / bdf / "numa_node");
  cs.numa_node = numa.empty() ? -1 : std::atoi(numa.c_str());
  cs.ana_supported = c->id.ana_supported;
  cs.anagrpmax = c->id.anagrpmax;
  cs.anatt_secs = c->id.anatt_secs;
  cs.crdt = c->id.crdt;
  cs.cqt_ms = c->id.cqt_ms;
  cs.state = ControllerState::kLive;
  std::vector<QueuePair*> qps(c->qps.begin(), c->qps.end());
  if (absl::Status s = mp_->AddController(cs, c.get(), qps); !s.ok()) return fail("add", s);
  for (const NamespaceSpec& spec : specs) {
    absl::StatusOr<std::string> head = mp_->AddPath(spec);
    if (!head.ok()) {
      // Reported as an event by the core; the controller's other namespaces still serve.
      Log(absl::StrCat(bdf, " nsid ", spec.nsid, ": ", head.status().ToString()));
    } else {
      Log(absl::StrCat(bdf, " nsid ", spec.nsid, " joined head ", *head));
    }
  }
  for (int fd : {c->admin_fd, c->release_fd}) {
    if (fd < 0) continue;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = c.get();
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  }
  Log(absl::StrFormat("%s: attached: %s cntlid %u, %zu namespace(s), %zu I/O queue(s) of %u, "
                      "max transfer %u",
                      bdf, c->id.subsys_nqn, c->id.cntlid, c->nsids.size(), c->qps.size(),
                      options_.queue_depth, max_transfer));
  ctrls_.push_back(std::move(c));
  return absl::OkStatus();
}

absl::Status VfioManager::Detach(const std::string& bdf, absl::string_view reason) {
  MutexLock l(&mu_);
  for (const auto& c : ctrls_) {
    if (c->bdf == bdf) {
      DetachLocked(c.get(), std::string(reason), false);
      return absl::OkStatus();
    }
  }
  return absl::NotFoundError(absl::StrCat(bdf, " is not attached"));
}

absl::Status VfioManager::RequestReset(const std::string& bdf) {
  MutexLock l(&mu_);
  for (const auto& c : ctrls_) {
    if (c->bdf != bdf) continue;
    if (c->resetting) return absl::FailedPreconditionError(absl::StrCat(bdf, " is already resetting"));
    StartReset(c.get(), "reset requested through the API");
    return absl::OkStatus();
  }
  return absl::NotFoundError(absl::StrCat(bdf, " is not attached through vfio"));
}

// The core takes the controller's queue pairs out of service; OnQuiesced, Fence and
// the rest follow on this thread (SEMANTICS "Fencing").
void VfioManager::DetachLocked(Ctrl* c, std::string reason, bool device_gone) {
  c->release_wanted |= device_gone;
  if (c->removing) return;
  Log(absl::StrCat(c->bdf, ": detaching: ", reason));
  for (int fd : {c->admin_fd, c->release_fd}) {
    if (fd >= 0) epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  }
  c->removing = true;
  for (VfioQueuePair* qp : c->qps) qp->MarkGone();
  (void)mp_->RemoveController(c->bdf, reason);
  auto it = std::find_if(ctrls_.begin(), ctrls_.end(), [c](const auto& p) { return p.get() == c; });
  retiring_.push_back(std::move(*it));
  ctrls_.erase(it);
}

void VfioManager::StartReset(Ctrl* c, std::string why) {
  if (c->resetting || c->removing) return;
  Log(absl::StrCat(c->bdf, ": resetting: ", why));
  c->resetting = true;
  (void)mp_->SetControllerState(c->bdf, ControllerState::kResetting, why);
  if (absl::Status s = mp_->QuiesceController(c->bdf); !s.ok()) {
    Log(absl::StrCat(c->bdf, ": reset: ", s.message()));
  }
}

// The core has the controller's queue pairs out of service: fence it, so that nothing
// it was given can still run once its commands are handed back.
void VfioManager::Fence(Ctrl* c) {
  FenceRequest r;
  r.release = c->release_wanted;
  r.shutdown_notify = c->stopping;
  std::string detail;
  const FenceOutcome o = FenceAndReport(*mp_, c->bdf, *c, r, &detail);
  Log(absl::StrCat(c->bdf, ": fenced (", FenceOutcomeName(o), "): ", detail,
                   c->id.cqt_ms ? absl::StrCat("; CQT ", c->id.cqt_ms, " ms") : ""));
  if (o == FenceOutcome::kReleased && !c->removing) {
    DetachLocked(c, absl::StrCat("controller lost during reset: ", detail), true);
  }
}

// The controller's commands went back to their heads: bring it up again.
void VfioManager::FinishReset(Ctrl* c) {
  auto fail = [&](absl::string_view step, const absl::Status& s) {
    mu_.AssertHeld();  // called only below, under the lock
    DetachLocked(c, absl::StrCat("reset failed: ", step, ": ", s.message()),
                 s.code() == absl::StatusCode::kUnavailable);
  };
  // No worker touches the queues while they are out of service.
  for (VfioQueuePair* qp : c->qps) qp->ResetRings();
  if (absl::Status s = c->dev->device().EnableBusMaster(); !s.ok()) return fail("PCI command", s);
  if (absl::Status s = c->dev->Enable(); !s.ok()) return fail("enable", s);
  absl::StatusOr<uint16_t> granted = c->dev->SetNumberOfQueues(static_cast<uint16_t>(workers_.size()));
  if (!granted.ok()) return fail("set number of queues", granted.status());
  if (absl::Status s = c->dev->RecreateIoQueues(); !s.ok()) return fail("I/O queues", s);
  CheckNamespacesAfterReset(c);
  (void)c->dev->ConfigureAsyncEvents(c->id.ana_supported);
  (void)c->dev->PostAsyncEventRequests(1);
  c->resetting = false;
  (void)mp_->ResumeController(c->bdf);
  (void)mp_->SetControllerState(c->bdf, ControllerState::kLive, "reset done");
  if (c->id.ana_supported) ReadAnaLog(c);
  Log(absl::StrCat(c->bdf, ": reset done"));
}

// The namespaces must still be the ones the paths were made for.
void VfioManager::CheckNamespacesAfterReset(Ctrl* c) {
  for (size_t i = 0; i < c->nsids.size(); ++i) {
    absl::StatusOr<nvme::NamespaceIds> ids = c->dev->NamespaceIdDescriptors(c->nsids[i]);
    absl::StatusOr<nvme::NamespaceIdentity> ns = c->dev->IdentifyNamespace(c->nsids[i]);
    if (!ids.ok() || !ns.ok()) {
      (void)mp_->RemovePath(c->bdf, c->nsids[i], "namespace gone after reset");
      continue;
    }
    nvme::NamespaceIds merged = *ids;
    if (!merged.nguid) merged.nguid = ns->ids.nguid;
    if (!merged.eui64) merged.eui64 = ns->ids.eui64;
    if (!(merged == c->ns_ids[i])) {
      (void)mp_->RemovePath(c->bdf, c->nsids[i],
                            absl::StrCat("namespace identity changed across reset: was ",
                                         c->ns_ids[i].ToString(), ", now ", merged.ToString()));
    }
  }
}

void VfioManager::ReadAnaLog(Ctrl* c) {
  absl::StatusOr<std::vector<uint8_t>> log =
      c->dev->GetLogPage(0x0c, 8192, /*rae=*/false);
  if (!log.ok()) {
    Log(absl::StrCat(c->bdf, ": ANA log: ", log.status().message()));
    return;
  }
  (void)mp_->OnAnaLog(c->bdf, *log);
}

void VfioManager::HandleEvents(Ctrl* c) {
  for (const AsyncEvent& e : c->dev->TakeAsyncEvents()) {
    Log(absl::StrFormat("%s: asynchronous event type %u info 0x%02x log 0x%02x", c->bdf, e.type,
                        e.info, e.log_page));
    if (e.ana_change() && c->id.ana_supported) ReadAnaLog(c);
  }
}

void VfioManager::CheckHealth() {
  std::vector<Ctrl*> all;
  for (const auto& c : ctrls_) all.push_back(c.get());
  for (Ctrl* c : all) {
    if (c->resetting || c->removing) continue;
    const uint32_t csts = c->dev->ReadCsts();
    if (csts == regs::kCstsGone) {
      DetachLocked(c, "the device is gone (registers read all ones)", true);
    } else if (csts & regs::kCstsCfs) {
      StartReset(c, "controller fatal status (CSTS.CFS)");
    }
  }
}

void VfioManager::Service() {
  // Fence steps first, for every controller, the removed ones too.
  std::vector<Ctrl*> all;
  for (const auto& c : ctrls_) all.push_back(c.get());
  for (const auto& c : retiring_) all.push_back(c.get());
  for (Ctrl* c : all) {
    if (c->quiesced.exchange(false)) Fence(c);
    if (c->handed_back.exchange(false) && !c->removing) FinishReset(c);
  }
  // Queue pairs released after a detach: the controller can go.
  retiring_.erase(std::remove_if(retiring_.begin(), retiring_.end(),
                                 [](const auto& c) { return c->released.load(); }),
                  retiring_.end());
  all.clear();
  for (const auto& c : ctrls_) all.push_back(c.get());
  for (Ctrl* c : all) {
    if (c->resetting) continue;
    if (c->reset_requested.exchange(false)) {
      bool timed_out = false;
      for (VfioQueuePair* qp : c->qps) timed_out |= qp->timed_out();
      StartReset(c, timed_out ? "I/O command timeout" : "reset requested");
      continue;
    }
    if (c->release_fd >= 0) {
      uint64_t v = 0;
      if (read(c->release_fd, &v, sizeof v) == sizeof v && v > 0) {
        // Fenced, then released, before anything it held runs elsewhere.
        DetachLocked(c, "hot-unplug: the kernel asked for the device back", true);
        continue;
      }
    }
    if (c->admin_fd >= 0) {
      uint64_t v;
      [[maybe_unused]] ssize_t r = read(c->admin_fd, &v, sizeof v);
    }
    HandleEvents(c);
    if (c->ana_requested.exchange(false) && c->id.ana_supported) ReadAnaLog(c);
  }
}

void VfioManager::Loop() {
  auto next_health = std::chrono::steady_clock::now();
  std::optional<std::chrono::steady_clock::time_point> stop_deadline;
  bool uevents = false;
  for (;;) {
    if (stop_.load() && !stop_deadline) {
      // One shutdown path: every controller is detached and fenced like any other
      // (a normal shutdown notification first), then the loop ends.
      MutexLock l(&mu_);
      uint16_t cqt_ms = 0;
      for (const auto& c : ctrls_) cqt_ms = std::max(cqt_ms, c->id.cqt_ms);
      stop_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10) +
                      std::chrono::milliseconds(cqt_ms);
      while (!ctrls_.empty()) {
        ctrls_.front()->stopping = true;
        DetachLocked(ctrls_.front().get(), "agent stopping", false);
      }
    }
    if (stop_deadline) {
      MutexLock l(&mu_);
      if (retiring_.empty() || std::chrono::steady_clock::now() > *stop_deadline) break;
    }
    epoll_event evs[16];
    const bool health = options_.health_interval_ms > 0 && !stop_deadline;
    const int timeout = stop_deadline ? 10 : health ? options_.health_interval_ms : -1;
    const int n = epoll_wait(epoll_fd_, evs, 16, timeout);
    for (int i = 0; i < n; ++i) {
      if (evs[i].data.ptr == nullptr) {
        uint64_t v;
        [[maybe_unused]] ssize_t r = read(wake_fd_, &v, sizeof v);
      } else if (evs[i].data.ptr == &uevent_fd_) {
        uevents = true;
      }
    }
    MutexLock l(&mu_);
    if (uevents) {
      ReadUevents();
      uevents = false;
    }
    Service();
    if (rescan_ && !stop_deadline) {
      // A new function's driver settles in steps (add, then bind): look again on each.
      rescan_ = false;
      Rescan();
    }
    if (health && std::chrono::steady_clock::now() >= next_health) {
      next_health = std::chrono::steady_clock::now() +
                    std::chrono::milliseconds(options_.health_interval_ms);
      CheckHealth();
    }
  }
}

void VfioManager::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void VfioManager::Stop() {
  if (stop_.exchange(true)) return;
  Wake();
  if (thread_.joinable()) {
    thread_.join();
  } else {
    Loop();  // never started: the same shutdown, on this thread
  }
  MutexLock l(&mu_);
  if (!retiring_.empty()) {
    // A worker may still hold their queue pairs: they are left to the process's exit
    // rather than freed under it.
    Log(absl::StrCat(retiring_.size(), " controller(s) not let go in time; left as they are"));
    for (auto& c : retiring_) (void)c.release();
    retiring_.clear();
  }
}

absl::StatusOr<std::unique_ptr<DmaBuffer>> VfioManager::AllocateIoBuffer(uint64_t len) {
  MutexLock l(&mu_);
  absl::StatusOr<std::unique_ptr<DmaBuffer>> b = DmaBuffer::Create(container_.get(), len);
  if (!b.ok()) return b.status();
  if (absl::Status s = registry_.Add((*b)->host(), (*b)->size(), (*b)->iova()); !s.ok()) return s;
  (*b)->set_registry(&registry_);
  return b;
}

}  // namespace umpath::vfio
