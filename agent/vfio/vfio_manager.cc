#include "agent/vfio/vfio_manager.h"

#include <fcntl.h>
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

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent/base/error_reason.h"
#include "agent/base/files.h"
#include "agent/base/uevent.h"
#include "agent/vfio/fence.h"
#include "agent/vfio/regs.h"

namespace umpath::vfio {

namespace fs = std::filesystem;

namespace {

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

bool IsPciAddress(absl::string_view bdf) {
  // DDDD:BB:DD.F in hex: domain, bus, device (0..1f), function (0..7).
  if (bdf.size() != 12 || bdf[4] != ':' || bdf[7] != ':' || bdf[10] != '.') return false;
  for (size_t i : {0, 1, 2, 3, 5, 6, 8, 9, 11}) {
    if (!std::isxdigit(static_cast<unsigned char>(bdf[i]))) return false;
  }
  return bdf[8] <= '1' && bdf[11] <= '7';
}

std::vector<std::string> ListNvmeFunctions(const std::string& sysfs_root) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(sysfs_root) / "bus/pci/devices", ec)) {
    if (FirstLine(e.path() / "class") == kNvmeClass) out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

absl::Status CheckNvmeFunction(const std::string& bdf, const std::string& sysfs_root) {
  if (!IsPciAddress(bdf)) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", bdf, "\" is not a PCI address (DDDD:BB:DD.F, hexadecimal)"));
  }
  const fs::path dev = fs::path(sysfs_root) / "bus/pci/devices" / bdf;
  std::error_code ec;
  if (!fs::exists(dev, ec)) return absl::NotFoundError(absl::StrCat("no PCI device ", bdf));
  const std::string cls = FirstLine(dev / "class");
  if (cls != kNvmeClass) {
    return absl::FailedPreconditionError(absl::StrCat(
        bdf, " is not an NVMe controller (PCI class ", cls.empty() ? "unknown" : cls,
        ", not ", kNvmeClass, "); it is left with its driver"));
  }
  return absl::OkStatus();
}

absl::Status CheckAttachable(const std::string& bdf, const std::vector<std::string>& devices,
                             const std::vector<std::string>& attachable) {
  if (!IsPciAddress(bdf)) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", absl::CHexEscape(bdf.substr(0, 64)), "\" is not a PCI address (DDDD:BB:DD.F, hexadecimal)"));
  }
  for (const auto* list : {&devices, &attachable}) {
    for (const std::string& d : *list) {
      if (d == "all" || absl::AsciiStrToLower(d) == absl::AsciiStrToLower(bdf)) return absl::OkStatus();
    }
  }
  return absl::FailedPreconditionError(absl::StrCat(
      bdf, " is not one of this agent's functions (--vfio_devices, --vfio_attachable); it is "
      "left with its driver"));
}

absl::Status PrepareFunction(const std::string& bdf, const VfioManagerOptions& options) {
  if (absl::Status s = CheckAttachable(bdf, options.devices, options.attachable); !s.ok()) return s;
  return options.bind ? BindToVfio(bdf, options.sysfs_root) : CheckNvmeFunction(bdf, options.sysfs_root);
}

