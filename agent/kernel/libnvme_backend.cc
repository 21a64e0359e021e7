#include "agent/kernel/libnvme_backend.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>

extern "C" {
#include <libnvme.h>
}

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "agent/base/uevent.h"
#include "agent/kernel/uring_queue_pair.h"
#include "agent/nvme/identify.h"
#include "agent/nvme/status.h"

namespace umpath::kernel {

namespace {

std::string S(const char* s) { return s ? s : ""; }

bool ReadFirstLine(const std::string& path, std::string* out) {
  std::ifstream in(path);
  if (!in) return false;
  std::getline(in, *out);
  return true;
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// libnvme's admin calls answer an NVMe status (> 0) or -1 with errno.
std::string AdminError(int r) {
  if (r > 0) return nvme::StatusToString(nvme::Status::FromCompletionField(static_cast<uint16_t>(r)));
  return std::strerror(errno);
}

bool IsControllerName(absl::string_view s) {
  if (!absl::ConsumePrefix(&s, "nvme") || s.empty()) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

bool KernelMultipathEnabled() {
  std::string v;
  return ReadFirstLine("/sys/module/nvme_core/parameters/multipath", &v) && v == "Y";
}

constexpr const char* kMultipathOn =
    "the kernel's native NVMe multipath is on (nvme_core.multipath=Y): its namespaces are "
    "the kernel's heads, not paths; boot with nvme_core.multipath=N";

// One controller as the kernel's topology shows it.
struct LibnvmeBackend::Scanned {
  std::string name, transport, address, subsys_nqn, state;
  int numa = -1;
  std::vector<std::pair<uint32_t, std::string>> namespaces;  // nsid, nvmeXnY
};

// One claimed controller: its admin fd, its namespaces' generic devices, one ring per
// worker, and what the core asks of it.
struct LibnvmeBackend::Ctrl final : ControllerBackend {
  LibnvmeBackend* be = nullptr;
  std::string name, transport, address, subsys_nqn;
  int admin_fd = -1;
  nvme::ControllerIdentity id;
  ControllerState state = ControllerState::kLive;
  std::shared_ptr<ControllerSignals> signals = std::make_shared<ControllerSignals>();
  struct Ns {
    uint32_t nsid = 0;
    std::string name;  // nvmeXnY
    int fd = -1;       // /dev/ngXnY
  };
  std::vector<Ns> namespaces;
  std::vector<std::unique_ptr<UringQueuePair>> qps;  // by worker
  std::atomic<bool> ana_requested{false};
  std::atomic<bool> reset_requested{false};
  std::atomic<bool> released{false};

  ~Ctrl() override {
    qps.clear();  // the rings go before the files they name
    for (const Ns& n : namespaces) close(n.fd);
    if (admin_fd >= 0) close(admin_fd);
  }
  bool fabrics() const { return transport != "pcie"; }
  void RequestAnaLog() override {
    ana_requested = true;
    be->Wake();
  }
  void Reset() override {
    reset_requested = true;
    be->Wake();
  }
  // The kernel owns what it was given: nothing to fence. The workers hand back only
  // what the kernel has returned and keep polling for the rest before they let go.
  void OnQuiesced() override { (void)be->mp_->ControllerFenced(name); }
  void OnHandedBack() override {}  // never quiesced but to be removed
  void OnQueuePairsReleased() override {
    released = true;
    be->Wake();
  }
};

// libnvme's own tree scan (nvme_scan_topology) opens every namespace's block device on
// the node and sends it Identify (1.3: tree.c nvme_ns_open -> nvme_ns_init), on every
// rescan: intrusive on a production node, and it blocks or fails on a controller that
// is reconnecting. The same facts come from sysfs with libnvme's directory filters,
// touching no device; Identify goes only to the controllers this agent claims.
std::vector<LibnvmeBackend::Scanned> LibnvmeBackend::ScanTopology() {
  std::vector<Scanned> out;
  dirent** ctrls = nullptr;
  const int n = nvme_scan_ctrls(&ctrls);
  for (int i = 0; i < n; ++i) {
    Scanned sc;
    sc.name = ctrls[i]->d_name;
    const std::string dir = absl::StrCat("/sys/class/nvme/", sc.name);
    // A controller that is going away as it is read is simply not there.
    if (!ReadFirstLine(dir + "/state", &sc.state)) continue;
    ReadFirstLine(dir + "/transport", &sc.transport);
    ReadFirstLine(dir + "/address", &sc.address);
    ReadFirstLine(dir + "/subsysnqn", &sc.subsys_nqn);
    std::string numa;
    int node = -1;
    if (ReadFirstLine(dir + "/numa_node", &numa) && absl::SimpleAtoi(numa, &node)) sc.numa = node;
    dirent** ns = nullptr;
    const int m = scandir(dir.c_str(), &ns, nvme_namespace_filter, alphasort);
    for (int j = 0; j < m; ++j) {
      std::string text;
      uint32_t nsid = 0;
      if (ReadFirstLine(absl::StrCat(dir, "/", ns[j]->d_name, "/nsid"), &text) &&
          absl::SimpleAtoi(text, &nsid) && nsid != 0) {
        sc.namespaces.emplace_back(nsid, ns[j]->d_name);
      }
      free(ns[j]);
    }
    if (m > 0) free(ns);
    out.push_back(std::move(sc));
  }
  for (int i = 0; i < n; ++i) free(ctrls[i]);
  if (n > 0) free(ctrls);
  return out;
}

absl::StatusOr<std::unique_ptr<LibnvmeBackend>> LibnvmeBackend::Create(
    Multipath* mp, std::vector<Worker*> workers, LibnvmeBackendOptions options) {
  if (workers.empty()) return absl::InvalidArgumentError("no workers");
  if (options.queue_depth < 2 || options.queue_depth > 4096) {
    return absl::InvalidArgumentError("queue depth must be 2..4096");
  }
  if (options.poll_ms < 10) return absl::InvalidArgumentError("the poll interval is at least 10 ms");
  for (const std::string& c : options.claims) {
    if (!IsControllerName(c) && !IsValidNqn(c)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "\"", c, "\" is neither a controller name (nvme3) nor a subsystem NQN"));
    }
  }
  if ((!options.claims.empty() || !options.connect.empty()) && KernelMultipathEnabled()) {
    return absl::FailedPreconditionError(kMultipathOn);
  }
  const int wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  if (wake < 0 || ep < 0) return absl::ErrnoToStatus(errno, "eventfd/epoll");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake;
  epoll_ctl(ep, EPOLL_CTL_ADD, wake, &ev);
  std::unique_ptr<LibnvmeBackend> b(
      new LibnvmeBackend(mp, std::move(workers), std::move(options), wake, ep));
  // Kernel uevents: controllers and namespaces that come and go.
  if (absl::StatusOr<int> ue = OpenUeventSocket(); ue.ok()) {
    b->uevent_fd_ = *ue;
    epoll_event uev{};
    uev.events = EPOLLIN;
    uev.data.fd = *ue;
    epoll_ctl(ep, EPOLL_CTL_ADD, *ue, &uev);
  } else {
    b->Log(absl::StrCat("no kernel uevents (", ue.status().message(),
                        "): new controllers are found by the periodic rescan only"));
  }
  return b;
}

LibnvmeBackend::LibnvmeBackend(Multipath* mp, std::vector<Worker*> workers,
                               LibnvmeBackendOptions options, int wake_fd, int epoll_fd)
    : mp_(mp), workers_(std::move(workers)), options_(std::move(options)), wake_fd_(wake_fd),
      epoll_fd_(epoll_fd) {}

LibnvmeBackend::~LibnvmeBackend() {
  Stop();
  if (uevent_fd_ >= 0) close(uevent_fd_);
  close(epoll_fd_);
  close(wake_fd_);
}

void LibnvmeBackend::Log(const std::string& line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::fprintf(stderr, "umpath-kernel: %s\n", line.c_str());
  }
}

bool LibnvmeBackend::Changed(const std::string& key, const std::string& outcome) {
  std::string& last = last_attempt_[key];
  if (last == outcome) return false;
  last = outcome;
  return true;
}

void LibnvmeBackend::Wake() {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof one);
}

