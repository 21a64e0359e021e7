// umpathd: the node agent. Flags, or a config file of flags (--flagfile=/etc/umpath/umpathd.flags).
//
// This wires the multipath core, its workers, the backends (NVMe functions bound to
// vfio-pci; the kernel's NVMe controllers through libnvme and io_uring passthrough),
// the block-device frontend (ublk) and the control server.
//
// With --workload the agent also runs a workload on a head through the whole multipath
// path (SPDK's bdevperf: `umpathd --workload=verify ...`), prints its figures, and exits
// (or keeps serving with --workload_then=serve); the control API serves throughout.
#include <grp.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/base/mutex.h"
#include "agent/core/error_summary.h"
#include "agent/core/multipath.h"
#include "agent/core/types.h"
#include "agent/core/worker.h"
#include "agent/export/exporter.h"
#include "agent/kernel/libnvme_backend.h"
#include "agent/perf/workload.h"
#include "agent/vfio/vfio_manager.h"
#include "server/control_server.h"
#include "server/metrics.h"
#include "server/settings_store.h"

ABSL_FLAG(std::string, socket, "/run/umpath/umpathd.sock", "the control API's Unix socket");
ABSL_FLAG(std::string, socket_mode, "0660", "its mode, octal");
ABSL_FLAG(std::string, socket_group, "", "its group (name or gid); empty: the agent's own");
ABSL_FLAG(std::vector<std::string>, admin_uids, {"0"}, "uids with the admin role");
ABSL_FLAG(std::vector<std::string>, admin_groups, {}, "groups (names or gids) with the admin role");
ABSL_FLAG(std::vector<std::string>, viewer_uids, {}, "uids with the viewer role");
ABSL_FLAG(std::vector<std::string>, viewer_groups, {}, "groups (names or gids) with the viewer role");
ABSL_FLAG(std::string, node, "", "this node's name, as reported by GetAgentInfo (default: hostname)");
ABSL_FLAG(std::string, default_io_policy, "numa", "numa, round-robin or queue-depth");
ABSL_FLAG(std::string, default_delayed_removal_secs, "0", "0..86400, for new heads");
ABSL_FLAG(int, workers, 1, "I/O worker threads");
ABSL_FLAG(int, max_watchers, 1024, "WatchEvents streams in total");
ABSL_FLAG(int, max_watchers_per_caller, 128, "WatchEvents streams per caller identity");
ABSL_FLAG(int, watch_queue_limit, 4096, "events a watcher may fall behind by before it is ended");
ABSL_FLAG(int, progress_interval_ms, 10000, "progress marker interval on idle streams");
ABSL_FLAG(std::string, tcp_address, "", "optional mTLS listener, e.g. 0.0.0.0:7443");
ABSL_FLAG(std::string, tls_cert_file, "", "the server certificate (PEM) for --tcp_address");
ABSL_FLAG(std::string, tls_key_file, "", "its private key (PEM)");
ABSL_FLAG(std::string, tls_client_ca_file, "", "CA (PEM) that client certificates must chain to");
ABSL_FLAG(std::vector<std::string>, admin_names, {}, "certificate SANs or CNs with the admin role");
ABSL_FLAG(std::vector<std::string>, viewer_names, {}, "certificate SANs or CNs with the viewer role");
ABSL_FLAG(std::string, health_address, "", "optional plaintext health-only listener, e.g. 0.0.0.0:7444");
ABSL_FLAG(std::string, metrics_address, "",
          "Prometheus metrics (text exposition at /metrics) on this HOST:PORT, e.g. "
          "127.0.0.1:9810; empty: off");
ABSL_FLAG(std::string, state_file, "/var/lib/umpath/heads",
          "per-head settings made through the API, kept across restarts");

ABSL_FLAG(std::vector<std::string>, vfio_devices, {},
          "NVMe functions to drive through vfio-pci: PCI addresses, or \"all\" for every NVMe "
          "function bound to vfio-pci (every NVMe function with --bind_vfio)");