absl::Status BindToVfio(const std::string& bdf, const std::string& sysfs_root) {
  // Nothing is unbound before the address is known to name an NVMe function.
  if (absl::Status s = CheckNvmeFunction(bdf, sysfs_root); !s.ok()) return s;
  const fs::path dev = fs::path(sysfs_root) / "bus/pci/devices" / bdf;
  std::error_code ec;
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
    (void)WriteSysfs(fs::path(sysfs_root) / "bus/pci/drivers_probe", bdf);  // fails while a probe is running
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

// One claimed controller, as a driver below the supervisor: its device, its queue pairs
// (one per worker), its namespaces. Control thread only.
struct VfioManager::Ctrl final : ControllerDriver, FenceOps {
  VfioManager* mgr = nullptr;
  std::string bdf;
  std::unique_ptr<VfioController> dev;
  nvme::ControllerIdentity id;
  std::vector<VfioQueuePair*> qps;
  std::vector<uint32_t> nsids;
  std::vector<nvme::NamespaceIds> ns_ids;  // parallel to nsids
  int admin_fd = -1;
  int release_fd = -1;
  uint32_t max_transfer = 0;  // bytes: MDTS, capped
  bool watched = false;
  bool fenced = false;

  ~Ctrl() override {
    Unwatch();
    // One that never reached the supervisor's fence (a bring-up that failed half way)
    // runs nothing once it goes.
    if (!fenced && dev && !dev->released()) (void)dev->Disable();
    MutexLock l(&mgr->dma_mu_);  // its DMA memory is unmapped from the shared container
    dev.reset();
  }
  void Unwatch() {
    if (!watched) return;
    for (int fd : {admin_fd, release_fd}) {
      if (fd >= 0) mgr->plane_->Unwatch(fd);
    }
    watched = false;
  }

  // ControllerDriver.
  ResetKind reset_kind() const override { return ResetKind::kFenceAndRecover; }
  FenceResult Fence(const FenceAsk& ask) override {
    if (ask.hand_over && mgr->outgoing_ && Idle()) {
      mgr->HandOverOne(this);
      fenced = true;  // nothing of it runs here any more, and nothing was in flight
      Log(absl::StrCat(bdf, ": handed over to the successor (nothing in flight)"));
      return {false, "handed over to the successor, nothing in flight"};
    }
    FenceResult r = FenceForSupervisor(*this, ask);
    fenced = true;
    Log(absl::StrCat(bdf, ": fenced (", r.detail, ")"));
    return r;
  }
  absl::Status Recover() override;
  void ReadAnaLog() override {
    if (!id.ana_supported) return;
    // Its full size from its own fields (a fixed 8 KiB rejected every log of more than
    // about 2,036 NSIDs), bounded by its largest transfer: a log that lists more than
    // that holds is rejected by the parser as overrunning what was read.
    const uint64_t full = nvme::AnaLogBytes(id);
    const auto len = static_cast<uint32_t>(std::min<uint64_t>(
        {full, max_transfer == 0 ? 8192 : max_transfer, VfioController::kMaxLogBytes}));
    absl::StatusOr<std::vector<uint8_t>> log = dev->GetLogPage(0x0c, len, /*rae=*/false);
    if (!log.ok()) {
      Log(absl::StrCat(bdf, ": ANA log: ", log.status().message()));
      return;
    }
    if (absl::Status s = mgr->mp_->OnAnaLog(bdf, *log); !s.ok()) {
      Log(absl::StrCat(bdf, ": ANA log of ", len, " B (of ", full, " B its fields allow) rejected: ",
                       s.message()));
    }
  }
  HealthCheck CheckHealth() override {
    const uint32_t csts = dev->ReadCsts();
    if (csts == regs::kCstsGone) return {HealthCheck::kGone, "the device is gone (registers read all ones)"};
    if (csts & regs::kCstsCfs) return {HealthCheck::kFatal, "controller fatal status (CSTS.CFS)"};
    return {};
  }
  // No command in flight on any of its queues, and the device still there (after the
  // quiesce: no worker uses the queues, so their counts are settled).
  bool Idle() const {
    if (dev->released() || dev->ReadCsts() == regs::kCstsGone) return false;
    for (VfioQueuePair* qp : qps) {
      if (qp->outstanding() != 0) return false;
    }
    return true;
  }
  void OnDetach(bool) override {
    Unwatch();
    for (VfioQueuePair* qp : qps) qp->MarkGone();
  }

  // Events of its own, on the control thread.
  void OnAdminInterrupt() {
    uint64_t v;
    [[maybe_unused]] ssize_t r = read(admin_fd, &v, sizeof v);
    for (const AsyncEvent& e : dev->TakeAsyncEvents()) {
      Log(absl::StrFormat("%s: asynchronous event type %u info 0x%02x log 0x%02x", bdf, e.type,
                          e.info, e.log_page));
      if (e.ana_change()) ReadAnaLog();
    }
  }
  void OnReleaseRequest() {
    uint64_t v = 0;
    if (read(release_fd, &v, sizeof v) != sizeof v || v == 0) return;
    // Fenced, then released, before anything it held runs elsewhere.
    (void)mgr->sup_->Detach(bdf, "hot-unplug: the kernel asked for the device back",
                            /*device_gone=*/true);
  }
  // The namespaces must still be the ones the paths were made for.
  void CheckNamespaces();

  // FenceOps, over the device.
  bool Gone() override { return dev->released() || dev->ReadCsts() == regs::kCstsGone; }
  bool Fatal() override { return (dev->ReadCsts() & regs::kCstsCfs) != 0; }
  absl::Status DeleteIoQueues() override { return dev->DeleteIoQueues(kQuiesceTimeoutMs); }
  absl::Status ShutdownNotify() override { return dev->ShutdownNotify(2000); }
  absl::Status Disable() override { return dev->Disable(); }
  absl::Status ClearBusMaster() override { return dev->device().ClearBusMaster(); }
  absl::Status ResetFunction() override { return dev->device().ResetFunction(); }
  void Release() override { dev->ReleaseDevice(); }
};

// The controller's commands went back to their heads: bring it up again.
absl::Status VfioManager::Ctrl::Recover() {
  auto step = [](absl::string_view what, const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat(what, ": ", s.message()));
  };
  // No worker touches the queues while they are out of service.
  for (VfioQueuePair* qp : qps) qp->ResetRings();
  if (absl::Status s = dev->device().EnableBusMaster(); !s.ok()) return step("PCI command", s);
  if (absl::Status s = dev->Enable(); !s.ok()) return step("enable", s);
  absl::StatusOr<uint16_t> granted =
      dev->SetNumberOfQueues(static_cast<uint16_t>(mgr->workers_.size()));
  if (!granted.ok()) return step("set number of queues", granted.status());
  {
    MutexLock l(&mgr->dma_mu_);
    if (absl::Status s = dev->RecreateIoQueues(); !s.ok()) return step("I/O queues", s);
  }
  CheckNamespaces();
  (void)dev->ConfigureAsyncEvents(id.ana_supported);
  (void)dev->PostAsyncEventRequests(1);
  Log(absl::StrCat(bdf, ": reset done"));
  return absl::OkStatus();
}

