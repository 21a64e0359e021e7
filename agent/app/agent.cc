#include "agent/app/agent.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"
#include "agent/base/error_reason.h"
#include "agent/base/status_macros.h"
#include "agent/handover/state.h"

namespace umpath::app {

namespace {

void Log(const std::string& line) { std::fprintf(stderr, "umpathd: %s\n", line.c_str()); }

}  // namespace

absl::StatusOr<std::unique_ptr<Agent>> Agent::Create(AgentConfig config, AgentMode mode) {
  std::unique_ptr<Agent> a(new Agent(std::move(config)));
  // Every step below may fail; returning destroys `a`, which stops what had started.
  RETURN_IF_ERROR(a->StartCore());
  if (mode.start_workers) {
    for (Worker* w : a->worker_ptrs_) w->Start();
    a->workers_started_ = true;
  }
  RETURN_IF_ERROR(a->StartControl());
  std::unique_ptr<vfio::HandOverPackage> incoming;
  if (a->config_.take_over) {
    ASSIGN_OR_RETURN(incoming, a->TakeOver());
  }
  RETURN_IF_ERROR(a->StartBackends(std::move(incoming)));
  if (a->config_.ublk) {
    a->export_ops_ = std::make_unique<UblkExportOps>(
        "block devices are offered once the workload ends");
    a->config_.server.service.exports = a->export_ops_.get();
    if (a->workers_started_) {
      RETURN_IF_ERROR(a->StartExporter());
    } else if (access(a->config_.ublk->control_path.c_str(), F_OK) == 0) {
      a->config_.server.service.backends.push_back("ublk");  // once the workload ends
    }
  } else {
    a->config_.server.service.no_export_reason = "started with --ublk=false";
  }
  if (mode.on_stop_requested) {
    a->wake_ = mode.on_stop_requested;
    a->stop_ops_ = std::make_unique<AgentStopOps>(&a->stop_choice_, a->export_ops_.get(),
                                                  std::move(mode.on_stop_requested));
    a->config_.server.service.stop = a->stop_ops_.get();
  }
  RETURN_IF_ERROR(a->StartServer());
  if (a->wake_ && !a->config_.handover_socket.empty()) a->ListenForSuccessor();
  return a;
}

absl::Status Agent::StartCore() {
  absl::StatusOr<std::unique_ptr<server::SettingsStore>> store =
      server::SettingsStore::Open(config_.state_file);
  if (!store.ok()) return Prefixed("state file", store.status());
  store_ = std::move(*store);
  if (!store_->problem().empty()) Log(absl::StrCat("state file: ", store_->problem()));
  absl::StatusOr<std::unique_ptr<server::AttachmentStore>> attachments =
      server::AttachmentStore::Open(config_.state_file + ".controllers");
  if (!attachments.ok()) return Prefixed("state file", attachments.status());
  attachments_ = std::move(*attachments);
  if (!attachments_->problem().empty()) Log(absl::StrCat("state file: ", attachments_->problem()));
  MultipathOptions mo;
  mo.initial_settings = [s = store_.get()](absl::string_view head) { return s->Lookup(head); };
  mo.default_policy = config_.default_policy;
  mo.default_delayed_removal_secs = config_.default_delayed_removal_secs;
  mo.default_io_fail_timeout_secs = config_.default_io_fail_timeout_secs;
  for (int i = 0; i < config_.workers; ++i) {
    Worker::Options wo;
    wo.index = i;
    workers_.push_back(Worker::Create(wo));
    if (!workers_.back()) return absl::ResourceExhaustedError("a worker's eventfd or epoll");
    worker_ptrs_.push_back(workers_.back().get());
  }
  mo.workers = worker_ptrs_;
  // Events and head uids of this run never repeat an earlier run's (a watcher resuming
  // across a restart is told, not served the wrong journal).
  const Incarnation inc = MakeIncarnation(*SystemClock::Get());
  mo.incarnation = inc.name;
  mo.first_revision = inc.first;
  mo.first_head_uid = inc.first;
  ASSIGN_OR_RETURN(mp_, Multipath::Create(mo));
  mp_->Start();
  ASSIGN_OR_RETURN(logger_, EventLogger::Start(mp_.get()));
  return absl::OkStatus();
}

absl::Status Agent::StartControl() {
  ASSIGN_OR_RETURN(plane_, ControlPlane::Create());
  plane_->Start();
  SupervisorOptions so;
  so.health_interval_ms = config_.vfio ? config_.vfio->health_interval_ms : 0;
  supervisor_ = std::make_unique<ControllerSupervisor>(mp_.get(), plane_.get(), so);
  return absl::OkStatus();
}

absl::Status Agent::StartBackends(std::unique_ptr<vfio::HandOverPackage> incoming) {
  server::ServiceOptions& svc = config_.server.service;
  if (config_.vfio) {
    absl::StatusOr<std::unique_ptr<vfio::VfioManager>> vm = vfio::VfioManager::Create(
        mp_.get(), plane_.get(), supervisor_.get(), worker_ptrs_, *config_.vfio, std::move(incoming));
    if (!vm.ok()) return Prefixed("vfio", vm.status());
    vfio_ = std::move(*vm);
    int attached = 0, adopted = 0;
    plane_->Run([&] {
      for (const auto& [bdf, st] : vfio_->AdoptHandedOver()) adopted += st.ok();
      for (const auto& [bdf, st] : vfio_->AttachConfigured()) attached += st.ok();
      vfio_->Start();
    });
    Log(absl::StrCat("vfio: ", attached, " controller(s) attached",
                     adopted > 0 ? absl::StrCat(", ", adopted, " adopted running") : ""));
    svc.backends.push_back("vfio");
  }
  // The kernel's NVMe controllers: claimed by the configuration, or attached through
  // the API (a CSI sidecar connecting a volume's fabrics paths).
  if (config_.kernel) {
    absl::StatusOr<std::unique_ptr<kernel::LibnvmeBackend>> kb = kernel::LibnvmeBackend::Create(
        mp_.get(), plane_.get(), supervisor_.get(), worker_ptrs_, *config_.kernel);
    if (!kb.ok()) return Prefixed("kernel backend", kb.status());
    kernel_ = std::move(*kb);
    if (!config_.kernel->claims.empty() || !config_.kernel->connect.empty()) {
      // Connects are offloaded: wait here, not on the control thread.
      int attached = 0;
      Notification done;
      plane_->Post([&] {
        kernel_->AttachConfigured([&](kernel::LibnvmeBackend::Outcomes out) {
          for (const auto& [what, st] : out) attached += st.ok();
          done.Notify();
        });
      });
      done.WaitFor(std::chrono::hours(24));
      Log(absl::StrCat("kernel: ", attached, " controller(s) claimed"));
    }
    plane_->Run([&] { kernel_->Start(); });
    if (!kernel::KernelMultipathEnabled()) svc.backends.push_back("kernel");
  }
  if (config_.sim) RETURN_IF_ERROR(StartSimulator());
  if (vfio_ || kernel_ || sim_) {
    controller_ops_ = std::make_unique<BackendControllerOps>(
        plane_.get(), supervisor_.get(), vfio_.get(), kernel_.get(), attachments_.get(), Log);
    svc.controllers = controller_ops_.get();
    // Not waited for: a fabrics connect may take its time; each outcome is logged.
    controller_ops_->ReattachRemembered([](int attached, int failed) {
      if (attached + failed > 0) {
        Log(absl::StrCat("remembered controllers: ", attached, " attached again, ", failed, " not"));
      }
    });
  }
  return absl::OkStatus();
}

// Controllers in memory (--sim), and their faults through umpath.v1alpha.
absl::Status Agent::StartSimulator() {
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<std::unique_ptr<sim::SimBackend>> sb =
      sim::SimBackend::Create(mp_.get(), plane_.get(), supervisor_.get(), worker_ptrs_, *config_.sim);
  if (!sb.ok()) return Prefixed("simulator", sb.status());
  sim_ = std::move(*sb);
  absl::Status attached;
  plane_->Run([&] { attached = sim_->AttachAll(); });
  if (!attached.ok()) return Prefixed("simulator", attached);
  const sim::SimOptions& o = *config_.sim;
  Log(absl::StrCat("simulator: ", o.subsystems * o.controllers, " controller(s) of ", o.subsystems,
                   " subsystem(s), ", o.subsystems * o.namespaces, " head(s) of ", o.controllers,
                   " path(s), in ",
                   std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count(),
                   " ms"));
  sim_ops_ = std::make_unique<SimFaultOps>(plane_.get(), supervisor_.get(), sim_.get());
  config_.server.simulator = sim_ops_.get();
  config_.server.service.backends.push_back("sim");
  return absl::OkStatus();
}

// The one shutdown path of controllers: the supervisor detaches and fences each, on the
// control thread, while the workers still run; then the control thread ends.
void Agent::StopControllers() {
  if (!plane_) return;
  if (supervisor_) {
    // vfio: 10 s for a controller to be fenced (CQT on top); the kernel: its own I/O
    // timeout bounds what it holds.
    int64_t grace_ms = 10'000;
    if (config_.kernel) grace_ms = std::max<int64_t>(grace_ms, config_.kernel->drain_timeout_ms);
    Notification done;
    const bool hand_over = successor_adopts_ && vfio_ != nullptr;
    plane_->Run([&] {
      supervisor_->StopAll(grace_ms * 1'000'000, [&](size_t) { done.Notify(); }, hand_over);
    });
    done.WaitFor(std::chrono::hours(24));
  }
  // The backends and the supervisor stay until the members go: the block devices'
  // buffers are DMA memory of the vfio container, freed after them.
  plane_->Stop();
}

IoMemoryAllocator Agent::io_allocator() const {
  return [vm = vfio_.get()](uint64_t bytes) -> absl::StatusOr<IoMemory> {
    if (vm != nullptr) {
      absl::StatusOr<std::unique_ptr<vfio::DmaBuffer>> b = vm->AllocateIoBuffer(bytes);
      if (!b.ok()) return b.status();
      std::shared_ptr<vfio::DmaBuffer> owner = std::move(*b);
      return IoMemory{owner->host(), owner};
    }
    void* p = std::aligned_alloc(4096, (bytes + 4095) & ~uint64_t{4095});
    if (p == nullptr) return absl::ResourceExhaustedError("no memory for I/O buffers");
    return IoMemory{p, std::shared_ptr<void>(p, std::free)};
  };
}

// Bad options are an error; a kernel without ublk is not: the agent serves without
// block devices, and says why to whoever asks for one.
absl::Status Agent::StartExporter() {
  ublk::ExporterOptions eo = *config_.ublk;
  eo.head_delayed_removal_secs = [store = store_.get()](const std::string& head) -> int64_t {
    std::optional<HeadSettings> s = store->Lookup(head);
    return s && s->delayed_removal_secs ? *s->delayed_removal_secs : 0;
  };
  // UpdateHeadSettings export = true, kept before the head appeared.
  eo.exports_wanted = [store = store_.get()] {
    std::vector<std::string> heads;
    for (const auto& [head, kept] : store->Kept()) {
      if (kept.export_wanted.value_or(false)) heads.push_back(head);
    }
    return heads;
  };
  eo.workers = worker_ptrs_;
  eo.alloc = io_allocator();
  // Zero copy serves kernel paths; a vfio path would need every request copied in
  // (staged), a copy the driver's own (NEED_GET_DATA) beats (issue 21's bench).
  eo.data.zero_copy = eo.data.zero_copy && vfio_ == nullptr;
  absl::StatusOr<std::unique_ptr<ublk::Exporter>> ex = ublk::Exporter::Create(mp_.get(), plane_.get(), eo);
  if (!ex.ok()) {
    if (absl::IsInvalidArgument(ex.status())) return Prefixed("ublk", ex.status());
    Log(absl::StrCat("no block devices: ", ex.status().message()));
    export_ops_->Unavailable(absl::StrCat("this agent has no block devices: ", ex.status().message()));
    return absl::OkStatus();
  }
  exporter_ = std::move(*ex);
  exporter_->Start();
  export_ops_->Set(exporter_.get());
  if (!server_) config_.server.service.backends.push_back("ublk");
  return absl::OkStatus();
}

// The stop's first step for the block devices (the exporter's BeginStop), with a line
// saying what becomes of them.
void Agent::StopBlockDevices(ublk::StopMode mode) {
  auto done = std::make_shared<Notification>();
  auto result = std::make_shared<absl::Status>();
  exporter_->BeginStop(mode, [done, result](absl::Status s) {
    *result = std::move(s);
    done->Notify();
  });
  done->WaitFor(std::chrono::hours(24));
  if (!result->ok()) {
    Log(absl::StrCat("stopping: the block devices cannot be handed over (", result->message(),
                     "); they are removed"));
    return;
  }
  switch (mode) {
    case ublk::StopMode::kHandOver:
      return Log("stopping: the block devices stay for the next agent (--stop=remove removes them)");
    case ublk::StopMode::kRemove:
      return Log("stopping: the block devices are removed, but those in use stay for the next "
                 "agent (--stop=force-remove removes them too)");
    case ublk::StopMode::kForceRemove:
      return Log("stopping: every block device is removed, in use or not");
  }
}

absl::Status Agent::StartServer() {
  rpc_stats_ = std::make_unique<server::RpcStats>(Log);
  config_.server.rpc_stats = rpc_stats_.get();
  absl::StatusOr<std::unique_ptr<server::ControlServer>> srv =
      server::ControlServer::Create(mp_.get(), config_.server, store_.get());
  if (!srv.ok()) return Prefixed("control server", srv.status());
  server_ = std::move(*srv);
  Log(absl::StrCat("serving umpath.v1.MultipathControl on unix:", config_.server.socket_path,
                   " (node ", config_.server.service.node, ")"));
  if (config_.metrics_address.empty()) return absl::OkStatus();
  server::MetricsOptions mo;
  mo.address = config_.metrics_address;
  mo.tls_cert_file = config_.metrics_tls_cert_file;
  mo.tls_key_file = config_.metrics_tls_key_file;
  mo.tls_client_ca_file = config_.metrics_tls_client_ca_file;
  mo.mp = mp_.get();
  mo.rpcs = rpc_stats_.get();
  mo.version = config_.server.service.version;
  mo.revision = config_.server.service.revision;
  mo.path_detail = config_.metrics_path_detail;
  server::ControlService* svc = &server_->service();
  mo.watchers = [svc] { return static_cast<uint64_t>(svc->watchers()); };
  mo.watcher_ends = [svc] { return svc->watcher_ends(); };
  if (export_ops_) mo.buffers = [ops = export_ops_.get()] { return ops->Budget(); };
  absl::StatusOr<std::unique_ptr<server::MetricsEndpoint>> m = server::MetricsEndpoint::Create(mo);
  if (!m.ok()) return Prefixed("metrics", m.status());
  const std::string& addr = config_.metrics_address;
  Log(absl::StrCat("serving metrics on ", (*m)->scheme(), "://", addr.substr(0, addr.rfind(':')), ":",
                   (*m)->port(), "/metrics (path detail ", server::PathDetailName(mo.path_detail), ")"));
  // Stopped by the server's Shutdown once health is NOT_SERVING and watchers have ended.
  server_->AdoptMetrics(std::move(*m));
  return absl::OkStatus();
}

absl::Status Agent::StartServing(bool block_devices) {
  if (workers_started_) return absl::OkStatus();
  for (Worker* w : worker_ptrs_) w->Start();
  workers_started_ = true;
  if (block_devices && config_.ublk) return StartExporter();
  return absl::OkStatus();
}

void Agent::KeepAlive(std::chrono::nanoseconds every, std::function<void()> ping) {
  keep_alive_ = [this, every, ping = std::move(ping)] {
    ping();
    plane_->After(every.count(), [this] { keep_alive_(); });
  };
  plane_->Post([this] { keep_alive_(); });
}

std::string Agent::StatusLine() const {
  size_t heads = 0, unselectable = 0;
  for (const HeadInfo& h : mp_->ListHeads()) {
    ++heads;
    if (h.selectable_paths == 0) ++unselectable;
  }
  return absl::StrCat(heads, " head(s), ", unselectable, " without a selectable path; serving on unix:",
                      config_.server.socket_path);
}

Agent::~Agent() {
  // Letting controllers go takes the workers (they take the queue pairs out of
  // service): a start that failed before they ran starts them now.
  if (!workers_started_) {
    for (Worker* w : worker_ptrs_) w->Start();
  }
  const StopChoice::Decided stop = DecideStop("the agent's end");
  // No successor is taken from now on, and what OnSuccessor wrote (successor_,
  // successor_adopts_) is read below on this thread: the Run orders the two.
  if (handover_listen_.valid()) plane_->Run([this] { plane_->Unwatch(handover_listen_.get()); });
  // A StopAgent answered before it woke main: its answer is sent whole before the server
  // goes (finished calls complete within the shutdown's deadline).
  if (server_) server_->Shutdown();
  if (exporter_) {
    // The queues of the devices handed over hold what comes from now on (and what the
    // core fails below): the next agent gets it with the devices.
    StopBlockDevices(stop.mode);
    plane_->Run([this] { exporter_->StopFollowing(); });
  }
  if (successor_adopts_ && vfio_) {
    DrainVfioIo(2000);
    plane_->Run([this] { vfio_->BeginHandOver(); });
  }
  StopControllers();
  if (successor_.valid()) SendHandOver();
  // Fails what still waits (a handed-over device holds it), so stopping the block
  // devices never waits on it.
  if (mp_) mp_->Shutdown();
  if (exporter_) exporter_->Shutdown();
  logger_.reset();  // its journal is closed: it ends
  for (Worker* w : worker_ptrs_) w->Stop();
  // The successor goes on once this closes: the controllers are its own by now, and
  // what the members still hold (the block devices' buffers, their files) it keeps
  // clear of (the buffers' IOVAs are never reused; a device is taken over once free).
  successor_ = handover::UniqueFd();
  // A successor that connected as this agent was stopping anyway was never answered: the
  // close tells it this agent has gone.
  handover_listen_ = handover::UniqueFd();
}

// ---- The hand-over (issue 16 item 3). ----

absl::StatusOr<std::unique_ptr<vfio::HandOverPackage>> Agent::TakeOver() {
  const std::string& path = config_.handover_socket;
  absl::StatusOr<handover::UniqueFd> conn = handover::Connect(path);
  if (!conn.ok()) {
    Log(absl::StrCat("take-over: no agent answers on ", path, " (", conn.status().message(),
                     "); starting as usual"));
    return nullptr;
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto ms = [&t0] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  };
  handover::Hello hello;
  hello.version = config_.server.service.version;
  hello.workers = static_cast<uint32_t>(config_.workers);
  hello.queue_depth = config_.vfio ? config_.vfio->queue_depth : 2;
  if (absl::Status s = handover::Send(conn->get(), handover::Encode(hello), {}); !s.ok()) {
    return Prefixed("take-over", s);
  }
  // Its stop takes up to ~45 s at worst (a kernel path's drain); then it answers.
  constexpr int kWaitMs = 120'000;
  absl::StatusOr<handover::Message> m = handover::Receive(conn->get(), kWaitMs);
  if (!m.ok() && absl::IsUnavailable(m.status())) {
    // It was stopping already when this one came, and has gone without taking it.
    Log(absl::StrCat("take-over: the running agent ended without answering (", m.status().message(),
                     "); starting as usual"));
    return nullptr;
  }
  if (!m.ok()) return Prefixed("take-over: the running agent's answer", m.status());
  absl::StatusOr<handover::Answer> answer = handover::DecodeAnswer(m->text);
  if (!answer.ok()) return Prefixed("take-over", answer.status());
  std::unique_ptr<vfio::HandOverPackage> package;
  if (answer->adopt) {
    absl::StatusOr<handover::Message> sm = handover::Receive(conn->get(), kWaitMs);
    if (!sm.ok()) return Prefixed("take-over: the running agent's state", sm.status());
    absl::StatusOr<handover::State> state = handover::DecodeState(sm->text, sm->fds.size());
    if (state.ok()) {
      package = std::make_unique<vfio::HandOverPackage>();
      package->state = *std::move(state);
      package->fds = std::move(sm->fds);
    } else {
      // Its controllers are idle and let go; they are brought up again as usual.
      Log(absl::StrCat("take-over: the state handed over is refused (", state.status().message(),
                       "); its controllers are brought up again"));
    }
  }
  Log(absl::StrCat("take-over: the running agent ", answer->adopt ? "hands over: " : "takes the simple path: ",
                   answer->why, " (", ms(), " ms)"));
  // Until it has gone: its files (block devices, vfio) closed, its buffers unmapped.
  absl::StatusOr<handover::Message> end = handover::Receive(conn->get(), kWaitMs);
  if (end.ok() || !absl::IsUnavailable(end.status())) {
    return Prefixed("take-over: waiting for the running agent to end",
                    end.ok() ? absl::DataLossError("it sent more than it should") : end.status());
  }
  Log(absl::StrCat("take-over: the previous agent has ended (", ms(), " ms)"));
  return package;
}

void Agent::ListenForSuccessor() {
  const std::string& path = config_.handover_socket;
  // Another agent answering there keeps its socket: this one takes no successors.
  if (handover::Connect(path).ok()) {
    Log(absl::StrCat("hand-over: another agent answers on ", path, "; this one takes no successor"));
    return;
  }
  absl::StatusOr<handover::UniqueFd> l = handover::Listen(path);
  if (!l.ok()) {
    Log(absl::StrCat("hand-over: ", l.status().message(), "; this agent takes no successor"));
    return;
  }
  handover_listen_ = std::move(*l);
  plane_->Run([this] { (void)plane_->Watch(handover_listen_.get(), [this] { OnSuccessor(); }); });
}

// Control thread.
void Agent::OnSuccessor() {
  handover::UniqueFd conn(accept4(handover_listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!conn.valid()) return;
  absl::StatusOr<handover::Peer> peer = handover::PeerOf(conn.get());
  if (!peer.ok() || (peer->uid != 0 && peer->uid != geteuid())) {
    Log(absl::StrCat("hand-over: refused a caller that is not root (uid ", peer.ok() ? peer->uid : -1, ")"));
    return;
  }
  // Its hello comes with the connection; a caller that sends none in a second is dropped.
  absl::StatusOr<handover::Message> m = handover::Receive(conn.get(), 1000);
  absl::StatusOr<handover::Hello> hello =
      m.ok() ? handover::DecodeHello(m->text) : absl::StatusOr<handover::Hello>(m.status());
  if (!hello.ok()) {
    Log(absl::StrCat("hand-over: pid ", peer->pid, ": ", hello.status().message()));
    return;
  }
  if (successor_.valid()) {
    (void)handover::Send(conn.get(), handover::Encode(handover::Answer{false, "another successor came first"}), {});
    return;
  }
  std::string why;
  if (hello->protocol != handover::kProtocol) {
    why = absl::StrCat("it speaks hand-over protocol ", hello->protocol, " and this agent ", handover::kProtocol);
  } else if (!vfio_) {
    why = "this agent drives no vfio controller";
  } else if (hello->workers != static_cast<uint32_t>(config_.workers)) {
    why = absl::StrCat("it has ", hello->workers, " workers and this agent ", config_.workers,
                       ": the I/O queues are one per worker");
  } else if (hello->queue_depth != config_.vfio->queue_depth) {
    why = absl::StrCat("its vfio queues are ", hello->queue_depth, " deep and this agent's ",
                       config_.vfio->queue_depth);
  }
  const std::string by = absl::StrCat("a successor, pid ", peer->pid, " (version ", hello->version, ")");
  if (!stop_choice_.Request(ublk::StopMode::kHandOver, by, /*for_successor=*/true)) {
    why = "this agent is stopping already";
  }
  successor_adopts_ = why.empty();
  if (!successor_adopts_) {
    (void)handover::Send(conn.get(), handover::Encode(handover::Answer{false, why}), {});
  }
  Log(absl::StrCat("hand-over: ", by, successor_adopts_ ? " takes over the running controllers"
                                                         : absl::StrCat(" takes the simple path: ", why)));
  successor_ = std::move(conn);
  plane_->Unwatch(handover_listen_.get());
  if (why != "this agent is stopping already") wake_();
}

void Agent::DrainVfioIo(int64_t timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int64_t in_flight = 0;
    for (const HeadInfo& h : mp_->ListHeads()) {
      for (const PathInfo& p : h.paths) {
        if (vfio_->Owns(p.name)) in_flight += p.counters.in_flight;
      }
    }
    if (in_flight == 0) return;
    if (std::chrono::steady_clock::now() > deadline) {
      Log(absl::StrCat("hand-over: ", in_flight, " command(s) still in flight on vfio paths; their controllers are fenced"));
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void Agent::SendHandOver() {
  std::unique_ptr<vfio::HandOverPackage> p = successor_adopts_ && vfio_ ? vfio_->TakeHandOver() : nullptr;
  if (!successor_adopts_) return;  // answered already
  if (p == nullptr) {
    (void)handover::Send(successor_.get(),
                         handover::Encode(handover::Answer{false, "no controller was idle to hand over"}), {});
    return;
  }
  std::vector<int> fds;
  for (const handover::UniqueFd& fd : p->fds) fds.push_back(fd.get());
  const size_t n = p->state.controllers.size();
  absl::Status s = handover::Send(successor_.get(),
                                  handover::Encode(handover::Answer{true, absl::StrCat(n, " controller(s) running")}), {});
  if (s.ok()) s = handover::Send(successor_.get(), handover::Encode(p->state), fds);
  Log(s.ok() ? absl::StrCat("hand-over: ", n, " controller(s) handed over running")
             : absl::StrCat("hand-over: sending the state: ", s.message()));
}

}  // namespace umpath::app
