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
#include <cstdio>
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
#include "agent/base/error_reason.h"
#include "agent/base/uevent.h"
#include "agent/kernel/fabrics_connect.h"
#include "agent/kernel/uring_queue_pair.h"
#include "agent/nvme/identify.h"
#include "agent/nvme/status.h"

namespace umpath::kernel {

namespace {

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

namespace {

// Deletes the kernel's fabrics controller `name`. Blocks; libnvme's view of this one
// controller only (it talks to no other device).
absl::Status DisconnectFabrics(const std::string& name) {
  nvme_root_t r = nvme_create_root(stderr, LOG_ERR);
  nvme_ctrl_t k = r != nullptr ? nvme_scan_ctrl(r, name.c_str()) : nullptr;
  absl::Status s;
  if (k == nullptr) {
    s = absl::NotFoundError("the kernel shows no such controller");
  } else if (nvme_disconnect_ctrl(k) != 0) {
    s = absl::ErrnoToStatus(errno, "disconnect");
  }
  if (r != nullptr) nvme_free_tree(r);
  return s;
}

}  // namespace

// One controller as the kernel's topology shows it.
struct LibnvmeBackend::Scanned {
  std::string name, transport, address, subsys_nqn, state;
  int numa = -1;
  std::vector<std::pair<uint32_t, std::string>> namespaces;  // nsid, nvmeXnY
};

// One claimed controller, as a driver below the supervisor: its admin fd, its
// namespaces' generic devices, one ring per worker. Control thread only.
struct LibnvmeBackend::Ctrl final : ControllerDriver {
  LibnvmeBackend* be = nullptr;
  std::string name, transport, address, subsys_nqn;
  int admin_fd = -1;
  nvme::ControllerIdentity id;
  // The kernel's state as last read from sysfs.
  ControllerState state = ControllerState::kLive;
  std::shared_ptr<ControllerSignals> signals = std::make_shared<ControllerSignals>();
  struct Ns {
    uint32_t nsid = 0;
    std::string name;  // nvmeXnY
    int fd = -1;       // /dev/ngXnY
  };
  std::vector<Ns> namespaces;
  std::vector<std::unique_ptr<UringQueuePair>> qps;  // by worker

  ~Ctrl() override {
    qps.clear();  // the rings go before the files they name
    for (const Ns& n : namespaces) close(n.fd);
    if (admin_fd >= 0) close(admin_fd);
  }
  bool fabrics() const { return transport != "pcie"; }

  ResetKind reset_kind() const override { return ResetKind::kBelow; }
  std::string ResetRefused() const override {
    if (state == ControllerState::kLive) return "";
    return absl::StrCat(name, " is ", ControllerStateName(state),
                        "; the kernel is already recovering it");
  }
  // The kernel owns what it was given: it completes or fails each command itself, and
  // the workers hand back only what it returned (SEMANTICS "Fencing").
  FenceResult Fence(const FenceAsk&) override {
    return {.released = false, .detail = "the kernel returns what it holds"};
  }
  absl::Status Recover() override {
    return absl::UnimplementedError("the kernel recovers its own controllers");
  }
  absl::AnyInvocable<absl::Status() &&> ResetBelow() override {
    // The next poll that reads "live" reports it live again.
    state = ControllerState::kResetting;
    be->Log(absl::StrCat(name, ": resetting"));
    // Synchronous in the kernel: it returns once the controller is live again or the
    // transport is reconnecting. A file of its own: the controller may go meanwhile.
    const int fd = dup(admin_fd);
    return [fd, name = name]() -> absl::Status {
      if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat(name, ": reset"));
      const int r = nvme_ctrl_reset(fd);
      const int e = errno;
      close(fd);
      return r == 0 ? absl::OkStatus() : absl::ErrnoToStatus(e, absl::StrCat(name, ": reset"));
    };
  }
  void ReadAnaLog() override {
    if (state == ControllerState::kLive && id.ana_supported) be->ReadAnaLog(this);
  }
  void OnDetach(bool) override {
    signals->draining.store(true, std::memory_order_relaxed);
    be->ctrls_.erase(name);
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
    Multipath* mp, ControlPlane* plane, ControllerSupervisor* sup, std::vector<Worker*> workers,
    LibnvmeBackendOptions options) {
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
  for (const std::string& c : options.attachable) {
    if (c != "all" && !IsControllerName(c) && !IsValidNqn(c)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "attachable \"", c, "\" is neither a controller name (nvme3), a subsystem NQN nor \"all\""));
    }
  }
  if ((!options.claims.empty() || !options.connect.empty()) && KernelMultipathEnabled()) {
    return absl::FailedPreconditionError(kMultipathOn);
  }
  const int notify = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (notify < 0) return absl::ErrnoToStatus(errno, "eventfd");
  return std::unique_ptr<LibnvmeBackend>(
      new LibnvmeBackend(mp, plane, sup, std::move(workers), std::move(options), notify));
}