void VfioManager::Ctrl::CheckNamespaces() {
  for (size_t i = 0; i < nsids.size(); ++i) {
    absl::StatusOr<NamespaceSpec> now = mgr->IdentifyPath(this, nsids[i]);
    if (!now.ok()) {
      (void)mgr->mp_->RemovePath(bdf, nsids[i], "namespace gone after reset");
    } else if (!(now->ids == ns_ids[i])) {
      (void)mgr->mp_->RemovePath(bdf, nsids[i],
                                 absl::StrCat("namespace identity changed across reset: was ",
                                              ns_ids[i].ToString(), ", now ", now->ids.ToString()));
    }
  }
}

absl::StatusOr<std::unique_ptr<VfioManager>> VfioManager::Create(Multipath* mp, ControlPlane* plane,
                                                                 ControllerSupervisor* sup,
                                                                 std::vector<Worker*> workers,
                                                                 VfioManagerOptions options,
                                                                 std::unique_ptr<HandOverPackage> incoming) {
  if (workers.empty()) return absl::InvalidArgumentError("no workers");
  if (workers.size() > 64) return absl::InvalidArgumentError("at most 64 workers over vfio");
  if (options.queue_depth < 2 || options.queue_depth > 4096) {
    return absl::InvalidArgumentError("queue depth must be 2..4096");
  }
  if (incoming == nullptr) {
    absl::StatusOr<std::unique_ptr<VfioContainer>> container = VfioContainer::Open();
    if (!container.ok()) return container.status();
    return std::unique_ptr<VfioManager>(new VfioManager(mp, plane, sup, std::move(workers),
                                                        std::move(options), std::move(*container)));
  }
  const handover::State& st = incoming->state;
  absl::StatusOr<std::unique_ptr<VfioContainer>> container =
      VfioContainer::Adopt(incoming->fds[st.container_fd].release());
  if (!container.ok()) return container.status();
  std::unique_ptr<VfioManager> m(new VfioManager(mp, plane, sup, std::move(workers), std::move(options),
                                                 std::move(*container)));
  MutexLock l(&m->dma_mu_);
  m->incoming_memory_.resize(st.mappings.size());
  for (size_t i = 0; i < st.mappings.size(); ++i) {
    const handover::MappingState& ms = st.mappings[i];
    if (ms.fd < 0) {
      // The predecessor's buffers for its block devices: this agent makes its own.
      if (absl::Status s = m->container_->DropMapping(ms.iova, ms.len); !s.ok()) {
        Log(absl::StrCat("hand-over: unmapping IOVA ", ms.iova, ": ", s.message()));
      }
      continue;
    }
    absl::StatusOr<std::unique_ptr<DmaBuffer>> b =
        DmaBuffer::Adopt(m->container_.get(), incoming->fds[ms.fd].release(), ms.iova, ms.len);
    if (!b.ok()) return absl::Status(b.status().code(), absl::StrCat("hand-over: ", b.status().message()));
    m->incoming_memory_[i] = std::move(*b);
  }
  m->incoming_ = std::move(incoming);
  return m;
}

