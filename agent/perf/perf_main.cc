// umpath-perf: the agent (the same flags as umpathd, the same Agent) running one
// workload on a head through the whole multipath path, as SPDK's bdevperf does:
// `umpath-perf --vfio_devices=all --workload=verify --workload_secs=10`. It prints its
// figures and exits 3 when the workload saw errors or mismatches; with
// --workload_then=serve it then goes on as the agent until a signal.
#include <atomic>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "agent/app/agent.h"
#include "agent/app/config.h"
#include "agent/app/signals.h"
#include "agent/perf/workload.h"

ABSL_FLAG(std::string, workload, "verify",
          "the workload: read, write, randread, randwrite or verify");
ABSL_FLAG(int, workload_bs, 4096, "block size, bytes");
ABSL_FLAG(int, workload_qd, 32, "queue depth per worker");
ABSL_FLAG(double, workload_secs, 10, "run time");
ABSL_FLAG(std::string, workload_head, "",
          "the head to run on (default: the first one); \"*\": each I/O to the next head in turn");
ABSL_FLAG(std::string, workload_then, "exit", "after the workload: exit or serve");

namespace {

absl::StatusOr<umpath::perf::WorkloadOptions> WorkloadFromFlags() {
  umpath::perf::WorkloadOptions wl;
  absl::StatusOr<umpath::perf::Pattern> pattern = umpath::perf::ParsePattern(absl::GetFlag(FLAGS_workload));
  if (!pattern.ok()) return pattern.status();
  const std::string then = absl::GetFlag(FLAGS_workload_then);
  if ((then != "exit" && then != "serve") || absl::GetFlag(FLAGS_workload_bs) <= 0 ||
      absl::GetFlag(FLAGS_workload_qd) <= 0) {
    return absl::InvalidArgumentError(
        "--workload_then must be exit or serve; --workload_bs and --workload_qd positive");
  }
  wl.pattern = *pattern;
  wl.block_size = static_cast<uint32_t>(absl::GetFlag(FLAGS_workload_bs));
  wl.queue_depth = static_cast<uint32_t>(absl::GetFlag(FLAGS_workload_qd));
  wl.seconds = absl::GetFlag(FLAGS_workload_secs);
  wl.head = absl::GetFlag(FLAGS_workload_head);
  return wl;
}

void Print(const umpath::perf::WorkloadResult& r) {
  std::printf("umpath-perf: result %s\n", r.ToString().c_str());
  for (const umpath::perf::PathResult& p : r.paths) {
    std::printf("umpath-perf: path %s completed=%llu bytes=%llu errors=%llu failovers=%llu\n",
                p.name.c_str(), static_cast<unsigned long long>(p.completed),
                static_cast<unsigned long long>(p.bytes), static_cast<unsigned long long>(p.errors),
                static_cast<unsigned long long>(p.failovers));
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::atomic<bool> stop{false};
  umpath::app::TerminationSignals signals([&stop] { stop = true; });  // before any thread
  absl::StatusOr<umpath::perf::WorkloadOptions> wl = WorkloadFromFlags();
  absl::StatusOr<umpath::app::AgentConfig> config = umpath::app::AgentConfigFromFlags();
  if (!wl.ok() || !config.ok()) {
    std::fprintf(stderr, "umpath-perf: %s\n",
                 std::string((wl.ok() ? config.status() : wl.status()).message()).c_str());
    return 2;
  }
  // The workload drives the workers itself until it ends.
  absl::StatusOr<std::unique_ptr<umpath::app::Agent>> agent =
      umpath::app::Agent::Create(*std::move(config), {.start_workers = false});
  if (!agent.ok()) {
    std::fprintf(stderr, "umpath-perf: %s\n", std::string(agent.status().message()).c_str());
    return absl::IsInvalidArgument(agent.status()) ? 2 : 1;
  }
  umpath::app::Agent& a = **agent;
  std::printf("umpath-perf: start %s bs=%u qd=%u secs=%.1f workers=%zu\n",
              absl::GetFlag(FLAGS_workload).c_str(), wl->block_size, wl->queue_depth,
              wl->seconds, a.workers().size());
  std::fflush(stdout);
  wl->stop = &stop;
  absl::StatusOr<umpath::perf::WorkloadResult> r =
      umpath::perf::RunWorkload(&a.core(), a.workers(), a.io_allocator(), *wl);
  int rc = 0;
  if (!r.ok()) {
    std::printf("umpath-perf: failed: %s\n", r.status().ToString().c_str());
    std::fflush(stdout);
    rc = 1;
  } else {
    Print(*r);
    if (r->errors > 0 || r->mismatches > 0) rc = 3;
  }
  const bool serve = absl::GetFlag(FLAGS_workload_then) == "serve" && !stop.load();
  if (absl::Status s = a.StartServing(/*block_devices=*/serve); !s.ok()) {
    std::fprintf(stderr, "umpath-perf: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  if (serve) {
    signals.Wait();
    std::fprintf(stderr, "umpath-perf: signal %d, shutting down\n", signals.received());
  }
  return rc;  // the Agent stops as it goes out of scope
}