LibnvmeBackend::LibnvmeBackend(Multipath* mp, ControlPlane* plane, ControllerSupervisor* sup,
                               std::vector<Worker*> workers, LibnvmeBackendOptions options,
                               int notify_fd)
    : mp_(mp), plane_(plane), sup_(sup), workers_(std::move(workers)), options_(std::move(options)),
      notify_fd_(notify_fd) {}

LibnvmeBackend::~LibnvmeBackend() {
  plane_->Cancel(tick_);
  plane_->Unwatch(notify_fd_);
  if (uevent_fd_ >= 0) {
    plane_->Unwatch(uevent_fd_);
    close(uevent_fd_);
  }
  // The controllers' rings may still name it (the supervisor keeps them): left open.
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

LibnvmeBackend::Ctrl* LibnvmeBackend::Find(absl::string_view name) const {
  auto it = ctrls_.find(std::string(name));
  return it == ctrls_.end() ? nullptr : it->second;
}

bool LibnvmeBackend::Owns(const std::string& name) const { return Find(name) != nullptr; }

bool LibnvmeBackend::Wanted(const Scanned& sc) const {
  for (const std::string& c : options_.claims) {
    if (c == sc.name || c == sc.subsys_nqn) return true;
  }
  for (const ConnectSpec& spec : options_.connect) {
    if (MatchesConnectSpec(sc.transport, sc.address, sc.subsys_nqn, spec)) return true;
  }
  return false;
}

absl::StatusOr<std::string> LibnvmeBackend::Claim(const Scanned& sc) {
  if (Find(sc.name) != nullptr) return sc.name;
  if (sup_->Known(sc.name)) {
    return WithReason(absl::UnavailableError(absl::StrCat(sc.name, " is still being let go; try again")),
                      reason::kControllerRetiring, {{"controller", sc.name}});
  }
  absl::StatusOr<std::unique_ptr<Ctrl>> made = Open(sc);
  if (!made.ok()) return made.status();
  Ctrl* c = made->get();
  ControllerSpec spec;
  spec.name = sc.name;
  spec.subsys_nqn = nvme::PrintableNqn(sc.subsys_nqn);  // as vfio paths of it name it
  spec.transport = sc.transport;
  spec.address = sc.address;
  spec.numa_node = sc.numa;
  spec.ana_supported = c->id.ana_supported;
  spec.anagrpmax = c->id.anagrpmax;
  spec.anatt_secs = c->id.anatt_secs;
  spec.crdt = c->id.crdt;
  spec.state = ControllerState::kLive;
  std::vector<QueuePair*> raw;
  for (auto& qp : c->qps) raw.push_back(qp.get());
  if (absl::Status s = sup_->Add(std::move(*made), spec, raw); !s.ok()) return s;
  ctrls_[sc.name] = c;
  Log(absl::StrCat(sc.name, ": claimed (", sc.transport, " ", sc.address, ", ", spec.subsys_nqn,
                   c->id.ana_supported ? absl::StrCat(", ANA, ANATT ", c->id.anatt_secs, " s") : "",
                   ")"));
  AddNamespaces(c, sc);
  return sc.name;
}

// Its admin file, Identify Controller and one ring per worker.
absl::StatusOr<std::unique_ptr<LibnvmeBackend::Ctrl>> LibnvmeBackend::Open(const Scanned& sc) {
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
  c->signals->notify_fd = notify_fd_;
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
  if (!c->id.subsys_nqn_raw.empty() && c->id.subsys_nqn_raw != sc.subsys_nqn) {
    Log(absl::StrCat(sc.name, ": Identify says subsystem ", c->id.subsys_nqn, ", sysfs ",
                     nvme::PrintableNqn(sc.subsys_nqn)));
  }
  for (size_t i = 0; i < workers_.size(); ++i) {
    UringQueueOptions qo;
    qo.depth = options_.queue_depth;
    qo.signals = c->signals;
    absl::StatusOr<std::unique_ptr<UringQueuePair>> qp = UringQueuePair::Create(qo);
    if (!qp.ok()) return qp.status();
    c->qps.push_back(std::move(*qp));
  }
  return c;
}

// Identify Namespace and its identifiers, through the controller's admin file.
absl::StatusOr<NamespaceSpec> LibnvmeBackend::IdentifyPath(Ctrl* c, uint32_t nsid,
                                                           const std::string& nsname) {
  std::vector<uint8_t> idns(4096), descs(4096);
  if (int r = nvme_identify_ns(c->admin_fd, nsid, reinterpret_cast<nvme_id_ns*>(idns.data())); r != 0) {
    return absl::UnavailableError(absl::StrCat("Identify Namespace: ", AdminError(r)));
  }
  absl::StatusOr<nvme::NamespaceIdentity> ns = nvme::ParseIdentifyNamespace(idns);
  if (!ns.ok()) return absl::InvalidArgumentError(absl::StrCat("Identify Namespace: ", ns.status().message()));
  std::optional<nvme::NamespaceIds> ids;
  if (nvme_identify_ns_descs(c->admin_fd, nsid, reinterpret_cast<nvme_ns_id_desc*>(descs.data())) == 0) {
    absl::StatusOr<nvme::NamespaceIds> d = nvme::ParseNamespaceIdDescriptors(descs);
    if (!d.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("namespace identifiers: ", d.status().message()));
    }
    ids = *d;
  }
  std::string kib;
  uint32_t max_kib = 0;
  if (!ReadFirstLine(absl::StrCat("/sys/block/", nsname, "/queue/max_hw_sectors_kb"), &kib) ||
      !absl::SimpleAtoi(kib, &max_kib)) {
    max_kib = 0;
  }
  return PathSpecFromIdentify(c->name, nsid, *ns, ids, c->id, max_kib * 1024u);
}

