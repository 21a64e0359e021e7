#include "agent/sim/sim_backend.h"

#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/base/error_reason.h"
#include "agent/base/status_macros.h"
#include "agent/nvme/identify.h"
#include "agent/sim/sim_identify.h"

namespace umpath::sim {

absl::Status ParseSimTopology(absl::string_view text, SimOptions* out) {
  const std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  uint32_t v[3];
  if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &v[0]) || !absl::SimpleAtoi(parts[1], &v[1]) ||
      !absl::SimpleAtoi(parts[2], &v[2])) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--sim takes SUBSYSTEMS:NAMESPACES:CONTROLLERS (e.g. 2:4:2), not \"", text, "\""));
  }
  if (v[0] < 1 || v[0] > 65536 || v[1] < 1 || v[1] > 1024 || v[2] < 1 || v[2] > 64) {
    return absl::InvalidArgumentError(
        "--sim: 1..65536 subsystems, 1..1024 namespaces each, 1..64 controllers each");
  }
  out->subsystems = v[0];
  out->namespaces = v[1];
  out->controllers = v[2];
  return absl::OkStatus();
}

// One simulated controller, whether attached or not: what survives its loss.
struct SimBackend::Model {
  std::string name;
  uint32_t subsystem = 0;
  uint32_t index = 0;
  std::string nqn;
  std::vector<nvme::AnaState> ana;  // by group - 1
  uint64_t ana_changes = 1;
  std::shared_ptr<SimFaults> faults = std::make_shared<SimFaults>();
  std::set<uint32_t> detached_nsids;  // namespaces this controller does not show
  Driver* driver = nullptr;  // the attached incarnation; null while lost or detached
};

// One attached incarnation, as a driver below the supervisor. Control thread only.
class SimBackend::Driver final : public ControllerDriver {
 public:
  Driver(SimBackend* be, Model* m) : be_(be), m_(m) {}
  std::shared_ptr<SimLink> link = std::make_shared<SimLink>();
  nvme::ControllerIdentity id;
  uint32_t max_transfer = 0;
  std::vector<std::unique_ptr<SimQueuePair>> qps;  // by worker

  ResetKind reset_kind() const override { return ResetKind::kFenceAndRecover; }
  // A simulated command acts only as it completes, and a quiesced queue pair is not
  // polled: from here on nothing it was given runs.
  FenceResult Fence(const FenceAsk& ask) override {
    if (ask.release || link->gone.load(std::memory_order_relaxed)) {
      link->gone.store(true, std::memory_order_relaxed);
      return {.released = true, .detail = "the simulated controller is let go"};
    }
    return {.released = false, .detail = "simulated: commands act only as they complete"};
  }
  absl::Status Recover() override {
    if (link->gone.load(std::memory_order_relaxed)) return absl::UnavailableError("the controller is gone");
    return absl::OkStatus();
  }
  void ReadAnaLog() override { be_->ReadAnaLog(m_); }
  void OnDetach(bool) override {
    link->gone.store(true, std::memory_order_relaxed);
    if (m_->driver == this) m_->driver = nullptr;
  }

 private:
  SimBackend* const be_;
  Model* const m_;
};

std::string SimBackend::ControllerName(uint32_t subsystem, uint32_t controller) {
  return absl::StrCat("sim-", subsystem, "-", controller);
}

absl::StatusOr<std::unique_ptr<SimBackend>> SimBackend::Create(Multipath* mp, ControlPlane* plane,
                                                               ControllerSupervisor* sup,
                                                               std::vector<Worker*> workers,
                                                               SimOptions options) {
  if (workers.empty()) return absl::InvalidArgumentError("no workers");
  if (options.block_size < 512 || options.block_size > 65536 ||
      (options.block_size & (options.block_size - 1)) != 0) {
    return absl::InvalidArgumentError("the simulated block size is a power of two, 512..65536");
  }
  if (options.namespace_bytes < options.block_size || options.namespace_bytes % options.block_size != 0) {
    return absl::InvalidArgumentError("a simulated namespace is a whole number of blocks, at least one");
  }
  if (options.latency_ns < 0 || options.latency_ns > 10'000'000'000) {
    return absl::InvalidArgumentError("the simulated latency is 0..10 s");
  }
  if (options.queue_depth < 2 || options.queue_depth > 4096) {
    return absl::InvalidArgumentError("queue depth must be 2..4096");
  }
  std::unique_ptr<SimBackend> be(new SimBackend(mp, plane, sup, std::move(workers), std::move(options)));
  const SimOptions& o = be->options_;
  for (uint32_t s = 0; s < o.subsystems; ++s) {
    ASSIGN_OR_RETURN(std::shared_ptr<SimMedia> media,
                     SimMedia::Create(o.namespaces, o.namespace_bytes / o.block_size, o.block_size, o.memory));
    be->media_.push_back(std::move(media));
    for (uint32_t c = 0; c < o.controllers; ++c) {
      auto m = std::make_unique<Model>();
      m->name = ControllerName(s, c);
      m->subsystem = s;
      m->index = c;
      m->nqn = absl::StrCat("nqn.2026-01.io.umpath:sim-", s);
      m->ana.assign(o.namespaces, nvme::AnaState::kOptimized);
      m->faults->latency_ns.store(o.latency_ns, std::memory_order_relaxed);
      be->models_[m->name] = std::move(m);
    }
  }
  return be;
}