LibnvmeBackend::Ctrl* LibnvmeBackend::Find(absl::string_view name) const {
  for (const auto& c : ctrls_) {
    if (c->name == name) return c.get();
  }
  return nullptr;
}

bool LibnvmeBackend::Owns(const std::string& name) const {
  MutexLock l(&mu_);
  return Find(name) != nullptr;
}

bool LibnvmeBackend::Wanted(const Scanned& sc) const {
  for (const std::string& c : options_.claims) {
    if (c == sc.name || c == sc.subsys_nqn) return true;
  }
  for (const ConnectSpec& spec : options_.connect) {
    if (MatchesConnectSpec(sc.transport, sc.address, sc.subsys_nqn, spec)) return true;
  }
  return false;
}

absl::StatusOr<std::string> LibnvmeBackend::ClaimLocked(const Scanned& sc) {
  if (Find(sc.name) != nullptr) return sc.name;
  for (const auto& r : retiring_) {
    if (r->name == sc.name) {
      return absl::UnavailableError(absl::StrCat(sc.name, " is still being let go; try again"));
    }
  }
  const std::optional<ControllerState> state = ParseControllerState(sc.state);
  if (state != ControllerState::kLive) {
    return absl::FailedPreconditionError(absl::StrCat(
        sc.name, " is ", sc.state.empty() ? "in no known state" : sc.state,
        "; it is claimed once it is live"));
  }
  auto c = std::make_unique<Ctrl>();
  c->be = this;
  c->name = sc.name;
  c->transport = sc.transport;
  c->address = sc.address;
  c->subsys_nqn = sc.subsys_nqn;
  c->signals->notify_fd = wake_fd_;
  c->admin_fd = open(absl::StrCat("/dev/", sc.name).c_str(), O_RDWR | O_CLOEXEC);
  if (c->admin_fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("open /dev/", sc.name));
  std::vector<uint8_t> buf(4096);
  if (int r = nvme_identify_ctrl(c->admin_fd, reinterpret_cast<nvme_id_ctrl*>(buf.data())); r != 0) {
    return absl::UnavailableError(absl::StrCat(sc.name, ": Identify Controller: ", AdminError(r)));
  }
  absl::StatusOr<nvme::ControllerIdentity> id = nvme::ParseIdentifyController(buf);
  if (!id.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(sc.name, ": Identify Controller: ", id.status().message()));
  }
  c->id = *id;
  if (!c->id.subsys_nqn.empty() && c->id.subsys_nqn != sc.subsys_nqn) {
    Log(absl::StrCat(sc.name, ": Identify says subsystem ", c->id.subsys_nqn, ", sysfs ", sc.subsys_nqn));
  }
  ControllerSpec spec;
  spec.name = sc.name;
  spec.subsys_nqn = sc.subsys_nqn;
  spec.transport = sc.transport;
  spec.address = sc.address;
  spec.numa_node = sc.numa;
  spec.ana_supported = c->id.ana_supported;
  spec.anagrpmax = c->id.anagrpmax;
  spec.anatt_secs = c->id.anatt_secs;
  spec.crdt = c->id.crdt;
  spec.state = ControllerState::kLive;
  c->state = ControllerState::kLive;
  for (size_t i = 0; i < workers_.size(); ++i) {
    UringQueueOptions qo;
    qo.depth = options_.queue_depth;
    qo.signals = c->signals;
    absl::StatusOr<std::unique_ptr<UringQueuePair>> qp = UringQueuePair::Create(qo);
    if (!qp.ok()) return qp.status();
    c->qps.push_back(std::move(*qp));
  }
  std::vector<QueuePair*> raw;
  for (auto& qp : c->qps) raw.push_back(qp.get());
  if (absl::Status s = mp_->AddController(spec, c.get(), raw); !s.ok()) return s;
  Ctrl* ctrl = c.get();
  ctrls_.push_back(std::move(c));
  Log(absl::StrCat(sc.name, ": claimed (", sc.transport, " ", sc.address, ", ", sc.subsys_nqn,
                   ctrl->id.ana_supported ? absl::StrCat(", ANA, ANATT ", ctrl->id.anatt_secs, " s") : "",
                   ")"));
  AddNamespacesLocked(ctrl, sc);
  return sc.name;
}