void LibnvmeBackend::AddNamespaces(Ctrl* c, const Scanned& sc) {
  for (const auto& [nsid, nsname] : sc.namespaces) {
    if (std::any_of(c->namespaces.begin(), c->namespaces.end(),
                    [nsid = nsid](const Ctrl::Ns& n) { return n.nsid == nsid; })) {
      continue;
    }
    auto fail = [this, c, nsid = nsid](const std::string& why) {
      if (Changed(absl::StrCat(c->name, "/", nsid), why)) {
        Log(absl::StrCat(c->name, " nsid ", nsid, ": ", why));
      }
    };
    absl::StatusOr<NamespaceSpec> spec = IdentifyPath(c, nsid, nsname);
    if (!spec.ok()) {
      fail(std::string(spec.status().message()));
      continue;
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
      workers_[i]->Post([qp, nsid = nsid, fd] { qp->AddNamespace(nsid, fd); });
    }
    absl::StatusOr<std::string> head = mp_->AddPath(*spec);
    if (!head.ok()) {
      fail(absl::StrCat("not a path: ", head.status().message()));
      continue;
    }
    Log(absl::StrCat(c->name, " nsid ", nsid, " (", ng, ") joined head ", *head));
  }
  // Namespaces the controller no longer shows; a file stays open until the controller
  // goes: a worker may still name it.
  for (const Ctrl::Ns& n : c->namespaces) {
    if (std::none_of(sc.namespaces.begin(), sc.namespaces.end(),
                     [&n](const auto& s) { return s.first == n.nsid; })) {
      (void)mp_->RemovePath(c->name, n.nsid, "the kernel removed the namespace");
    }
  }
}