VfioManager::VfioManager(Multipath* mp, ControlPlane* plane, ControllerSupervisor* sup,
                         std::vector<Worker*> workers, VfioManagerOptions options,
                         std::unique_ptr<VfioContainer> container)
    : mp_(mp),
      plane_(plane),
      sup_(sup),
      workers_(std::move(workers)),
      options_(std::move(options)),
      container_(std::move(container)) {}

VfioManager::~VfioManager() {
  if (uevent_fd_ >= 0) {
    plane_->Unwatch(uevent_fd_);
    close(uevent_fd_);
  }
}

void VfioManager::Start() {
  // Kernel uevents: a function that appears (hot-add) is claimed without a restart.
  absl::StatusOr<int> ue = options_.uevents ? options_.uevents() : OpenUeventSocket();
  if (!ue.ok()) {
    Log(absl::StrCat("no kernel uevents (", ue.status().message(),
                     "): functions that appear later are not claimed"));
    return;
  }
  uevent_fd_ = *ue;
  (void)plane_->Watch(uevent_fd_, [this] {
    bool rescan = false;
    // PCI functions that appear or change driver; a new function's driver settles in
    // steps (add, then bind): look again on each.
    umpath::ReadUevents(uevent_fd_, [&rescan](const Uevent& e) {
      if (e.Has("SUBSYSTEM=pci") && (e.Has("ACTION=add") || e.Has("ACTION=bind"))) rescan = true;
    });
    if (rescan) Rescan();
  });
}