void LibnvmeBackend::AddNamespacesLocked(Ctrl* c, const Scanned& sc) {
  for (const auto& entry : sc.namespaces) {
    const uint32_t nsid = entry.first;
    const std::string& nsname = entry.second;
    if (std::any_of(c->namespaces.begin(), c->namespaces.end(),
                    [nsid](const Ctrl::Ns& n) { return n.nsid == nsid; })) {
      continue;
    }
    auto fail = [this, c, nsid](const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      if (Changed(absl::StrCat(c->name, "/", nsid), why)) {
        Log(absl::StrCat(c->name, " nsid ", nsid, ": ", why));
      }
    };
    std::vector<uint8_t> idns(4096), descs(4096);
    if (int r = nvme_identify_ns(c->admin_fd, nsid, reinterpret_cast<nvme_id_ns*>(idns.data())); r != 0) {
      fail(absl::StrCat("Identify Namespace: ", AdminError(r)));
      continue;
    }
    absl::StatusOr<nvme::NamespaceIdentity> ns = nvme::ParseIdentifyNamespace(idns);
    if (!ns.ok()) {
      fail(absl::StrCat("Identify Namespace: ", ns.status().message()));
      continue;
    }
    nvme::NamespaceIds ids = ns->ids;
    if (nvme_identify_ns_descs(c->admin_fd, nsid, reinterpret_cast<nvme_ns_id_desc*>(descs.data())) == 0) {
      absl::StatusOr<nvme::NamespaceIds> d = nvme::ParseNamespaceIdDescriptors(descs);
      if (!d.ok()) {
        fail(absl::StrCat("namespace identifiers: ", d.status().message()));
        continue;
      }
      if (d->nguid) ids.nguid = d->nguid;
      if (d->eui64) ids.eui64 = d->eui64;
      if (d->uuid) ids.uuid = d->uuid;
    }
    // The generic char device of nvmeXnY is ngXnY: the kernel names both after the
    // controller's and the namespace head's instances.
    const std::string ng = absl::StrCat("/dev/ng", absl::StripPrefix(nsname, "nvme"));
    const int fd = open(ng.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      fail(absl::StrCat("open ", ng, ": ", std::strerror(errno)));
      continue;
    }
    c->namespaces.push_back({nsid, nsname, fd});
    for (size_t i = 0; i < workers_.size(); ++i) {
      UringQueuePair* qp = c->qps[i].get();
      workers_[i]->Post([qp, nsid, fd] { qp->AddNamespace(nsid, fd); });
    }
    NamespaceSpec spec;
    spec.controller = c->name;
    spec.nsid = nsid;
    spec.ids = ids;
    spec.ana_group_id = ns->ana_group_id;
    spec.size_blocks = ns->size_blocks;
    spec.block_size = ns->block_size;
    std::string kib;
    uint32_t max_kib = 0;
    if (ReadFirstLine(absl::StrCat("/sys/block/", nsname, "/queue/max_hw_sectors_kb"), &kib) &&
        absl::SimpleAtoi(kib, &max_kib)) {
      spec.max_transfer_bytes = max_kib * 1024u;
    }
    spec.write_zeroes = c->id.oncs & (1u << 3);
    spec.deallocate = c->id.oncs & (1u << 2);
    spec.volatile_write_cache = c->id.volatile_write_cache;
    absl::StatusOr<std::string> head = mp_->AddPath(spec);
    if (!head.ok()) {
      fail(absl::StrCat("not a path: ", head.status().message()));
      continue;
    }
    Log(absl::StrCat(c->name, " nsid ", nsid, " (", ng, ") joined head ", *head));
  }
  // Namespaces the controller no longer shows.
  for (auto it = c->namespaces.begin(); it != c->namespaces.end();) {
    const uint32_t nsid = it->nsid;
    if (std::any_of(sc.namespaces.begin(), sc.namespaces.end(),
                    [nsid](const auto& n) { return n.first == nsid; })) {
      ++it;
      continue;
    }
    (void)mp_->RemovePath(c->name, nsid, "the kernel removed the namespace");
    ++it;  // its fd stays open until the controller goes: a worker may still name it
  }
}