ABSL_FLAG(bool, bind_vfio, false, "bind the --vfio_devices to vfio-pci first");
ABSL_FLAG(int, queue_depth, 256,
          "entries per I/O queue (a vfio queue pair, a kernel path's io_uring), 2..4096");
ABSL_FLAG(int, io_timeout_ms, 30000, "I/O command timeout; a controller past it is reset");
ABSL_FLAG(int, health_check_ms, 1000,
          "how often each vfio controller's status is read (fatal status: reset; all ones: "
          "lost); 0: never");
ABSL_FLAG(bool, kernel, true,
          "offer the kernel's NVMe controllers as paths (libnvme, io_uring passthrough on "
          "/dev/ngXnY); needs nvme_core.multipath=N");
ABSL_FLAG(std::vector<std::string>, kernel_controllers, {},
          "kernel NVMe controllers to claim: subsystem NQNs (every controller of it) or "
          "controller names (nvme3)");
ABSL_FLAG(std::vector<std::string>, kernel_connect, {},
          "fabrics controllers to connect and claim, TRANSPORT:ADDRESS:SERVICE:NQN (an IPv6 "
          "address in brackets); one that goes away is connected again");
ABSL_FLAG(int, kernel_poll_ms, 1000,
          "how often each kernel controller's state and ANA log are read (the kernel keeps "
          "its ANA events to itself when its multipath is off)");
ABSL_FLAG(std::string, host_nqn, "", "host NQN for fabrics connects (default: /etc/nvme/hostnqn)");
ABSL_FLAG(std::string, host_id, "", "host ID for fabrics connects (default: /etc/nvme/hostid)");
ABSL_FLAG(int, fabrics_ctrl_loss_tmo_secs, 600,
          "how long the kernel keeps reconnecting a fabrics controller this agent connected "
          "before it gives it up (its paths then go; delayed removal applies); -1: forever");
ABSL_FLAG(int, fabrics_reconnect_delay_secs, 10, "the kernel's delay between reconnect attempts");
ABSL_FLAG(bool, ublk, true, "offer heads as block devices through ublk (where the kernel has it)");
ABSL_FLAG(bool, export_all, false, "export every head as /dev/ublkbN as it appears");
ABSL_FLAG(int, ublk_queue_depth, 64, "requests per ublk queue (one queue per worker), 1..4096");
ABSL_FLAG(int, ublk_max_io_kib, 128, "largest I/O of a ublk device, KiB (also capped by MDTS)");
ABSL_FLAG(bool, ublk_user_recovery, true,
          "make devices that outlive the agent: I/O waits while it restarts (kernel permitting)");
ABSL_FLAG(std::string, ublk_state_dir, "/run/umpath/ublk", "where each device's head is recorded");
ABSL_FLAG(int, ublk_recover_wait_secs, 30,
          "how long a device left by the last run waits for its head before it is removed");
ABSL_FLAG(std::string, workload, "",
          "run a workload on a head: read, write, randread, randwrite or verify");
ABSL_FLAG(int, workload_bs, 4096, "workload block size, bytes");
ABSL_FLAG(int, workload_qd, 32, "workload queue depth per worker");
ABSL_FLAG(double, workload_secs, 10, "workload run time");
ABSL_FLAG(std::string, workload_head, "", "the head to run on (default: the first one)");
ABSL_FLAG(std::string, workload_then, "exit", "after the workload: exit or serve");