// nvmf_add_ctrl blocks (a TCP connect, the fabrics handshake): it runs off the control
// thread; its libnvme tree is its own.
void LibnvmeBackend::Connect(ConnectSpec spec, ConnectOptions options, NameDone done) {
  if (absl::Status s = ValidateConnectSpec(spec); !s.ok()) return std::move(done)(s);
  // The options are checked (and the key files read) before anything is looked up or
  // connected; the keys stay in `args`, which no log line names.
  absl::StatusOr<ConnectArgs> args = BuildConnectArgs(
      spec.transport, options,
      {options_.host_nqn, options_.host_id, options_.ctrl_loss_tmo_secs, options_.reconnect_delay_secs});
  if (!args.ok()) return std::move(done)(args.status());
  if (KernelMultipathEnabled()) return std::move(done)(absl::FailedPreconditionError(kMultipathOn));
  // Already connected (by an earlier run, this one, or nvme-cli): claim it. It keeps the
  // options it was connected with.
  for (const Scanned& sc : ScanTopology()) {
    if (MatchesConnectSpec(sc.transport, sc.address, sc.subsys_nqn, spec) &&
        MatchesConnectOptions(sc.address, options)) {
      released_.erase(sc.name);
      return std::move(done)(Claim(sc));
    }
  }
  std::string what = spec.ToString();
  if (!options.host_traddr.empty()) absl::StrAppend(&what, " from ", options.host_traddr);
  if (!options.host_iface.empty()) absl::StrAppend(&what, " on ", options.host_iface);
  if (!connecting_.insert(what).second) {
    return std::move(done)(absl::UnavailableError(absl::StrCat(what, ": a connect is under way")));
  }
  plane_->Offload([this, alive = std::weak_ptr<bool>(alive_), spec = std::move(spec), args = *std::move(args),
                   what, done = std::move(done)]() mutable -> ControlPlane::Task {
    absl::StatusOr<std::string> name = ConnectFabrics(spec, args);
    return [this, alive, what, name = std::move(name), done = std::move(done)]() mutable {
      if (alive.expired()) return;
      connecting_.erase(what);
      if (!name.ok()) return std::move(done)(name.status());
      connected_.insert(*name);
      Log(absl::StrCat("connected ", what, " as ", *name));
      // The kernel scans the namespaces after the connect returns: look for them a few
      // times (50 x 100 ms), on the timer.
      ClaimWhenLive(*name, what, 50, std::move(done));
    };
  });
}

void LibnvmeBackend::ClaimWhenLive(std::string name, std::string what, int tries_left, NameDone done) {
  Scanned found;
  for (Scanned& sc : ScanTopology()) {
    if (sc.name == name) found = std::move(sc);
  }
  const bool ready = found.state == "live" && !found.namespaces.empty();
  if (!ready && tries_left > 0) {
    plane_->After(100'000'000, [this, alive = std::weak_ptr<bool>(alive_), name = std::move(name),
                                what = std::move(what), tries_left, done = std::move(done)]() mutable {
      if (!alive.expired()) ClaimWhenLive(std::move(name), std::move(what), tries_left - 1, std::move(done));
    });
    return;
  }
  if (found.name.empty()) {
    return std::move(done)(absl::UnavailableError(absl::StrCat(
        "connected ", what, " as ", name, ", but the kernel no longer shows it")));
  }
  released_.erase(name);
  std::move(done)(Claim(found));
}

void LibnvmeBackend::AttachConfigured(absl::AnyInvocable<void(Outcomes) &&> done) {
  ConnectConfigured(0, {}, std::move(done));
}

// One configured connect after the other, then the configured controllers present.
void LibnvmeBackend::ConnectConfigured(size_t i, Outcomes out,
                                       absl::AnyInvocable<void(Outcomes) &&> done) {
  if (i < options_.connect.size()) {
    const ConnectSpec spec = options_.connect[i];
    Connect(spec, {}, [this, i, spec, out = std::move(out),
                   done = std::move(done)](absl::StatusOr<std::string> name) mutable {
      out.emplace_back(spec.ToString(), name.status());
      last_attempt_[spec.ToString()] = std::string(name.status().message());
      if (!name.ok()) Log(std::string(name.status().message()));
      ConnectConfigured(i + 1, std::move(out), std::move(done));
    });
    return;
  }
  for (const Scanned& sc : ScanTopology()) {
    if (Find(sc.name) != nullptr || !Wanted(sc)) continue;
    absl::Status s = Claim(sc).status();
    out.emplace_back(sc.name, s);
    last_attempt_[sc.name] = std::string(s.message());
    if (!s.ok()) Log(absl::StrCat(sc.name, ": not claimed: ", s.message()));
  }
  next_reconnect_ns_ = NowNs() + int64_t{options_.reconnect_secs} * 1'000'000'000;
  std::move(done)(std::move(out));
}