absl::StatusOr<std::string> LibnvmeBackend::ConnectLocked(ConnectSpec spec) {
  if (absl::Status s = ValidateConnectSpec(spec); !s.ok()) return s;
  if (KernelMultipathEnabled()) return absl::FailedPreconditionError(kMultipathOn);
  // Already connected (by an earlier run, this one, or nvme-cli): claim it.
  for (const Scanned& sc : ScanTopology()) {
    if (MatchesConnectSpec(sc.transport, sc.address, sc.subsys_nqn, spec)) {
      released_.erase(sc.name);
      return ClaimLocked(sc);
    }
  }
  nvme_root_t r = nvme_create_root(stderr, LOG_ERR);
  if (r == nullptr) return absl::InternalError("libnvme: no root");
  nvme_host_t h = options_.host_nqn.empty()
                      ? nvme_default_host(r)
                      : nvme_lookup_host(r, options_.host_nqn.c_str(),
                                         options_.host_id.empty() ? nullptr : options_.host_id.c_str());
  nvme_ctrl_t c = nvme_create_ctrl(r, spec.nqn.c_str(), spec.transport.c_str(),
                                   spec.address.empty() ? nullptr : spec.address.c_str(), nullptr,
                                   nullptr, spec.service.empty() ? nullptr : spec.service.c_str());
  if (h == nullptr || c == nullptr) {
    nvme_free_tree(r);
    return absl::InternalError(absl::StrCat("libnvme could not describe ", spec.ToString()));
  }
  nvme_fabrics_config cfg;
  nvmf_default_config(&cfg);
  cfg.ctrl_loss_tmo = options_.ctrl_loss_tmo_secs;
  cfg.reconnect_delay = options_.reconnect_delay_secs;
  if (nvmf_add_ctrl(h, c, &cfg) != 0) {
    const int e = errno;
    nvme_free_ctrl(c);
    nvme_free_tree(r);
    return absl::UnavailableError(absl::StrCat("could not connect to ", spec.ToString(), ": ",
                                               nvme_errno_to_string(e)));
  }
  const std::string name = S(nvme_ctrl_get_name(c));
  nvme_free_tree(r);
  Log(absl::StrCat("connected ", spec.ToString(), " as ", name));
  // The kernel scans the namespaces after the connect returns: give it a moment.
  Scanned found;
  for (int i = 0; i < 50; ++i) {
    for (Scanned& sc : ScanTopology()) {
      if (sc.name == name) found = std::move(sc);
    }
    if (found.state == "live" && !found.namespaces.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (found.name.empty()) {
    return absl::UnavailableError(absl::StrCat("connected ", spec.ToString(), " as ", name,
                                               ", but the kernel no longer shows it"));
  }
  released_.erase(name);
  return ClaimLocked(found);
}

std::vector<std::pair<std::string, absl::Status>> LibnvmeBackend::AttachConfigured() {
  MutexLock l(&mu_);
  std::vector<std::pair<std::string, absl::Status>> out;
  for (const ConnectSpec& spec : options_.connect) {
    absl::StatusOr<std::string> name = ConnectLocked(spec);
    out.emplace_back(spec.ToString(), name.status());
    last_attempt_[spec.ToString()] = std::string(name.status().message());
    if (!name.ok()) Log(std::string(name.status().message()));
  }
  for (const Scanned& sc : ScanTopology()) {
    if (Find(sc.name) != nullptr || !Wanted(sc)) continue;
    absl::Status s = ClaimLocked(sc).status();
    out.emplace_back(sc.name, s);
    last_attempt_[sc.name] = std::string(s.message());
    if (!s.ok()) Log(absl::StrCat(sc.name, ": not claimed: ", s.message()));
  }
  next_reconnect_ns_ = NowNs() + int64_t{options_.reconnect_secs} * 1'000'000'000;
  return out;
}

absl::StatusOr<std::string> LibnvmeBackend::Attach(const std::string& transport,
                                                   const std::string& address,
                                                   const std::string& service,
                                                   const std::string& nqn) {
  MutexLock l(&mu_);
  if (transport != "kernel") {
    ConnectSpec spec{transport, address, service, nqn};
    if (absl::Status s = ValidateConnectSpec(spec); !s.ok()) return s;
    detached_connects_.erase(spec.ToString());
    return ConnectLocked(spec);
  }
  const std::string name(absl::StripPrefix(address, "/dev/"));
  if (!IsControllerName(name)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "address \"", address, "\" is not a kernel NVMe controller (nvme3 or /dev/nvme3)"));
  }
  if (KernelMultipathEnabled()) return absl::FailedPreconditionError(kMultipathOn);
  for (const Scanned& sc : ScanTopology()) {
    if (sc.name == name) {
      released_.erase(name);
      return ClaimLocked(sc);
    }
  }
  return absl::NotFoundError(absl::StrCat("no kernel NVMe controller ", name, " (see /sys/class/nvme)"));
}