std::vector<std::string> VfioManager::ConfiguredDevices() const {
  std::vector<std::string> bdfs;
  for (const std::string& d : options_.devices) {
    if (d == "all") {
      for (const std::string& f : ListNvmeFunctions(options_.sysfs_root)) {
        std::error_code ec;
        const fs::path drv = fs::read_symlink(fs::path(PciDir(f)) / "driver", ec);
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
    if (sup_->Find(bdf) != nullptr) continue;  // adopted from the predecessor
    absl::Status s = Attach(bdf);
    if (!s.ok()) Log(absl::StrCat(bdf, ": not attached: ", s.ToString()));
    last_attempt_[bdf] = s.ToString();
    out.emplace_back(bdf, std::move(s));
  }
  return out;
}

void VfioManager::Rescan() {
  for (const std::string& bdf : ConfiguredDevices()) {
    std::error_code ec;
    if (sup_->Known(bdf) || !fs::exists(fs::path(PciDir(bdf)), ec)) continue;
    absl::Status s = Attach(bdf);
    std::string& last = last_attempt_[bdf];
    if (s.ok()) {
      Log(absl::StrCat(bdf, ": appeared and attached"));
    } else if (last != s.ToString()) {
      Log(absl::StrCat(bdf, ": appeared, not attached: ", s.ToString()));
    }
    last = s.ToString();
  }
}

bool VfioManager::Owns(const std::string& name) const {
  return name.find(':') != std::string::npos && sup_->Known(name);
}

absl::Status VfioManager::Attach(const std::string& bdf) {
  // Attaching what is attached is done (CSI's idempotency): the caller gets the
  // controller that is there.
  if (sup_->Find(bdf) != nullptr) return absl::OkStatus();
  // An address from a caller: a configured or allowed PCI address of an NVMe function.
  if (absl::Status s = PrepareFunction(bdf, options_); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<Ctrl>> made = BringUp(bdf);
  if (!made.ok()) return made.status();
  return Join(std::move(*made), "attached");
}

absl::Status VfioManager::Join(std::unique_ptr<Ctrl> c, absl::string_view how) {
  const std::string bdf = c->bdf;
  absl::StatusOr<std::vector<NamespaceSpec>> specs = Namespaces(c.get());
  auto fail = [&](absl::string_view step, const absl::Status& s) {
    (void)c->dev->Disable();  // nothing of a half-made controller keeps running
    return absl::Status(s.code(), absl::StrCat(bdf, ": ", step, ": ", s.message()));
  };
  if (!specs.ok()) return fail("namespaces", specs.status());
  if (absl::Status s = c->dev->ConfigureAsyncEvents(c->id.ana_supported); !s.ok()) {
    Log(absl::StrCat(bdf, ": asynchronous event configuration: ", s.message()));
  }
  // An adopted controller may still have the predecessor's request outstanding.
  if (c->dev->aers_outstanding() == 0) {
    if (absl::Status s = c->dev->PostAsyncEventRequests(1); !s.ok()) return fail("AER", s);
  }
  const ControllerSpec cs = SpecOf(*c);
  std::vector<QueuePair*> qps(c->qps.begin(), c->qps.end());
  Ctrl* raw = c.get();
  // Refused, the controller goes with it (disabled).
  if (absl::Status s = sup_->Add(std::move(c), cs, qps); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(bdf, ": add: ", s.message()));
  }
  for (const NamespaceSpec& spec : *specs) {
    absl::StatusOr<std::string> head = mp_->AddPath(spec);
    // Refused: reported as an event by the core; its other namespaces still serve.
    Log(absl::StrCat(bdf, " nsid ", spec.nsid, head.ok() ? " joined head " : ": ",
                     head.ok() ? *head : head.status().ToString()));
  }
  Watch(raw);
  Log(absl::StrFormat("%s: %s: %s cntlid %u, %zu namespace(s), %zu I/O queue(s) of %u, "
                      "max transfer %u",
                      bdf, how, raw->id.subsys_nqn, raw->id.cntlid, raw->nsids.size(), raw->qps.size(),
                      options_.queue_depth, raw->max_transfer));
  return absl::OkStatus();
}

// Enabled, identified, interrupts and one I/O queue pair per worker.
absl::StatusOr<std::unique_ptr<VfioManager::Ctrl>> VfioManager::BringUp(const std::string& bdf) {
  auto c = std::make_unique<Ctrl>();
  c->mgr = this;
  c->bdf = bdf;
  {
    MutexLock l(&dma_mu_);
    absl::StatusOr<std::unique_ptr<VfioController>> dev = VfioController::Open(container_.get(), bdf);
    if (!dev.ok()) return dev.status();
    c->dev = std::move(*dev);
  }
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
  c->max_transfer = regs::MaxTransferBytes(c->dev->cap(), c->id.mdts);
  if (absl::Status s = CreateQueues(c.get(), c->max_transfer); !s.ok()) return fail("I/O queues", s);
  return c;
}

IoQueueOptions VfioManager::QueueOptions(const Ctrl& c, uint16_t w) const {
  IoQueueOptions qo;
  qo.qid = static_cast<uint16_t>(w + 1);
  qo.depth = options_.queue_depth;
  qo.max_transfer = c.max_transfer;
  qo.timeout_ns = options_.io_timeout_ms * 1'000'000;
  qo.registry = &registry_;
  // A worker's thread: the reset is the control thread's.
  qo.on_timeout = [plane = plane_, sup = sup_, bdf = c.bdf] {
    plane->Post([sup, bdf] { (void)sup->Reset(bdf, "I/O command timeout"); });
  };
  return qo;
}

absl::Status VfioManager::CreateQueues(Ctrl* c, uint32_t max_transfer) {
  for (uint16_t w = 0; w < workers_.size(); ++w) {
    IoQueueOptions qo = QueueOptions(*c, w);
    qo.max_transfer = max_transfer;
    MutexLock l(&dma_mu_);
    absl::StatusOr<VfioQueuePair*> qp = c->dev->CreateIoQueue(std::move(qo));
    if (!qp.ok()) return absl::Status(qp.status().code(), absl::StrCat("queue ", w + 1, ": ", qp.status().message()));
    c->qps.push_back(*qp);
  }
  return absl::OkStatus();
}

// Identify Namespace and its identifiers, through the admin queue.
absl::StatusOr<NamespaceSpec> VfioManager::IdentifyPath(Ctrl* c, uint32_t nsid) {
  absl::StatusOr<nvme::NamespaceIdentity> ns = c->dev->IdentifyNamespace(nsid);
  if (!ns.ok()) {
    return absl::Status(ns.status().code(),
                        absl::StrCat("identify namespace ", nsid, ": ", ns.status().message()));
  }
  absl::StatusOr<nvme::NamespaceIds> ids = c->dev->NamespaceIdDescriptors(nsid);
  return PathSpecFromIdentify(c->bdf, nsid, *ns, ids.ok() ? std::optional(*ids) : std::nullopt,
                              c->id, c->max_transfer);
}

absl::StatusOr<std::vector<NamespaceSpec>> VfioManager::Namespaces(Ctrl* c) {
  absl::StatusOr<std::vector<uint32_t>> nsids = c->dev->ActiveNamespaces();
  if (!nsids.ok()) return nsids.status();
  std::vector<NamespaceSpec> specs;
  for (uint32_t nsid : *nsids) {
    absl::StatusOr<NamespaceSpec> spec = IdentifyPath(c, nsid);
    if (!spec.ok()) return spec.status();
    c->nsids.push_back(nsid);
    c->ns_ids.push_back(spec->ids);
    specs.push_back(*std::move(spec));
  }
  return specs;
}

ControllerSpec VfioManager::SpecOf(const Ctrl& c) const {
  ControllerSpec cs;
  cs.name = c.bdf;
  cs.subsys_nqn = c.id.subsys_nqn;
  cs.transport = "pcie";
  cs.address = c.bdf;
  const std::string numa = FirstLine(fs::path(PciDir(c.bdf)) / "numa_node");
  cs.numa_node = numa.empty() ? -1 : std::atoi(numa.c_str());
  cs.ana_supported = c.id.ana_supported;
  cs.anagrpmax = c.id.anagrpmax;
  cs.anatt_secs = c.id.anatt_secs;
  cs.crdt = c.id.crdt;
  cs.cqt_ms = c.id.cqt_ms;
  cs.state = ControllerState::kLive;
  return cs;
}

void VfioManager::Watch(Ctrl* c) {
  if (c->admin_fd >= 0) (void)plane_->Watch(c->admin_fd, [c] { c->OnAdminInterrupt(); });
  if (c->release_fd >= 0) (void)plane_->Watch(c->release_fd, [c] { c->OnReleaseRequest(); });
  c->watched = true;
}

std::vector<std::pair<std::string, absl::Status>> VfioManager::AdoptHandedOver() {
  std::vector<std::pair<std::string, absl::Status>> out;
  if (!incoming_) return out;
  for (const handover::ControllerState& cs : incoming_->state.controllers) {
    absl::Status s = Adopt(cs);
    if (!s.ok()) Log(absl::StrCat(cs.bdf, ": not adopted (it is brought up again): ", s.ToString()));
    out.emplace_back(cs.bdf, std::move(s));
  }
  // Memory no controller took is unmapped and freed with it.
  MutexLock l(&dma_mu_);
  incoming_memory_.clear();
  incoming_.reset();
  return out;
}

absl::Status VfioManager::Adopt(const handover::ControllerState& cs) {
  auto c = std::make_unique<Ctrl>();
  c->mgr = this;
  c->bdf = cs.bdf;
  {
    MutexLock l(&dma_mu_);
    absl::StatusOr<std::unique_ptr<VfioController>> dev =
        VfioController::Adopt(container_.get(), cs, incoming_->fds, incoming_memory_);
    if (!dev.ok()) return dev.status();
    c->dev = std::move(*dev);
  }
  auto fail = [&](absl::string_view step, const absl::Status& s) {
    (void)c->dev->Disable();  // brought up again by AttachConfigured
    return absl::Status(s.code(), absl::StrCat(cs.bdf, ": ", step, ": ", s.message()));
  };
  absl::StatusOr<nvme::ControllerIdentity> id = c->dev->IdentifyController();
  if (!id.ok()) return fail("identify controller", id.status());
  c->id = *id;
  c->max_transfer = regs::MaxTransferBytes(c->dev->cap(), c->id.mdts);
  if (c->max_transfer != cs.max_transfer) {
    return fail("adopt", absl::FailedPreconditionError(absl::StrCat(
                             "its queues were made for transfers of ", cs.max_transfer, " B, now ", c->max_transfer)));
  }
  const uint16_t nworkers = static_cast<uint16_t>(workers_.size());
  // New descriptors for its vectors: the predecessor's went with it.
  if (absl::Status s = c->dev->EnableInterrupts(nworkers); !s.ok()) return fail("MSI-X", s);
  if (absl::StatusOr<int> rel = c->dev->EnableReleaseRequest(); rel.ok()) c->release_fd = *rel;
  c->admin_fd = c->dev->vector_fd(0);
  for (uint16_t w = 0; w < nworkers; ++w) {
    const handover::QueueState* qs = nullptr;
    for (const handover::QueueState& q : cs.queues) {
      if (q.qid == w + 1) qs = &q;
    }
    if (qs == nullptr) return fail("adopt", absl::FailedPreconditionError(absl::StrCat("no queue ", w + 1, " for worker ", w)));
    MutexLock l(&dma_mu_);
    absl::StatusOr<VfioQueuePair*> qp =
        c->dev->AdoptIoQueue(QueueOptions(*c, w), *qs, std::move(incoming_memory_[qs->memory]));
    if (!qp.ok()) return fail(absl::StrCat("queue ", w + 1), qp.status());
    c->qps.push_back(*qp);
  }
  return Join(std::move(c), "adopted from the predecessor, running");
}

void VfioManager::BeginHandOver() {
  outgoing_ = std::make_unique<HandOverPackage>();
  MutexLock l(&dma_mu_);
  outgoing_->state.container_fd = 0;
  outgoing_->fds.emplace_back(fcntl(container_->fd(), F_DUPFD_CLOEXEC, 0));
  for (const auto& [iova, len] : container_->Mappings()) outgoing_->state.mappings.push_back({iova, len, -1});
}

void VfioManager::HandOverOne(Ctrl* c) {
  // The controller names its descriptors by their place among the package's; they are
  // copies, so they outlive the controller's own.
  std::vector<int> raw(outgoing_->fds.size(), -1);
  handover::ControllerState cs = c->dev->HandOver(&outgoing_->state, &raw);
  for (size_t i = outgoing_->fds.size(); i < raw.size(); ++i) {
    outgoing_->fds.emplace_back(fcntl(raw[i], F_DUPFD_CLOEXEC, 0));
  }
  cs.max_transfer = c->max_transfer;
  outgoing_->state.controllers.push_back(std::move(cs));
}

std::unique_ptr<HandOverPackage> VfioManager::TakeHandOver() {
  if (!outgoing_ || outgoing_->state.controllers.empty()) {
    outgoing_.reset();
    return nullptr;
  }
  return std::move(outgoing_);
}

absl::StatusOr<std::unique_ptr<DmaBuffer>> VfioManager::AllocateIoBuffer(uint64_t len) {
  MutexLock l(&dma_mu_);
  absl::StatusOr<std::unique_ptr<DmaBuffer>> b = DmaBuffer::Create(container_.get(), len);
  if (!b.ok()) return b.status();
  if (absl::Status s = registry_.Add((*b)->host(), (*b)->size(), (*b)->iova()); !s.ok()) return s;
  (*b)->set_registry(&registry_);
  return b;
}

}  // namespace umpath::vfio