namespace {

bool ParseGroup(const std::string& text, gid_t* out) {
  unsigned v;
  if (absl::SimpleAtoi(text, &v)) {
    *out = v;
    return true;
  }
  if (group* g = getgrnam(text.c_str())) {
    *out = g->gr_gid;
    return true;
  }
  return false;
}

template <typename T>
bool ParseIds(const std::vector<std::string>& in, bool groups, std::vector<T>* out) {
  for (const std::string& s : in) {
    gid_t id;
    if (groups ? !ParseGroup(s, &id) : !absl::SimpleAtoi(s, &id)) {
      std::fprintf(stderr, "umpathd: \"%s\" is not a %s\n", s.c_str(), groups ? "group" : "uid");
      return false;
    }
    out->push_back(static_cast<T>(id));
  }
  return true;
}

// Attach, detach and reset through the API: PCIe functions go to the vfio backend,
// kernel and fabrics controllers to the kernel backend.
class BackendControllerOps final : public umpath::server::ControllerOps {
 public:
  BackendControllerOps(umpath::vfio::VfioManager* vm, umpath::kernel::LibnvmeBackend* kb)
      : vm_(vm), kb_(kb) {}
  absl::StatusOr<std::string> Attach(const AttachSpec& spec) override {
    if (spec.transport == "pcie") {
      if (vm_ == nullptr) {
        return absl::FailedPreconditionError(
            "this agent has no vfio backend (start it with --vfio_devices)");
      }
      if (absl::Status s = vm_->Attach(spec.address); !s.ok()) return s;
      return spec.address;
    }
    if (kb_ == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "transport \"", spec.transport, "\" needs the kernel backend, off here (--kernel=false)"));
    }
    return kb_->Attach(spec.transport, spec.address, spec.service, spec.subsystem_nqn);
  }
  absl::Status Detach(const std::string& controller) override {
    if (kb_ != nullptr && kb_->Owns(controller)) return kb_->Detach(controller, "detached through the API");
    if (vm_ != nullptr) return vm_->Detach(controller, "detached through the API");
    return absl::NotFoundError(absl::StrCat("controller ", controller, " not found"));
  }
  absl::Status Reset(const std::string& controller) override {
    if (kb_ != nullptr && kb_->Owns(controller)) return kb_->RequestReset(controller);
    if (vm_ != nullptr) return vm_->RequestReset(controller);
    return absl::NotFoundError(absl::StrCat("controller ", controller, " not found"));
  }

 private:
  umpath::vfio::VfioManager* vm_;
  umpath::kernel::LibnvmeBackend* kb_;
};

// Export and unexport through the API. The exporter may come later than the server
// (after a workload, which drives the workers itself); until then calls say why not.
class UblkExportOps final : public umpath::server::ExportOps {
 public:
  explicit UblkExportOps(std::string why_not) : why_not_(std::move(why_not)) {}
  void Set(umpath::ublk::Exporter* e) {
    umpath::MutexLock l(&mu_);
    e_ = e;
  }
  void Unavailable(std::string why) {
    umpath::MutexLock l(&mu_);
    why_not_ = std::move(why);
  }
  absl::StatusOr<std::string> Export(const std::string& head) override {
    umpath::ublk::Exporter* e = Get();
    if (e == nullptr) return absl::FailedPreconditionError(WhyNot());
    return e->Export(head);
  }
  absl::Status Unexport(const std::string& head) override {
    umpath::ublk::Exporter* e = Get();
    if (e == nullptr) return absl::FailedPreconditionError(WhyNot());
    return e->Unexport(head);
  }

 private:
  umpath::ublk::Exporter* Get() {
    umpath::MutexLock l(&mu_);
    return e_;
  }
  std::string WhyNot() {
    umpath::MutexLock l(&mu_);
    return why_not_;
  }
  umpath::Mutex mu_;
  std::string why_not_ ABSL_GUARDED_BY(mu_);
  umpath::ublk::Exporter* e_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  using namespace umpath;

  // A broken pipe is an error to return, never a reason to die. In the lab umpathd died
  // of SIGPIPE (exit status 141) as an NVMe/TCP port went away, with "failed to send
  // request -32" from the kernel's host: most likely its inline send, made in the task
  // that submitted the I/O (our worker) and without MSG_NOSIGNAL.
  signal(SIGPIPE, SIG_IGN);