void LibnvmeBackend::ReleaseLocked(Ctrl* c, const std::string& reason) {
  c->signals->draining.store(true, std::memory_order_relaxed);
  Log(absl::StrCat(c->name, ": let go: ", reason));
  // Its paths go now; the commands the kernel holds come back through the workers, who
  // let go of the rings (OnQueuePairsReleased) only after the last one.
  (void)mp_->RemoveController(c->name, reason);
  auto it = std::find_if(ctrls_.begin(), ctrls_.end(), [c](const auto& p) { return p.get() == c; });
  retiring_.push_back(std::move(*it));
  ctrls_.erase(it);
}

absl::Status LibnvmeBackend::Detach(const std::string& name, absl::string_view reason) {
  MutexLock l(&mu_);
  Ctrl* c = Find(name);
  if (c == nullptr) return absl::NotFoundError(absl::StrCat("controller ", name, " not found"));
  c->signals->draining.store(true, std::memory_order_relaxed);
  const bool fabrics = c->fabrics();
  for (const ConnectSpec& spec : options_.connect) {
    if (MatchesConnectSpec(c->transport, c->address, c->subsys_nqn, spec)) {
      detached_connects_.insert(spec.ToString());
    }
  }
  if (fabrics) {
    // Deleting the kernel's controller ends the commands it holds: the kernel fails them
    // and they fail over as they come back.
    // libnvme's view of this one controller only (it talks to no other device).
    nvme_root_t r = nvme_create_root(stderr, LOG_ERR);
    nvme_ctrl_t k = r != nullptr ? nvme_scan_ctrl(r, name.c_str()) : nullptr;
    if (k == nullptr || nvme_disconnect_ctrl(k) != 0) {
      Log(absl::StrCat(name, ": disconnect: ", std::strerror(errno)));
    }
    if (r != nullptr) nvme_free_tree(r);
  }
  ReleaseLocked(c, std::string(reason));
  if (!fabrics) released_.insert(name);
  return absl::OkStatus();
}