void LibnvmeBackend::Attach(const std::string& transport, const std::string& address,
                            const std::string& service, const std::string& nqn,
                            const ConnectOptions& options, NameDone done) {
  if (transport != "kernel") {
    ConnectSpec spec{transport, address, service, nqn};
    if (absl::Status s = ValidateConnectSpec(spec); !s.ok()) return std::move(done)(s);
    if (absl::Status s = ValidateConnectOptions(transport, options); !s.ok()) return std::move(done)(s);
    detached_connects_.erase(spec.ToString());
    return Connect(spec, options, std::move(done));
  }
  if (!options.empty()) {
    return std::move(done)(absl::InvalidArgumentError(absl::StrCat(
        "fabrics options (", options.Names(), ") are for tcp, rdma, fc or loop; an existing kernel "
        "controller keeps the options it was connected with")));
  }
  const std::string name(absl::StripPrefix(address, "/dev/"));
  if (!IsControllerName(name)) {
    return std::move(done)(absl::InvalidArgumentError(absl::StrCat(
        "address \"", address, "\" is not a kernel NVMe controller (nvme3 or /dev/nvme3)")));
  }
  if (KernelMultipathEnabled()) return std::move(done)(absl::FailedPreconditionError(kMultipathOn));
  for (const Scanned& sc : ScanTopology()) {
    if (sc.name != name) continue;
    if (Find(name) == nullptr && !Wanted(sc) && !NamedIn(sc.name, sc.subsys_nqn, {&options_.attachable})) {
      return std::move(done)(WithReason(
          absl::FailedPreconditionError(absl::StrCat(
              name, " (", nvme::PrintableNqn(sc.subsys_nqn), ") is not one of this agent's controllers "
              "(--kernel_controllers, --kernel_attachable); it is left as it is")),
          reason::kNotAttachedHere, {{"controller", name}}));
    }
    released_.erase(name);
    return std::move(done)(Claim(sc));
  }
  std::move(done)(ControllerNotFoundError(
      name, absl::StrCat("no kernel NVMe controller ", name, " (see /sys/class/nvme)")));
}

