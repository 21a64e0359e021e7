#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/base/mutex.h"
#include "agent/core/io_memory.h"
#include "agent/core/multipath.h"
#include "agent/core/worker.h"
#include "agent/export/ublk_control.h"
#include "agent/export/ublk_queue.h"

namespace umpath::ublk {

struct ExporterOptions {
  std::vector<Worker*> workers;  // started; queue i is served by worker i
  IoMemoryAllocator alloc;       // DMA-able memory for the tags' buffers
  uint16_t queue_depth = 64;
  uint32_t max_io_bytes = 128 * 1024;
  bool export_all = false;       // every head gets a device as it appears
  bool user_recovery = true;     // where the kernel offers it
  // Where each device's head is recorded, so a restarted agent finds what it left.
  std::string state_dir = "/run/umpath/ublk";
  // How long a device left by an earlier run waits for its head before it is removed.
  int64_t recover_wait_secs = 30;
  std::string control_path = "/dev/ublk-control";
  std::function<void(const std::string&)> log;
};

// Who has a block device open or in use: "pid 812 (fio)", "mounted at /mnt",
// "held by dm-0". Empty when nobody does. `major`/`minor` name the device, `sysname`
// its /sys/block entry.
std::vector<std::string> BlockDeviceUsers(uint32_t major, uint32_t minor,
                                          const std::string& sysname);

// The ublk frontend: each exported head is /dev/ublkbN with one queue per worker.
//
// A device lives as long as its head: it stays (and its I/O waits in the core) through a
// delayed-removal window, and goes when the head is removed. With user recovery a
// device outlives the agent: I/O waits in the kernel while no agent runs, and the next
// agent takes the device over when its head appears again.
//
// Threading: Export, Unexport and Shutdown may be called from any thread; they and the
// exporter's own thread (head removals, export-all, recovery) are serialized. Control
// commands block, but never with a lock the workers take.
class Exporter {
 public:
  static absl::StatusOr<std::unique_ptr<Exporter>> Create(Multipath* mp, ExporterOptions options);
  ~Exporter();

  void Start();
  // Stops following the core (head removals, export-all, recovery): the first step of a
  // shutdown, before the core fails what waits.
  void StopFollowing();
  // Removes every device this agent made or took over, and those it never recovered.
  void Shutdown();

  // The device path; idempotent. NOT_FOUND for an unknown head.
  absl::StatusOr<std::string> Export(absl::string_view head);
  // FAILED_PRECONDITION while the device is open or mounted; OK when not exported.
  absl::Status Unexport(absl::string_view head);

  bool user_recovery() const { return recovery_; }
  size_t devices() const;

 private:
  struct Device {
    uint32_t dev_id = 0;
    std::string head;
    uint64_t head_uid = 0;
    std::string bdev;  // /dev/ublkbN
    int cdev_fd = -1;
    uint16_t queues = 0;
    std::vector<std::unique_ptr<Queue>> q;
    IoMemory memory;
  };
  struct Leftover {
    uint32_t dev_id = 0;
    std::string head;
    int64_t deadline = 0;  // monotonic ns
    std::string last_problem;
  };

  Exporter(Multipath* mp, ExporterOptions options, std::unique_ptr<Control> control);
  void Log(const std::string& line) const;
  absl::StatusOr<std::string> ExportLocked(const HeadInfo& head) ABSL_EXCLUSIVE_LOCKS_REQUIRED(ops_mu_);
  // Makes the queues on their workers and opens the character device.
  absl::Status OpenQueues(Device* d, const HeadInfo& head, uint16_t depth, uint32_t buffer_bytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(ops_mu_);
  // Takes every queue off its worker and closes it (the device stopped, or never ran).
  void CloseQueues(Device* d) ABSL_EXCLUSIVE_LOCKS_REQUIRED(ops_mu_);
  void Teardown(std::unique_ptr<Device> d, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(ops_mu_);
  absl::Status Recover(Leftover& l, const HeadInfo& head) ABSL_EXCLUSIVE_LOCKS_REQUIRED(ops_mu_);
  void RemoveLeftover(const Leftover& l, const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(ops_mu_);
  void FindLeftovers() ABSL_EXCLUSIVE_LOCKS_REQUIRED(ops_mu_);
  void Reconcile();
  void Loop();
  void WriteRecord(const Device& d) const;
  void EraseRecord(uint32_t dev_id) const;

  Multipath* const mp_;
  const ExporterOptions options_;
  const std::unique_ptr<Control> control_;
  bool recovery_ = false;

  mutable Mutex ops_mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Device>> devices_ ABSL_GUARDED_BY(ops_mu_);
  std::vector<Leftover> leftovers_ ABSL_GUARDED_BY(ops_mu_);
  absl::flat_hash_map<std::string, std::string> export_all_failed_ ABSL_GUARDED_BY(ops_mu_);
  // Heads (by uid) export-all has exported, or an earlier run had: not again.
  absl::flat_hash_set<uint64_t> auto_exported_ ABSL_GUARDED_BY(ops_mu_);
  bool shut_down_ ABSL_GUARDED_BY(ops_mu_) = false;
  // Torn-down devices whose queues still had requests in the core: never freed.
  std::vector<std::unique_ptr<Device>> zombies_ ABSL_GUARDED_BY(ops_mu_);

  Mutex wake_mu_;
  CondVar wake_cv_;
  bool wake_ ABSL_GUARDED_BY(wake_mu_) = false;
  bool stop_ ABSL_GUARDED_BY(wake_mu_) = false;
  std::shared_ptr<EventSubscription> sub_;
  std::thread thread_;
};

}  // namespace umpath::ublk