absl::Status LibnvmeBackend::RequestReset(const std::string& name) {
  MutexLock l(&mu_);
  Ctrl* c = Find(name);
  if (c == nullptr) return absl::NotFoundError(absl::StrCat("controller ", name, " not found"));
  if (c->state != ControllerState::kLive) {
    return absl::FailedPreconditionError(absl::StrCat(
        name, " is ", ControllerStateName(c->state), "; the kernel is already recovering it"));
  }
  c->reset_requested = true;
  Wake();
  return absl::OkStatus();
}

void LibnvmeBackend::ReadAnaLog(Ctrl* c) {
  // Header, every group descriptor, every NSID once: the largest log the controller
  // can return (capped: a controller that claims more is still read in part).
  const uint64_t len = std::min<uint64_t>(
      32 + 32ull * std::max<uint32_t>(c->id.nanagrpid, 1) + 4ull * c->id.nn, 256 * 1024);
  std::vector<uint8_t> log(len);
  if (int r = nvme_get_log_ana(c->admin_fd, NVME_LOG_ANA_LSP_RGO_NAMESPACES, false, 0,
                               static_cast<uint32_t>(len), log.data());
      r != 0) {
    const std::string why = AdminError(r);
    if (Changed(absl::StrCat(c->name, "/ana"), why)) Log(absl::StrCat(c->name, ": ANA log: ", why));
    return;
  }
  last_attempt_.erase(absl::StrCat(c->name, "/ana"));
  if (absl::Status s = mp_->OnAnaLog(c->name, log); !s.ok()) {
    Log(absl::StrCat(c->name, ": ANA log rejected: ", s.message()));
  }
}

