#include "agent/app/agent.h"

#include <unistd.h>

#include <cstdio>
#include <algorithm>
#include <chrono>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "agent/base/status_macros.h"

namespace umpath::app {

namespace {

void Log(const std::string& line) { std::fprintf(stderr, "umpathd: %s\n", line.c_str()); }

absl::Status Prefixed(absl::string_view what, const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat(what, ": ", s.message()));
}

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
  RETURN_IF_ERROR(a->StartBackends());
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
    a->stop_ops_ = std::make_unique<AgentStopOps>(&a->stop_choice_, a->export_ops_.get(),
                                                  std::move(mode.on_stop_requested));
    a->config_.server.service.stop = a->stop_ops_.get();
  }
  RETURN_IF_ERROR(a->StartServer());
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

absl::Status Agent::StartBackends() {
  server::ServiceOptions& svc = config_.server.service;
  if (config_.vfio) {
    absl::StatusOr<std::unique_ptr<vfio::VfioManager>> vm = vfio::VfioManager::Create(
        mp_.get(), plane_.get(), supervisor_.get(), worker_ptrs_, *config_.vfio);
    if (!vm.ok()) return Prefixed("vfio", vm.status());
    vfio_ = std::move(*vm);
    int attached = 0;
    plane_->Run([&] {
      for (const auto& [bdf, st] : vfio_->AttachConfigured()) attached += st.ok();
      vfio_->Start();
    });
    Log(absl::StrCat("vfio: ", attached, " controller(s) attached"));
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
  if (vfio_ || kernel_) {
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
    plane_->Run([&] { supervisor_->StopAll(grace_ms * 1'000'000, [&](size_t) { done.Notify(); }); });
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
  eo.workers = worker_ptrs_;
  eo.alloc = io_allocator();
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
  mo.mp = mp_.get();
  mo.rpcs = rpc_stats_.get();
  mo.version = config_.server.service.version;
  server::ControlService* svc = &server_->service();
  mo.watchers = [svc] { return static_cast<uint64_t>(svc->watchers()); };
  mo.watcher_ends = [svc] { return svc->watcher_ends(); };
  if (export_ops_) mo.buffers = [ops = export_ops_.get()] { return ops->Budget(); };
  absl::StatusOr<std::unique_ptr<server::MetricsEndpoint>> m = server::MetricsEndpoint::Create(mo);
  if (!m.ok()) return Prefixed("metrics", m.status());
  metrics_ = std::move(*m);
  const std::string& addr = config_.metrics_address;
  Log(absl::StrCat("serving metrics on http://", addr.substr(0, addr.rfind(':')), ":",
                   metrics_->port(), "/metrics"));
  return absl::OkStatus();
}

absl::Status Agent::StartServing(bool block_devices) {
  if (workers_started_) return absl::OkStatus();
  for (Worker* w : worker_ptrs_) w->Start();
  workers_started_ = true;
  if (block_devices && config_.ublk) return StartExporter();
  return absl::OkStatus();
}

Agent::~Agent() {
  // Letting controllers go takes the workers (they take the queue pairs out of
  // service): a start that failed before they ran starts them now.
  if (!workers_started_) {
    for (Worker* w : worker_ptrs_) w->Start();
  }
  const StopChoice::Decided stop = DecideStop("the agent's end");
  metrics_.reset();
  // A StopAgent answered before it woke main: its answer is sent whole before the server
  // goes (finished calls complete within the shutdown's deadline).
  if (server_) server_->Shutdown();
  if (exporter_) {
    // The queues of the devices handed over hold what comes from now on (and what the
    // core fails below): the next agent gets it with the devices.
    StopBlockDevices(stop.mode);
    plane_->Run([this] { exporter_->StopFollowing(); });
  }
  StopControllers();
  // Fails what still waits (a handed-over device holds it), so stopping the block
  // devices never waits on it.
  if (mp_) mp_->Shutdown();
  if (exporter_) exporter_->Shutdown();
  logger_.reset();  // its journal is closed: it ends
  for (Worker* w : worker_ptrs_) w->Stop();
}

}  // namespace umpath::app