SimBackend::SimBackend(Multipath* mp, ControlPlane* plane, ControllerSupervisor* sup,
                       std::vector<Worker*> workers, SimOptions options)
    : mp_(mp), plane_(plane), sup_(sup), workers_(std::move(workers)), options_(std::move(options)) {}

// The supervisor, which owns the drivers, goes first (agent/app/agent.h).
SimBackend::~SimBackend() = default;

void SimBackend::Log(const std::string& line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::fprintf(stderr, "umpath-sim: %s\n", line.c_str());
  }
}

SimBackend::Model* SimBackend::Find(absl::string_view name) const {
  auto it = models_.find(name);
  return it == models_.end() ? nullptr : it->second.get();
}

bool SimBackend::Owns(absl::string_view controller) const { return Find(controller) != nullptr; }

absl::Status SimBackend::AttachAll() {
  for (auto& [name, m] : models_) {
    if (m->driver == nullptr) RETURN_IF_ERROR(BringUp(m.get()));
  }
  return absl::OkStatus();
}

// As a real backend: Identify Controller, one queue pair per worker, the supervisor,
// the ANA log, then each namespace's Identify data as a path.
absl::Status SimBackend::BringUp(Model* m) {
  if (sup_->Known(m->name)) {
    return WithReason(absl::UnavailableError(absl::StrCat(m->name, " is still being let go; try again")),
                      reason::kControllerRetiring, {{"controller", m->name}});
  }
  const SimControllerIdentity cid{.subsys_nqn = m->nqn,
                                  .serial = absl::StrCat("SIM-", m->subsystem, "-", m->index),
                                  .cntlid = static_cast<uint16_t>(m->index + 1),
                                  .namespaces = options_.namespaces};
  absl::StatusOr<nvme::ControllerIdentity> id = nvme::ParseIdentifyController(IdentifyControllerPage(cid));
  if (!id.ok()) return absl::InternalError(absl::StrCat(m->name, ": Identify Controller: ", id.status().message()));
  const uint32_t max_transfer = 4096u << id->mdts;
  auto d = std::make_unique<Driver>(this, m);
  d->id = *id;
  d->max_transfer = max_transfer;
  for (size_t w = 0; w < workers_.size(); ++w) {
    SimQueueOptions qo;
    qo.depth = options_.queue_depth;
    qo.max_transfer = max_transfer;
    qo.timeout_ns = options_.io_timeout_ns;
    qo.clock = options_.clock;
    qo.media = media_[m->subsystem];
    qo.faults = m->faults;
    qo.link = d->link;
    qo.wake_timer = options_.wake_timers;
    // A worker's thread: the reset is the control thread's.
    qo.on_timeout = [plane = plane_, sup = sup_, name = m->name] {
      plane->Post([sup, name] { (void)sup->Reset(name, "I/O command timeout"); });
    };
    ASSIGN_OR_RETURN(std::unique_ptr<SimQueuePair> qp, SimQueuePair::Create(std::move(qo)));
    d->qps.push_back(std::move(qp));
  }
  ControllerSpec spec;
  spec.name = m->name;
  spec.subsys_nqn = id->subsys_nqn;
  spec.transport = "sim";
  spec.address = m->name;
  spec.ana_supported = id->ana_supported;
  spec.anagrpmax = id->anagrpmax;
  spec.anatt_secs = id->anatt_secs;
  spec.crdt = id->crdt;
  spec.cqt_ms = id->cqt_ms;
  spec.state = ControllerState::kLive;
  std::vector<QueuePair*> raw;
  for (auto& qp : d->qps) raw.push_back(qp.get());
  Driver* driver = d.get();
  if (absl::Status s = sup_->Add(std::move(d), spec, raw); !s.ok()) {
    return Prefixed(m->name, s);
  }
  m->driver = driver;
  // Before the paths, so each starts in its group's state rather than pending.
  ReadAnaLog(m);
  int joined = 0;
  for (uint32_t nsid = 1; nsid <= options_.namespaces; ++nsid) {
    if (m->detached_nsids.contains(nsid)) continue;
    if (absl::Status s = AddNamespacePath(m, nsid); !s.ok()) {
      Log(absl::StrCat(m->name, " nsid ", nsid, ": ", s.message()));
      continue;
    }
    ++joined;
  }
  Log(absl::StrCat(m->name, ": attached (", id->subsys_nqn, ", ", joined, " of ", options_.namespaces,
                   " namespace(s) as paths)"));
  return absl::OkStatus();
}