void LibnvmeBackend::PollLocked(bool read_ana) {
  std::vector<Ctrl*> lost;
  for (const auto& cp : ctrls_) {
    Ctrl* c = cp.get();
    std::string text;
    if (!ReadFirstLine(absl::StrCat("/sys/class/nvme/", c->name, "/state"), &text)) {
      lost.push_back(c);
      continue;
    }
    if (const std::optional<ControllerState> st = ParseControllerState(text); st && *st != c->state) {
      Log(absl::StrCat(c->name, ": the kernel's controller is ", text));
      c->state = *st;
      (void)mp_->SetControllerState(c->name, *st, absl::StrCat("kernel controller ", text));
      if (*st == ControllerState::kLive) rescan_ = true;  // its namespaces may have changed
    }
    // The state the queue pairs' host path errors were about is now known to the core.
    c->signals->suspect.store(false, std::memory_order_relaxed);
    const bool ana = c->ana_requested.exchange(false) || read_ana;
    if (ana && c->state == ControllerState::kLive && c->id.ana_supported) ReadAnaLog(c);
  }
  for (Ctrl* c : lost) {
    ReleaseLocked(c, absl::StrCat("the kernel removed controller ", c->name,
                                  " (connection lost past ctrl_loss_tmo, or deleted)"));
  }
}

void LibnvmeBackend::RescanLocked() {
  const std::vector<Scanned> all = ScanTopology();
  for (auto it = released_.begin(); it != released_.end();) {
    const bool present = std::any_of(all.begin(), all.end(), [&](const Scanned& s) { return s.name == *it; });
    it = present ? std::next(it) : released_.erase(it);
  }
  for (const Scanned& sc : all) {
    if (Ctrl* c = Find(sc.name)) {
      if (c->state == ControllerState::kLive && ParseControllerState(sc.state) == ControllerState::kLive) {
        AddNamespacesLocked(c, sc);
      }
      continue;
    }
    if (!Wanted(sc) || released_.contains(sc.name)) continue;
    const absl::Status s = ClaimLocked(sc).status();
    if (Changed(sc.name, std::string(s.message())) && !s.ok()) {
      Log(absl::StrCat(sc.name, ": not claimed: ", s.message()));
    }
  }
}

void LibnvmeBackend::ServiceLocked(bool polled) {
  for (const auto& cp : ctrls_) {
    Ctrl* c = cp.get();
    if (!c->reset_requested.exchange(false)) continue;
    Log(absl::StrCat(c->name, ": resetting"));
    c->state = ControllerState::kResetting;
    (void)mp_->SetControllerState(c->name, ControllerState::kResetting, "reset requested");
    // Synchronous in the kernel: it returns once the controller is live again or the
    // transport is reconnecting; what it held has failed over meanwhile.
    if (nvme_ctrl_reset(c->admin_fd) != 0) Log(absl::StrCat(c->name, ": reset: ", std::strerror(errno)));
  }
  if (!polled) PollLocked(false);  // a queue pair's host path error, a request of the core
  for (auto it = retiring_.begin(); it != retiring_.end();) {
    it = (*it)->released ? retiring_.erase(it) : std::next(it);
  }
  // Nothing configured and nothing claimed: nothing a rescan could find (an attach
  // through the API scans for itself).
  if (rescan_ && (!options_.claims.empty() || !options_.connect.empty() || !ctrls_.empty())) {
    RescanLocked();
  }
  rescan_ = false;
  if (!options_.connect.empty() && NowNs() >= next_reconnect_ns_) {
    next_reconnect_ns_ = NowNs() + int64_t{options_.reconnect_secs} * 1'000'000'000;
    for (const ConnectSpec& spec : options_.connect) {
      const bool have = std::any_of(ctrls_.begin(), ctrls_.end(), [&](const auto& c) {
        return MatchesConnectSpec(c->transport, c->address, c->subsys_nqn, spec);
      });
      if (have || detached_connects_.contains(spec.ToString())) continue;
      const absl::Status s = ConnectLocked(spec).status();
      if (Changed(spec.ToString(), std::string(s.message()))) {
        Log(s.ok() ? absl::StrCat(spec.ToString(), ": connected again") : std::string(s.message()));
      }
    }
  }
}