void LibnvmeBackend::Detach(const std::string& name, absl::string_view reason,
                            absl::AnyInvocable<void(absl::Status) &&> done) {
  Ctrl* c = Find(name);
  if (c == nullptr) return std::move(done)(ControllerNotFoundError(name));
  // Only what this agent connected, or was configured to keep connected (--kernel_connect,
  // maybe connected by the agent before it), is disconnected; anything else (another CSI
  // driver's, nvme-cli's) is let go and keeps its connection.
  bool ours = connected_.contains(name);
  for (const ConnectSpec& spec : options_.connect) {
    if (MatchesConnectSpec(c->transport, c->address, c->subsys_nqn, spec)) {
      detached_connects_.insert(spec.ToString());
      ours = true;
    }
  }
  const bool fabrics = c->fabrics() && ours;
  // Its paths go now; the commands the kernel holds come back through the workers, who
  // let go of the rings only after the last one.
  if (absl::Status s = sup_->Detach(name, std::string(reason)); !s.ok()) return std::move(done)(s);
  connected_.erase(name);
  if (!fabrics) {
    released_.insert(name);
    return std::move(done)(absl::OkStatus());
  }
  // Deleting the kernel's controller ends the commands it holds: the kernel fails them
  // and they fail over as they come back. It blocks: off the control thread.
  plane_->Offload([this, name, done = std::move(done)]() mutable -> ControlPlane::Task {
    absl::Status s = DisconnectFabrics(name);
    return [this, name, s, done = std::move(done)]() mutable {
      if (!s.ok()) Log(absl::StrCat(name, ": disconnect: ", s.message()));
      std::move(done)(absl::OkStatus());
    };
  });
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

void LibnvmeBackend::Poll(bool read_ana) {
  std::vector<Ctrl*> lost;
  for (const auto& [name, c] : ctrls_) {
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
    if (read_ana) c->ReadAnaLog();
  }
  for (Ctrl* c : lost) {
    const std::string name = c->name;
    connected_.erase(name);  // the name may come back as someone else's controller
    (void)sup_->Detach(name, absl::StrCat("the kernel removed controller ", name,
                                          " (connection lost past ctrl_loss_tmo, or deleted)"));
  }
}

void LibnvmeBackend::Rescan() {
  const std::vector<Scanned> all = ScanTopology();
  for (auto it = released_.begin(); it != released_.end();) {
    const bool present = std::any_of(all.begin(), all.end(), [&](const Scanned& s) { return s.name == *it; });
    it = present ? std::next(it) : released_.erase(it);
  }
  for (const Scanned& sc : all) {
    if (Ctrl* c = Find(sc.name)) {
      if (c->state == ControllerState::kLive && ParseControllerState(sc.state) == ControllerState::kLive) {
        AddNamespaces(c, sc);
      }
      continue;
    }
    if (!Wanted(sc) || released_.contains(sc.name)) continue;
    const absl::Status s = Claim(sc).status();
    if (Changed(sc.name, std::string(s.message())) && !s.ok()) {
      Log(absl::StrCat(sc.name, ": not claimed: ", s.message()));
    }
  }
}

void LibnvmeBackend::Reconnect() {
  if (options_.connect.empty() || NowNs() < next_reconnect_ns_) return;
  next_reconnect_ns_ = NowNs() + int64_t{options_.reconnect_secs} * 1'000'000'000;
  for (const ConnectSpec& spec : options_.connect) {
    const bool have = std::any_of(ctrls_.begin(), ctrls_.end(), [&](const auto& c) {
      return MatchesConnectSpec(c.second->transport, c.second->address, c.second->subsys_nqn, spec);
    });
    if (have || detached_connects_.contains(spec.ToString()) ||
        connecting_.contains(spec.ToString())) {
      continue;
    }
    Connect(spec, {}, [this, what = spec.ToString()](absl::StatusOr<std::string> name) {
      if (Changed(what, std::string(name.status().message()))) {
        Log(name.ok() ? absl::StrCat(what, ": connected again") : std::string(name.status().message()));
      }
    });
  }
}

// Every poll_ms: the controllers' state and ANA logs, a slow rescan for what uevents
// missed (none in a container, say), the configured connects that are absent.
void LibnvmeBackend::Tick() {
  Poll(/*read_ana=*/true);
  if (++ticks_ % 30 == 0) rescan_ = true;
  // Nothing configured and nothing claimed: nothing a rescan could find (an attach
  // through the API scans for itself).
  if (rescan_ && (!options_.claims.empty() || !options_.connect.empty() || !ctrls_.empty())) {
    Rescan();
  }
  rescan_ = false;
  Reconnect();
  tick_ = plane_->After(int64_t{options_.poll_ms} * 1'000'000, [this] { Tick(); });
}

void LibnvmeBackend::Start() {
  // A queue pair's host path error, a request of the core: poll now.
  (void)plane_->Watch(notify_fd_, [this] {
    uint64_t v;
    [[maybe_unused]] ssize_t r = read(notify_fd_, &v, sizeof v);
    Poll(/*read_ana=*/false);
  });
  // Kernel uevents: controllers (nvme) and namespaces (block, nvme-generic), by DEVPATH.
  if (absl::StatusOr<int> ue = options_.uevents ? options_.uevents() : OpenUeventSocket(); ue.ok()) {
    uevent_fd_ = *ue;
    (void)plane_->Watch(uevent_fd_, [this] {
      umpath::ReadUevents(uevent_fd_, [this](const Uevent& e) {
        if (absl::StrContains(e.header, "/nvme") || absl::StrContains(e.header, "/ng")) rescan_ = true;
      });
      if (rescan_ && (!options_.claims.empty() || !options_.connect.empty() || !ctrls_.empty())) {
        Rescan();
      }
      rescan_ = false;
    });
  } else {
    Log(absl::StrCat("no kernel uevents (", ue.status().message(),
                     "): new controllers are found by the periodic rescan only"));
  }
  tick_ = plane_->After(int64_t{options_.poll_ms} * 1'000'000, [this] { Tick(); });
}

}  // namespace umpath::kernel