absl::Status SimBackend::AddNamespacePath(Model* m, uint32_t nsid) {
  const SimNamespaceIdentity nsi{.size_blocks = options_.namespace_bytes / options_.block_size,
                                 .block_size = options_.block_size,
                                 .ana_group_id = nsid,
                                 .nguid = SimNguid(m->subsystem, nsid),
                                 .uuid = SimUuid(m->subsystem, nsid)};
  ASSIGN_OR_RETURN(nvme::NamespaceIdentity ns, nvme::ParseIdentifyNamespace(IdentifyNamespacePage(nsi)));
  ASSIGN_OR_RETURN(nvme::NamespaceIds ids, nvme::ParseNamespaceIdDescriptors(NamespaceIdDescriptorPage(nsi)));
  return mp_->AddPath(PathSpecFromIdentify(m->name, nsid, ns, ids, m->driver->id, m->driver->max_transfer))
      .status();
}

absl::Status SimBackend::NamespaceFault(Model* m, const SimFault& f) {
  if (f.nsid < 1 || f.nsid > options_.namespaces) {
    return absl::InvalidArgumentError(absl::StrCat("nsid ", f.nsid, " is not one of ", m->name,
                                                   "'s namespaces (1..", options_.namespaces, ")"));
  }
  const bool lose = f.kind == SimFault::Kind::kNamespaceLoss;
  if (m->detached_nsids.contains(f.nsid) == lose) {
    return absl::FailedPreconditionError(
        absl::StrCat("nsid ", f.nsid, lose ? " is detached from " : " is attached to ", m->name, " already"));
  }
  if (lose) {
    m->detached_nsids.insert(f.nsid);
    if (m->driver == nullptr) return absl::OkStatus();
    return mp_->RemovePath(m->name, f.nsid, "the simulated namespace was detached from the controller");
  }
  m->detached_nsids.erase(f.nsid);
  if (m->driver == nullptr) return absl::OkStatus();  // it shows the namespace when it returns
  return AddNamespacePath(m, f.nsid);
}

void SimBackend::ReadAnaLog(Model* m) {
  if (absl::Status s = mp_->OnAnaLog(m->name, AnaLogPage(m->ana, m->ana_changes)); !s.ok()) {
    Log(absl::StrCat(m->name, ": ANA log rejected: ", s.message()));
  }
}