void LibnvmeBackend::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void LibnvmeBackend::Loop() {
  int64_t next_poll = NowNs() + int64_t{options_.poll_ms} * 1'000'000;
  int polls = 0;
  while (!stop_.load()) {
    const int64_t now = NowNs();
    const int timeout = now >= next_poll ? 0 : static_cast<int>((next_poll - now) / 1'000'000 + 1);
    epoll_event evs[4];
    const int n = epoll_wait(epoll_fd_, evs, 4, timeout);
    if (stop_.load()) break;
    MutexLock l(&mu_);
    for (int i = 0; i < n; ++i) {
      if (evs[i].data.fd == wake_fd_) {
        uint64_t v;
        [[maybe_unused]] ssize_t r = read(wake_fd_, &v, sizeof v);
      } else if (evs[i].data.fd == uevent_fd_) {
        // Controllers (nvme) and namespaces (block, nvme-generic), by DEVPATH.
        umpath::ReadUevents(uevent_fd_, [this](const Uevent& e) {
          mu_.AssertHeld();
          if (absl::StrContains(e.header, "/nvme") || absl::StrContains(e.header, "/ng")) {
            rescan_ = true;
          }
        });
      }
    }
    bool polled = false;
    if (NowNs() >= next_poll) {
      next_poll = NowNs() + int64_t{options_.poll_ms} * 1'000'000;
      PollLocked(/*read_ana=*/true);
      polled = true;
      // A slow rescan as well, for what uevents missed (none in a container, say).
      if (++polls % 30 == 0) rescan_ = true;
    }
    ServiceLocked(polled);
  }
}

void LibnvmeBackend::Stop() {
  if (!stop_.exchange(true)) {
    Wake();
    if (thread_.joinable()) thread_.join();
  }
  std::vector<Ctrl*> waiting;
  {
    MutexLock l(&mu_);
    while (!ctrls_.empty()) ReleaseLocked(ctrls_.back().get(), "agent stopping");
    for (const auto& c : retiring_) waiting.push_back(c.get());
  }
  // The workers let go of the rings once the kernel has returned what it holds (they
  // are still running); only then do the files close. No lock is held meanwhile: the
  // event thread is gone and nothing else touches retiring_.
  const int64_t until = NowNs() + int64_t{options_.drain_timeout_ms} * 1'000'000;
  auto busy = [&] {
    return std::any_of(waiting.begin(), waiting.end(), [](Ctrl* c) { return !c->released.load(); });
  };
  while (busy() && NowNs() < until) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  MutexLock l(&mu_);
  for (auto it = retiring_.begin(); it != retiring_.end();) {
    it = (*it)->released ? retiring_.erase(it) : std::next(it);
  }
  if (!retiring_.empty()) {
    // The kernel still holds commands of theirs: the rings stay (a worker polls them)
    // and are left to the process's exit rather than freed under it.
    Log(absl::StrCat(retiring_.size(), " controller(s) still have commands in the kernel after ",
                     options_.drain_timeout_ms, " ms; left as they are"));
    for (auto& c : retiring_) (void)c.release();
    retiring_.clear();
  }
}

}  // namespace umpath::kernel
