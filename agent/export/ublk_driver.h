#pragma once

// What the exporter asks of the kernel's ublk driver: its control commands, and a
// device's queues served by the workers. KernelUblk is the real one; the exporter's
// tests give a fake, so export, removal, export-all and the take-over of devices an
// earlier agent left are tested without a VM.

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/core/info.h"
#include "agent/core/io_memory.h"
#include "agent/core/worker.h"
#include "agent/export/ublk_abi.h"
#include "agent/export/ublk_io.h"

namespace umpath::ublk {

// How a device's queues are served: queue i on worker i, `depth` tags, requests of up
// to `shape.buffer_bytes`.
struct QueueSetup {
  uint16_t queues = 0;
  uint16_t depth = 0;
  uint64_t head_uid = 0;
  IoShape shape;
  // The device was made with kFlagNeedGetData: its requests take buffers from the
  // workers' pools. Otherwise each tag has a buffer of its own.
  bool pooled = false;
  // How the pooled queues' data moves (DataModeOf the device's flags).
  DataMode data = DataMode::kGetData;
  // A device taken over: it is served even past the pinned-memory budget (refusing it
  // would fail its I/O); a new export is refused there.
  bool beyond_budget = false;
};

// The memory the devices' I/O buffers pin, and what it still allows.
struct PinnedMemory {
  uint64_t bytes = 0;         // made so far (it stays made: the pools do not shrink)
  uint64_t budget_bytes = 0;  // --max_pinned_mib
  uint32_t buffer_bytes = 0;  // one buffer, the largest I/O
  // Devices that can still be exported: each has a buffer of its own on every worker.
  uint32_t heads_left = 0;
};

// Threading: the exporter calls one method at a time (from a thread of its own, as
// each may block), and never two devices' work at once.
class UblkDriver {
 public:
  virtual ~UblkDriver() = default;

  // UBLK_F_* the driver offers; 0 where GET_FEATURES is unknown (before 6.5).
  virtual uint64_t Features() = 0;
  virtual absl::StatusOr<ublksrv_ctrl_dev_info> Add(const ublksrv_ctrl_dev_info& want) = 0;
  virtual absl::Status SetParams(uint32_t dev_id, const ublk_params& params) = 0;
  virtual absl::StatusOr<ublk_params> GetParams(uint32_t dev_id) = 0;
  // START_DEV and END_USER_RECOVERY, with this process as the device's server. They
  // return once every queue has fetched its tags.
  virtual absl::Status Start(uint32_t dev_id) = 0;
  virtual absl::Status EndRecovery(uint32_t dev_id) = 0;
  virtual absl::Status StartRecovery(uint32_t dev_id) = 0;
  // STOP_DEV (the disk goes) and DEL_DEV, which returns once the device's last user (a
  // mount, an open file) has let go of it: its number is free again then.
  virtual absl::Status Stop(uint32_t dev_id) = 0;
  virtual absl::Status Delete(uint32_t dev_id) = 0;
  // DEL_DEV that does not wait for the users (the device goes when they let go): for an
  // agent that is going, which a mount left in place must not keep. Before Linux 6.9
  // (no DEL_DEV_ASYNC) it waits all the same.
  virtual absl::Status DeleteNoWait(uint32_t dev_id) = 0;
  // NOT_FOUND when there is no such device.
  virtual absl::StatusOr<ublksrv_ctrl_dev_info> Info(uint32_t dev_id) = 0;
  // Whether the device's server is another process that still runs (a second agent
  // on the node): such a device is left alone.
  virtual bool ServedByAnother(const ublksrv_ctrl_dev_info& info) = 0;

  // Serves the device's queues on the workers. On error, what was opened is closed.
  virtual absl::Status OpenQueues(uint32_t dev_id, const QueueSetup& setup) = 0;
  // After STOP_DEV (or a start that failed): waits until every tag ended and stops
  // serving. False when requests were still in the core: those queues are kept for
  // good (they must outlive the requests), and the reason is logged.
  virtual bool CloseQueues(uint32_t dev_id) = 0;
  // The hand-over to the next agent: from now on the device's queues hold new requests
  // (and those the core fails as the agent stops) instead of answering them.
  virtual void HoldQueues(uint32_t dev_id) = 0;
  // QUIESCE_DEV, for a hand-over (Control::Quiesce): from now on the kernel keeps the
  // device's new requests for the next agent; the queues answer what they have.
  virtual absl::Status Quiesce(uint32_t dev_id, uint32_t timeout_ms) = 0;
  // How many requests the device's queues have taken and not yet answered, once each
  // has run its pending work (what the kernel handed over just before a quiesce is
  // counted then).
  virtual uint32_t Unanswered(uint32_t dev_id) = 0;
  // Then: stops serving the queues without stopping the device, and lets go of it; the
  // kernel keeps what was held for the next agent. Returns how many were held.
  virtual uint32_t ReleaseQueues(uint32_t dev_id) = 0;
  // A started device's dev_t (stat of /dev/ublkbN) and the kernel's diskseq for it
  // (/sys/block/ublkbN/diskseq, 0 where the kernel has none); the link is the caller's.
  virtual absl::StatusOr<BlockDeviceIds> DiskIds(uint32_t dev_id) = 0;
  // Who has /dev/ublkbN open, mounted or stacked: "pid 812 (fio)", "mounted at /mnt",
  // "held by dm-0". Empty when nobody does.
  virtual std::vector<std::string> Users(uint32_t dev_id) = 0;
  // Any thread.
  virtual PinnedMemory Pinned() const = 0;
};

struct KernelUblkOptions {
  std::string control_path = "/dev/ublk-control";
  std::vector<Worker*> workers;  // started
  IoMemoryAllocator alloc;       // DMA-able memory for the I/O buffers
  // The pools: buffers of `buffer_bytes`, at most `max_pinned_bytes` of them in all
  // (split evenly between the workers). Made as devices are exported: a pool grows by a
  // device's depth per export until the budget is reached, then its devices share.
  uint32_t buffer_bytes = 128 * 1024;
  uint64_t max_pinned_bytes = uint64_t{64} << 20;
  std::function<void(const std::string&)> log;
};

// /dev/ublk-control and /dev/ublkcN, served by the workers.
absl::StatusOr<std::unique_ptr<UblkDriver>> OpenKernelUblk(KernelUblkOptions options);

// Who has a block device open or in use (see UblkDriver::Users). `major`/`minor` name
// the device, `sysname` its /sys/block entry.
std::vector<std::string> BlockDeviceUsers(uint32_t major, uint32_t minor,
                                          const std::string& sysname);

}  // namespace umpath::ublk