absl::Status SimBackend::Inject(absl::string_view controller, const SimFault& f) {
  Model* m = Find(controller);
  if (m == nullptr) {
    return absl::NotFoundError(absl::StrCat("no simulated controller \"", controller.substr(0, 64),
                                            "\" (they are named sim-SUBSYSTEM-CONTROLLER, from 0)"));
  }
  SimFaults& faults = *m->faults;
  using K = SimFault::Kind;
  switch (f.kind) {
    case K::kPathError: {
      if (f.status_code == 0 || f.status_code > 0x7ff) {
        return absl::InvalidArgumentError(
            "a path error needs an NVMe status: SCT 0..7 and SC 0..255, not success (0/0)");
      }
      if (f.count < 0) return absl::InvalidArgumentError("count is 0 (until cleared) or more");
      if (f.nsid > options_.namespaces) {
        return absl::InvalidArgumentError(absl::StrCat("nsid ", f.nsid, " is not one of ", controller,
                                                       "'s namespaces (1..", options_.namespaces, "; 0: all)"));
      }
      // Status first, then the count that arms it: a worker that sees the count sees it.
      faults.error_nsid.store(f.nsid, std::memory_order_relaxed);
      faults.error_status.store(nvme::Status::Make(f.status_code, f.dnr).ToCompletionField(),
                                std::memory_order_release);
      faults.errors_left.store(f.count == 0 ? -1 : f.count, std::memory_order_release);
      return absl::OkStatus();
    }
    case K::kAnaState: {
      if (f.ana_group < 1 || f.ana_group > options_.namespaces) {
        return absl::InvalidArgumentError(absl::StrCat("ANA group ", f.ana_group, " is not one of ", controller,
                                                       "'s (1..", options_.namespaces, ")"));
      }
      using A = nvme::AnaState;
      if (f.ana_state != A::kOptimized && f.ana_state != A::kNonOptimized && f.ana_state != A::kInaccessible &&
          f.ana_state != A::kPersistentLoss && f.ana_state != A::kChange) {
        return absl::InvalidArgumentError("an ANA state is optimized, non-optimized, inaccessible, "
                                          "persistent-loss or change");
      }
      m->ana[f.ana_group - 1] = f.ana_state;
      ++m->ana_changes;
      // Raised as an Asynchronous Event would be: the log is read on its own turn.
      if (m->driver != nullptr) {
        plane_->Post([this, alive = std::weak_ptr<bool>(alive_), name = m->name] {
          if (alive.expired()) return;
          Model* m = Find(name);
          if (m != nullptr && m->driver != nullptr && sup_->StateOf(name) == SupervisedState::kLive) {
            ReadAnaLog(m);
          }
        });
      }
      return absl::OkStatus();
    }
    case K::kLoss:
      if (m->driver == nullptr) {
        return absl::FailedPreconditionError(absl::StrCat(controller, " is not attached (lost or detached already)"));
      }
      m->driver->link->gone.store(true, std::memory_order_relaxed);
      Log(absl::StrCat(m->name, ": lost (simulated)"));
      return sup_->Detach(m->name, "the simulated controller was lost", /*device_gone=*/true);
    case K::kReturn:
      if (m->driver != nullptr) return absl::FailedPreconditionError(absl::StrCat(controller, " is attached"));
      return BringUp(m);
    case K::kStuck:
      faults.stuck.store(true, std::memory_order_relaxed);
      return absl::OkStatus();
    case K::kNamespaceLoss:
    case K::kNamespaceReturn:
      return NamespaceFault(m, f);
    case K::kLatency:
      if (f.latency_ns < 0 || f.latency_ns > 10'000'000'000) {
        return absl::InvalidArgumentError("latency is 0..10 s");
      }
      faults.latency_ns.store(f.latency_ns, std::memory_order_relaxed);
      return absl::OkStatus();
  }
  return absl::InvalidArgumentError("unknown fault kind");
}

absl::Status SimBackend::ClearFaults(absl::string_view controller) {
  Model* m = Find(controller);
  if (m == nullptr) return absl::NotFoundError(absl::StrCat("no simulated controller \"", controller.substr(0, 64), "\""));
  m->faults->Clear();
  return absl::OkStatus();
}

SimControllerInfo SimBackend::InfoOf(const Model& m) const {
  const SimFaults& f = *m.faults;
  return SimControllerInfo{.name = m.name,
                           .subsys_nqn = m.nqn,
                           .attached = m.driver != nullptr,
                           .ana = m.ana,
                           .error_status = f.error_status.load(std::memory_order_relaxed),
                           .errors_left = f.errors_left.load(std::memory_order_relaxed),
                           .errors_injected = f.errors_injected.load(std::memory_order_relaxed),
                           .stuck = f.stuck.load(std::memory_order_relaxed),
                           .latency_ns = f.latency_ns.load(std::memory_order_relaxed),
                           .detached_nsids = {m.detached_nsids.begin(), m.detached_nsids.end()}};
}

absl::StatusOr<SimControllerInfo> SimBackend::Describe(absl::string_view controller) const {
  const Model* m = Find(controller);
  if (m == nullptr) return absl::NotFoundError(absl::StrCat("no simulated controller \"", controller.substr(0, 64), "\""));
  return InfoOf(*m);
}

std::vector<SimControllerInfo> SimBackend::DescribeAll() const {
  std::vector<SimControllerInfo> out;
  for (const auto& [name, m] : models_) out.push_back(InfoOf(*m));
  return out;
}

}  // namespace umpath::sim