  // Signals are taken by a sigwait below, never by a handler.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  server::ServerOptions so;
  so.socket_path = absl::GetFlag(FLAGS_socket);
  unsigned mode;
  if (!absl::numbers_internal::safe_strtou32_base(absl::GetFlag(FLAGS_socket_mode), &mode, 8) ||
      mode > 0777) {
    std::fprintf(stderr, "umpathd: --socket_mode must be octal 0..0777\n");
    return 2;
  }
  so.socket_mode = mode;
  if (!absl::GetFlag(FLAGS_socket_group).empty() &&
      !ParseGroup(absl::GetFlag(FLAGS_socket_group), &so.socket_gid)) {
    std::fprintf(stderr, "umpathd: unknown --socket_group\n");
    return 2;
  }
  so.access.admin_uids.clear();
  if (!ParseIds(absl::GetFlag(FLAGS_admin_uids), false, &so.access.admin_uids) ||
      !ParseIds(absl::GetFlag(FLAGS_admin_groups), true, &so.access.admin_gids) ||
      !ParseIds(absl::GetFlag(FLAGS_viewer_uids), false, &so.access.viewer_uids) ||
      !ParseIds(absl::GetFlag(FLAGS_viewer_groups), true, &so.access.viewer_gids)) {
    return 2;
  }
  const int max_watchers = absl::GetFlag(FLAGS_max_watchers);
  const int per_caller = absl::GetFlag(FLAGS_max_watchers_per_caller);
  const int queue_limit = absl::GetFlag(FLAGS_watch_queue_limit);
  const int progress_ms = absl::GetFlag(FLAGS_progress_interval_ms);
  if (max_watchers < 1 || per_caller < 1 || queue_limit < 1 || progress_ms < 10) {
    std::fprintf(stderr, "umpathd: watcher limits must be positive (progress at least 10 ms)\n");
    return 2;
  }
  so.service.watch.max_watchers = static_cast<size_t>(max_watchers);
  so.service.watch.max_watchers_per_caller = static_cast<size_t>(per_caller);
  so.service.watch.queue_limit = static_cast<size_t>(queue_limit);
  so.service.watch.progress_interval = std::chrono::milliseconds(progress_ms);
  so.tcp_address = absl::GetFlag(FLAGS_tcp_address);
  so.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  so.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  so.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file);
  so.access.admin_names = absl::GetFlag(FLAGS_admin_names);
  so.access.viewer_names = absl::GetFlag(FLAGS_viewer_names);
  so.health_address = absl::GetFlag(FLAGS_health_address);
  so.service.node = absl::GetFlag(FLAGS_node);
  if (so.service.node.empty()) {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    so.service.node = host;
  }

  absl::StatusOr<IoPolicy> policy = ParseIoPolicy(absl::GetFlag(FLAGS_default_io_policy));
  absl::StatusOr<uint32_t> delay =
      ParseDelayedRemovalSecs(absl::GetFlag(FLAGS_default_delayed_removal_secs));
  if (!policy.ok() || !delay.ok()) {
    std::fprintf(stderr, "umpathd: %s\n",
                 std::string((policy.ok() ? delay.status() : policy.status()).message()).c_str());
    return 2;
  }
  const int nworkers = absl::GetFlag(FLAGS_workers);
  if (nworkers < 1 || nworkers > 256) {
    std::fprintf(stderr, "umpathd: --workers must be 1..256\n");
    return 2;
  }

  absl::StatusOr<std::unique_ptr<server::SettingsStore>> store =
      server::SettingsStore::Open(absl::GetFlag(FLAGS_state_file));
  if (!store.ok()) {
    std::fprintf(stderr, "umpathd: state file: %s\n", std::string(store.status().message()).c_str());
    return 1;
  }
  if (!(*store)->problem().empty()) {
    std::fprintf(stderr, "umpathd: state file: %s\n", (*store)->problem().c_str());
  }

  std::vector<std::unique_ptr<Worker>> workers;
  MultipathOptions mo;
  mo.initial_settings = [s = store->get()](absl::string_view head) { return s->Lookup(head); };
  mo.default_policy = *policy;
  mo.default_delayed_removal_secs = *delay;
  for (int i = 0; i < nworkers; ++i) {
    Worker::Options wo;
    wo.index = i;
    workers.push_back(Worker::Create(wo));
    mo.workers.push_back(workers.back().get());
  }
  absl::StatusOr<std::unique_ptr<Multipath>> mp = Multipath::Create(mo);
  if (!mp.ok()) {
    std::fprintf(stderr, "umpathd: %s\n", std::string(mp.status().message()).c_str());
    return 1;
  }
  (*mp)->Start();

  // A workload drives the workers itself until it ends; otherwise they run now.
  const std::string workload = absl::GetFlag(FLAGS_workload);
  perf::WorkloadOptions wl;
  if (!workload.empty()) {
    absl::StatusOr<perf::Pattern> pattern = perf::ParsePattern(workload);
    const std::string then = absl::GetFlag(FLAGS_workload_then);
    if (!pattern.ok() || (then != "exit" && then != "serve") || absl::GetFlag(FLAGS_workload_bs) <= 0 ||
        absl::GetFlag(FLAGS_workload_qd) <= 0) {
      std::fprintf(stderr, "umpathd: %s\n",
                   pattern.ok() ? "--workload_then must be exit or serve; --workload_bs and "
                                  "--workload_qd positive"
                                : std::string(pattern.status().message()).c_str());
      return 2;
    }
    wl.pattern = *pattern;
    wl.block_size = static_cast<uint32_t>(absl::GetFlag(FLAGS_workload_bs));
    wl.queue_depth = static_cast<uint32_t>(absl::GetFlag(FLAGS_workload_qd));
    wl.seconds = absl::GetFlag(FLAGS_workload_secs);
    wl.head = absl::GetFlag(FLAGS_workload_head);
  } else {
    for (auto& w : workers) w->Start();
  }


  // One structured line per event.
  auto log_sub = (*mp)->journal().Subscribe((*mp)->journal().current_revision(), 1 << 16, nullptr);
  // And every 10 s a line for each path whose I/O errors grew: nothing per I/O.
  std::thread logger([sub = *log_sub, core = mp->get()] {
    IoErrorSummary io_errors;
    auto next_summary = std::chrono::steady_clock::now();
    for (;;) {
      sub->WaitForEvents(std::chrono::seconds(1));
      if (const auto now = std::chrono::steady_clock::now(); now >= next_summary) {
        next_summary = now + std::chrono::seconds(10);
        for (const std::string& line : io_errors.Update(core->ListHeads())) {
          std::fprintf(stderr, "umpathd: %s\n", line.c_str());
        }
      }
      absl::StatusOr<std::vector<Event>> events = sub->Take(256);
      if (!events.ok()) {
        if (events.status().code() != absl::StatusCode::kCancelled) {
          std::fprintf(stderr, "umpathd: event log: %s\n",
                       std::string(events.status().message()).c_str());
        }
        return;
      }
      for (const Event& e : *events) std::fprintf(stderr, "event %s\n", e.ToString().c_str());
    }
  });

  auto bail = [&](int rc) {
    (*mp)->Shutdown();
    logger.join();
    for (auto& w : workers) w->Stop();
    return rc;
  };
  std::unique_ptr<vfio::VfioManager> vfio_manager;
  if (const std::vector<std::string> devs = absl::GetFlag(FLAGS_vfio_devices); !devs.empty()) {
    vfio::VfioManagerOptions vo;
    vo.devices = devs;
    vo.bind = absl::GetFlag(FLAGS_bind_vfio);
    const int qd = absl::GetFlag(FLAGS_queue_depth);
    const int timeout = absl::GetFlag(FLAGS_io_timeout_ms);
    if (qd < 2 || qd > 4096 || timeout < 100) {
      std::fprintf(stderr, "umpathd: --queue_depth must be 2..4096, --io_timeout_ms at least 100\n");
      return bail(2);
    }
    vo.queue_depth = static_cast<uint16_t>(qd);
    vo.io_timeout_ms = timeout;
    vo.health_interval_ms = absl::GetFlag(FLAGS_health_check_ms);
    if (vo.health_interval_ms < 0) {
      std::fprintf(stderr, "umpathd: --health_check_ms must be 0 or more\n");
      return bail(2);
    }
    absl::StatusOr<std::unique_ptr<vfio::VfioManager>> vm =
        vfio::VfioManager::Create(mp->get(), mo.workers, vo);
    if (!vm.ok()) {
      std::fprintf(stderr, "umpathd: vfio: %s\n", std::string(vm.status().message()).c_str());
      return bail(1);
    }
    vfio_manager = std::move(*vm);
    int attached = 0;
    for (const auto& [bdf, st] : vfio_manager->AttachConfigured()) {
      if (st.ok()) ++attached;
    }
    std::fprintf(stderr, "umpathd: vfio: %d controller(s) attached\n", attached);
    vfio_manager->Start();
    so.service.backends.push_back("vfio");
  }

  // The kernel's NVMe controllers: claimed by the configuration, or attached through
  // the API (a CSI sidecar connecting a volume's fabrics paths).
  std::unique_ptr<kernel::LibnvmeBackend> kernel_backend;
  if (absl::GetFlag(FLAGS_kernel)) {
    kernel::LibnvmeBackendOptions ko;
    ko.claims = absl::GetFlag(FLAGS_kernel_controllers);
    for (const std::string& c : absl::GetFlag(FLAGS_kernel_connect)) {
      absl::StatusOr<kernel::ConnectSpec> spec = kernel::ParseConnectFlag(c);
      if (!spec.ok()) {
        std::fprintf(stderr, "umpathd: --kernel_connect: %s\n", std::string(spec.status().message()).c_str());
        if (vfio_manager) vfio_manager->Stop();
        return bail(2);
      }
      ko.connect.push_back(*spec);
    }
    const int qd = absl::GetFlag(FLAGS_queue_depth);
    ko.queue_depth = static_cast<uint32_t>(std::clamp(qd, 0, 1 << 20));
    ko.poll_ms = absl::GetFlag(FLAGS_kernel_poll_ms);
    ko.host_nqn = absl::GetFlag(FLAGS_host_nqn);
    ko.host_id = absl::GetFlag(FLAGS_host_id);
    ko.ctrl_loss_tmo_secs = absl::GetFlag(FLAGS_fabrics_ctrl_loss_tmo_secs);
    ko.reconnect_delay_secs = absl::GetFlag(FLAGS_fabrics_reconnect_delay_secs);
    ko.log = [](const std::string& line) { std::fprintf(stderr, "umpath-kernel: %s\n", line.c_str()); };
    if (ko.ctrl_loss_tmo_secs < -1 || ko.reconnect_delay_secs < 1) {
      std::fprintf(stderr, "umpathd: --fabrics_ctrl_loss_tmo_secs must be -1 or more, "
                           "--fabrics_reconnect_delay_secs at least 1\n");
      if (vfio_manager) vfio_manager->Stop();
      return bail(2);
    }
    absl::StatusOr<std::unique_ptr<kernel::LibnvmeBackend>> kb =
        kernel::LibnvmeBackend::Create(mp->get(), mo.workers, ko);
    if (!kb.ok()) {
      std::fprintf(stderr, "umpathd: kernel backend: %s\n", std::string(kb.status().message()).c_str());
      if (vfio_manager) vfio_manager->Stop();
      return bail(absl::IsInvalidArgument(kb.status()) ? 2 : 1);
    }
    kernel_backend = std::move(*kb);
    if (!ko.claims.empty() || !ko.connect.empty()) {
      int attached = 0;
      for (const auto& [what, st] : kernel_backend->AttachConfigured()) {
        if (st.ok()) ++attached;
      }
      std::fprintf(stderr, "umpathd: kernel: %d controller(s) claimed\n", attached);
    }
    kernel_backend->Start();
    if (!kernel::KernelMultipathEnabled()) so.service.backends.push_back("kernel");
  }
  auto stop_backends = [&] {
    if (vfio_manager) vfio_manager->Stop();
    if (kernel_backend) kernel_backend->Stop();
  };
  std::unique_ptr<BackendControllerOps> controller_ops;
  if (vfio_manager || kernel_backend) {
    controller_ops = std::make_unique<BackendControllerOps>(vfio_manager.get(), kernel_backend.get());
    so.service.controllers = controller_ops.get();
  }

  // The block-device frontend, once the workers run: now, or after a workload that
  // goes on serving (a workload drives the workers itself).
  std::unique_ptr<ublk::Exporter> exporter;
  std::unique_ptr<UblkExportOps> export_ops;
  ublk::ExporterOptions eo;
  for (auto& w : workers) eo.workers.push_back(w.get());
  // I/O buffers: DMA memory registered with vfio where there is a vfio backend (the
  // kernel's paths take it too); page-aligned memory otherwise (the kernel maps it).
  IoMemoryAllocator alloc_io = [vm = vfio_manager.get()](uint64_t bytes) -> absl::StatusOr<IoMemory> {
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
  eo.alloc = alloc_io;
  const int ublk_qd = absl::GetFlag(FLAGS_ublk_queue_depth);
  const int ublk_kib = absl::GetFlag(FLAGS_ublk_max_io_kib);
  eo.queue_depth = static_cast<uint16_t>(std::clamp(ublk_qd, 0, 65535));
  eo.max_io_bytes = static_cast<uint32_t>(std::clamp(ublk_kib, 0, 1 << 20)) * 1024u;
  eo.export_all = absl::GetFlag(FLAGS_export_all);
  eo.user_recovery = absl::GetFlag(FLAGS_ublk_user_recovery);
  eo.state_dir = absl::GetFlag(FLAGS_ublk_state_dir);
  eo.recover_wait_secs = absl::GetFlag(FLAGS_ublk_recover_wait_secs);
  eo.log = [](const std::string& line) { std::fprintf(stderr, "umpathd: %s\n", line.c_str()); };
  // Bad options: exit 2. A kernel without ublk: the agent serves without block devices.
  auto start_exporter = [&]() -> bool {
    absl::StatusOr<std::unique_ptr<ublk::Exporter>> ex = ublk::Exporter::Create(mp->get(), eo);
    if (!ex.ok()) {
      std::fprintf(stderr, "umpathd: no block devices: %s\n",
                   std::string(ex.status().message()).c_str());
      export_ops->Unavailable(absl::StrCat("this agent has no block devices: ", ex.status().message()));
      return !absl::IsInvalidArgument(ex.status());
    }
    exporter = std::move(*ex);
    exporter->Start();
    export_ops->Set(exporter.get());
    return true;
  };
  if (!absl::GetFlag(FLAGS_ublk)) {
    so.service.no_export_reason = "started with --ublk=false";
  } else {
    export_ops = std::make_unique<UblkExportOps>(
        "block devices are offered once the workload ends (--workload_then=serve)");
    so.service.exports = export_ops.get();
    if (workload.empty()) {
      if (!start_exporter()) {
        stop_backends();
        return bail(2);
      }
      if (exporter) so.service.backends.push_back("ublk");
    } else if (access(eo.control_path.c_str(), F_OK) == 0) {
      so.service.backends.push_back("ublk");  // once the workload ends
    }
  }

  server::RpcStats rpc_stats(
      [](const std::string& line) { std::fprintf(stderr, "umpathd: %s\n", line.c_str()); });
  so.rpc_stats = &rpc_stats;
  absl::StatusOr<std::unique_ptr<server::ControlServer>> srv =
      server::ControlServer::Create(mp->get(), so, store->get());
  if (!srv.ok()) {
    std::fprintf(stderr, "umpathd: control server: %s\n",
                 std::string(srv.status().message()).c_str());
    if (exporter) exporter->StopFollowing();
    stop_backends();
    (*mp)->Shutdown();
    if (exporter) exporter->Shutdown();
    logger.join();
    for (auto& w : workers) w->Stop();
    return 1;
  }
  std::fprintf(stderr, "umpathd: serving umpath.v1.MultipathControl on unix:%s (node %s)\n",
               so.socket_path.c_str(), so.service.node.c_str());
  std::unique_ptr<server::MetricsEndpoint> metrics;
  if (const std::string addr = absl::GetFlag(FLAGS_metrics_address); !addr.empty()) {
    server::MetricsOptions mo;
    mo.address = addr;
    mo.mp = mp->get();
    mo.rpcs = &rpc_stats;
    mo.version = so.service.version;
    server::ControlService* svc = &(*srv)->service();
    mo.watchers = [svc] { return static_cast<uint64_t>(svc->watchers()); };
    mo.watcher_ends = [svc] { return svc->watcher_ends(); };
    absl::StatusOr<std::unique_ptr<server::MetricsEndpoint>> m = server::MetricsEndpoint::Create(mo);
    if (!m.ok()) {
      // Misconfiguration is an exit, as for every other listener; the agent stops cleanly.
      std::fprintf(stderr, "umpathd: metrics: %s\n", std::string(m.status().message()).c_str());
      (*srv)->Shutdown();
      if (exporter) exporter->StopFollowing();
      stop_backends();
      (*mp)->Shutdown();
      if (exporter) exporter->Shutdown();
      logger.join();
      for (auto& w : workers) w->Stop();
      return absl::IsInvalidArgument(m.status()) ? 2 : 1;
    } else {
      metrics = std::move(*m);
      std::fprintf(stderr, "umpathd: serving metrics on http://%s:%d/metrics\n",
                   addr.substr(0, addr.rfind(':')).c_str(), metrics->port());
    }
  }

  // The one place signals are taken: a signal stops a running workload early (its
  // result is still printed) and then the agent.
  std::atomic<bool> stop_workload{false};
  std::atomic<int> got_signal{0};
  Notification signalled;
  std::thread signals([&] {
    int sig = 0;
    sigwait(&sigs, &sig);
    got_signal = sig;
    stop_workload = true;
    signalled.Notify();
  });

  int rc = 0;
  bool serve = true;
  if (!workload.empty()) {
    perf::IoMemoryAllocator alloc = alloc_io;
    std::printf("umpathd-workload: start %s bs=%u qd=%u secs=%.1f workers=%d\n", workload.c_str(),
                wl.block_size, wl.queue_depth, wl.seconds, nworkers);
    std::fflush(stdout);
    wl.stop = &stop_workload;
    absl::StatusOr<perf::WorkloadResult> r = perf::RunWorkload(mp->get(), mo.workers, alloc, wl);
    for (auto& w : workers) w->Start();
    if (!r.ok()) {
      std::printf("umpathd-workload: failed: %s\n", r.status().ToString().c_str());
      rc = 1;
    } else {
      std::printf("umpathd-workload: result %s\n", r->ToString().c_str());
      for (const perf::PathResult& p : r->paths) {
        std::printf("umpathd-workload: path %s completed=%llu bytes=%llu errors=%llu failovers=%llu\n",
                    p.name.c_str(), static_cast<unsigned long long>(p.completed),
                    static_cast<unsigned long long>(p.bytes),
                    static_cast<unsigned long long>(p.errors),
                    static_cast<unsigned long long>(p.failovers));
      }
      if (r->errors > 0 || r->mismatches > 0) rc = 3;
    }
    std::fflush(stdout);
    serve = absl::GetFlag(FLAGS_workload_then) == "serve";
    if (serve && export_ops && !stop_workload) start_exporter();
  }
  if (serve || stop_workload) {
    while (!signalled.WaitFor(std::chrono::hours(24))) {
    }
    std::fprintf(stderr, "umpathd: signal %d, shutting down\n", got_signal.load());
  } else {
    kill(getpid(), SIGTERM);  // ends the signal thread's wait (the signal stays blocked)
  }
  signals.join();
  metrics.reset();
  (*srv)->Shutdown();
  if (exporter) exporter->StopFollowing();
  // The backends let go of their controllers while the workers still run.
  stop_backends();
  // Fails what still waits, so stopping the block devices never waits on it.
  (*mp)->Shutdown();
  if (exporter) exporter->Shutdown();
  logger.join();
  for (auto& w : workers) w->Stop();
  return rc;
}
