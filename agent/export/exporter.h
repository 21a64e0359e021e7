#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/control/control_plane.h"
#include "agent/core/io_memory.h"
#include "agent/core/multipath.h"
#include "agent/core/worker.h"
#include "agent/export/by_id_links.h"
#include "agent/export/ublk_driver.h"

namespace umpath::ublk {

// What a stop does with the block devices (--stop, StopAgent).
enum class StopMode : uint8_t {
  // Every device stays, its queues holding what comes for the next agent, which takes it
  // over (a restart, an upgrade).
  kHandOver,
  // Every device is removed (decommissioning), except one in use (mounted, open, or
  // held by another device): that one is handed over instead, as it cannot be refused.
  kRemove,
  // Every device is removed, in use or not.
  kForceRemove,
};
// "handover", "remove", "force-remove": the --stop flag's values.
absl::string_view StopModeName(StopMode mode);

struct ExporterOptions {
  std::vector<Worker*> workers;  // started; queue i is served by worker i
  IoMemoryAllocator alloc;       // DMA-able memory for the tags' buffers
  uint16_t queue_depth = 64;
  uint32_t max_io_bytes = 128 * 1024;
  // The I/O buffers' budget: the workers' pools of max_io_bytes buffers, shared by the
  // devices (see KernelUblkOptions). Each exported head is guaranteed one buffer per
  // worker, which bounds how many can be exported.
  uint64_t max_pinned_bytes = uint64_t{64} << 20;
  bool export_all = false;       // every head gets a device as it appears
  // Heads that get one as they appear though export_all is off (kept settings).
  std::function<std::vector<std::string>()> exports_wanted;
  bool user_recovery = true;     // where the kernel offers it
  // Where the kernel offers QUIESCE_DEV (Linux 6.15), devices are made with it and a
  // hand-over stop quiesces them: the kernel keeps new requests for the next agent, and
  // this one answers every request it has while its controllers still serve, for at
  // most `handover_quiesce_ms`; what is left then is held as without it.
  bool quiesce = true;
  int64_t handover_quiesce_ms = 2000;
  DataWant data;                 // how request data moves, where the kernel offers it
  // Where each device's head is recorded, so a restarted agent finds what it left.
  std::string state_dir = "/run/umpath/ublk";
  // How long a device left by an earlier run waits for its head before it is removed.
  int64_t recover_wait_secs = 30;
  // The head's own delayed removal as the agent last had it (its state file): a device
  // left waits for its head at least this long too, so a crash during an outage the head
  // was set to ride out is ridden out. Empty: recover_wait_secs alone.
  std::function<int64_t(const std::string& head)> head_delayed_removal_secs;
  std::string control_path = "/dev/ublk-control";
  // Where each exported head gets its link, umpath-<head> -> its device (ByIdLinks);
  // empty: no links (umpathd's --by_id_dir says /dev/disk/by-id).
  std::string by_id_dir;
  std::function<void(const std::string&)> log;
  // A test hook (the lab's): the agent kills itself (SIGKILL) right after ADD_DEV, as a
  // crash between making a device and starting it would.
  bool test_crash_after_add = false;
};

// The ublk frontend: each exported head is /dev/ublkbN with one queue per worker.
//
// A device lives as long as its head: it stays (and its I/O waits in the core) through a
// delayed-removal window, and goes when the head is removed. With user recovery a
// device outlives the agent: I/O waits in the kernel while no agent runs, and the next
// agent takes the device over when its head appears again. Each device's by-id link
// lives as long as the device: made with it (and checked again at a take-over), removed
// just before it.
//
// Threading: what the exporter knows is the control thread's. It follows the core's
// events there (a head removed, a head for export-all, a head a leftover device waits
// for) and decides there; the commands that block (the driver's) run one device at a
// time on a thread of the plane's Offload, and their result is applied back on the
// control thread. Export, Unexport and CheckStop may be called from any thread and answer
// through `done`, in the order they were asked, between the exporter's own work;
// BeginStop goes before the calls still waiting.
class Exporter {
 public:
  template <typename T>
  using Done = absl::AnyInvocable<void(T) &&>;

  // Opens /dev/ublk-control and the state directory, and finds what an earlier run
  // left (removing at once what cannot be taken over).
  static absl::StatusOr<std::unique_ptr<Exporter>> Create(Multipath* mp, ControlPlane* plane,
                                                          ExporterOptions options);
  // The same, on a given driver (tests).
  static absl::StatusOr<std::unique_ptr<Exporter>> CreateWithDriver(
      Multipath* mp, ControlPlane* plane, ExporterOptions options, std::unique_ptr<UblkDriver> driver);
  ~Exporter();

  // Any thread: starts following the core.
  void Start();
  // Control thread: stops following the core (head removals, export-all, recovery): the
  // first step of a shutdown, before the core fails what waits. Work already begun
  // finishes.
  void StopFollowing();
  // Any thread: whether a stop in `mode` would remove a device in use (mounted, open,
  // or held by another device): FAILED_PRECONDITION naming each and who uses it, OK
  // when none. Changes nothing. A hand-over removes nothing, but where the kernel has no
  // user recovery (the devices are removed then).
  void CheckStop(StopMode mode, Done<absl::Status> done);
  // Any thread: the first step of a stop, after the work under way; nothing more is
  // done from then on. The queues of each device to hand over hold what comes instead
  // of answering it (the next agent gets it): with kHandOver every device, with kRemove
  // those in use then (each logged, and a head-unexported event says why it stays),
  // with kForceRemove none. FAILED_PRECONDITION for kHandOver where the kernel has no
  // user recovery (the devices are removed instead).
  void BeginStop(StopMode mode, Done<absl::Status> done);
  // Once the control plane has stopped, on the caller's thread. Lets go of each device
  // BeginStop handed over, which stays (with its record) for the next agent, and of each
  // device an earlier run left that it kept; removes every other device this agent made
  // or took over, and those it never recovered.
  void Shutdown();

  // The device (its path, dev_t, diskseq and link); idempotent. NOT_FOUND for an
  // unknown head.
  void Export(std::string head, Done<absl::StatusOr<ExportedDevice>> done);
  // FAILED_PRECONDITION while the device is open or mounted; OK when not exported.
  void Unexport(std::string head, Done<absl::Status> done);

  bool user_recovery() const { return recovery_; }
  // Whether the devices' buffers come from the pools (the kernel offers NEED_GET_DATA).
  bool pooled() const { return pooled_; }
  // Any thread.
  PinnedMemory Pinned() const { return driver_->Pinned(); }

 private:
  struct Device {
    uint32_t dev_id = 0;
    bool added = false;  // the kernel has it (ADD_DEV or a take-over)
    std::string head;
    uint64_t head_uid = 0;
    std::string bdev;  // /dev/ublkbN
    BlockDeviceIds ids;  // once started (or taken over)
    bool hand_over = false;  // BeginStop: Shutdown lets go of it instead of removing it
    // Made with kFlagQuiesce (and quiesce_ is on): a hand-over quiesces it.
    bool quiesce = false;
  };
  struct Leftover {
    uint32_t dev_id = 0;
    std::string head;
    int64_t deadline = 0;  // the plane's monotonic clock, ns
    int64_t wait_secs = 0;  // how long it waits for its head
    std::string last_problem;
    bool keep = false;  // BeginStop: Shutdown leaves it for the next agent
  };
  // One thing the exporter does on its own, decided by Reconcile and started when the
  // lane is free (checked again then: an API call may have come first).
  struct Action {
    enum Kind { kTeardown, kRecover, kRemoveLeftover, kExportAll } kind;
    std::string head;
  };
  // What an offloaded job brings back to the control thread.
  using Then = ControlPlane::Task;
  template <typename T>
  class Answer;

  Exporter(Multipath* mp, ControlPlane* plane, ExporterOptions options,
           std::unique_ptr<UblkDriver> driver);
  void Log(const std::string& line) const;
  int64_t Now() const { return plane_->clock().MonotonicNanos(); }

  // Following the core: its events only wake the exporter, which reads the core whole.
  void Subscribe();
  void OnCoreChanged();
  void Reconcile();
  std::deque<Action> Plan();
  bool NeedsAutoExport(const HeadInfo& h) const;
  size_t FindLeftover(absl::string_view head) const;  // leftovers_.size() if none
  void ArmRetry();

  // The lane: one job (an API call or an Action) at a time.
  void Enqueue(ControlPlane::Task call);
  void Next();
  void StartAction(const Action& a);
  // Takes the lane and runs `work` on a thread of its own; what it returns runs back
  // on the control thread, and the lane is free again.
  void Offload(absl::AnyInvocable<Then() &&> work);

  // Control thread. Each either answers at once or takes the lane.
  void BeginExport(const HeadInfo& head, std::shared_ptr<Answer<absl::StatusOr<ExportedDevice>>> answer);
  void BeginUnexport(const std::string& head, std::shared_ptr<Answer<absl::Status>> answer);
  void BeginTeardown(std::unique_ptr<Device> d, std::string reason,
                     std::shared_ptr<Answer<absl::Status>> answer);
  void BeginRecover(size_t leftover, const HeadInfo& head);
  void BeginRemoveLeftover(size_t leftover, std::string why);
  absl::Status CheckExportable(const HeadInfo& head, uint32_t* max_io) const;
  void FinishTeardown(const Device& d, const std::string& reason);
  // Every device and leftover, as the stop's offloaded work sees them.
  struct StopTarget {
    uint32_t dev_id = 0;
    bool served = false;  // a device of this agent's (not a leftover)
    std::string bdev, head;
    uint64_t head_uid = 0;  // 0: a leftover
    std::vector<std::string> users;
    bool keep = false;
    bool quiesce = false;
  };
  std::vector<StopTarget> StopTargets() const;
  // Offload thread: the queues of the served devices BeginStop keeps stop answering
  // what they take from now on (quiesced first, where the device allows it).
  void HandOverQueues(const std::vector<StopTarget>& targets);
  void FinishBeginStop(StopMode mode, const std::vector<StopTarget>& targets);
  void LetGo(const Device& d);
  void LeftoverRemoved(const Leftover& l, const std::string& why);

  // Blocking work, on the offload's thread, on the device the lane holds.
  absl::Status MakeDevice(Device* d, const HeadInfo& head, uint32_t max_io);
  static QueueSetup SetupFor(const HeadInfo& head, const ublksrv_ctrl_dev_info& info);
  // How DEL_DEV goes: waiting until the device's last user lets go of it (its number is
  // free for the next export then), or not: the agent is going, and a mount that
  // outlives it (a forced stop) must not keep it from exiting.
  enum class Deletion { kWait, kNoWait };
  void RemoveDevice(const Device& d, Deletion deletion = Deletion::kWait);
  absl::Status TakeOver(Device* d, const HeadInfo& head, bool* other_disk, pid_t* old_pid);
  void RemoveLeftoverDevice(uint32_t dev_id, const std::string& head,
                            Deletion deletion = Deletion::kWait);
  // A started device's ids, and its link made (or repaired) to name it.
  void Identify(Device* d);

  void FindLeftovers();
  absl::Status WriteRecord(const Device& d) const;
  void EraseRecord(uint32_t dev_id) const;

  Multipath* const mp_;
  ControlPlane* const plane_;
  const ExporterOptions options_;
  const std::unique_ptr<UblkDriver> driver_;
  ByIdLinks links_;  // the lane's (and Create's and Shutdown's)
  bool recovery_ = false;
  bool pooled_ = false;
  bool quiesce_ = false;  // devices are made with kFlagQuiesce

  // Control thread (and Shutdown, once the plane has stopped).
  absl::flat_hash_map<std::string, std::unique_ptr<Device>> devices_;
  std::vector<Leftover> leftovers_;
  absl::flat_hash_map<std::string, std::string> export_all_failed_;
  // Heads (by uid) export-all has exported, or an earlier run had: not again.
  absl::flat_hash_set<uint64_t> auto_exported_;
  bool following_ = false;
  bool shut_down_ = false;
  bool stopping_ = false;  // BeginStop began: no more work
  // The lane. `busy_dev_` is the device the running job works on, owned here so that
  // a job whose result never came back (the plane stopped) is still cleaned up.
  bool busy_ = false;
  std::unique_ptr<Device> busy_dev_;
  std::deque<ControlPlane::Task> calls_;  // API calls waiting for the lane
  std::deque<Action> plan_;
  bool dirty_ = false;  // the core changed while the plan ran: plan again
  ControlPlane::TimerId retry_timer_ = 0;
  std::shared_ptr<EventSubscription> sub_;
  std::atomic<bool> wake_posted_{false};  // an OnCoreChanged is queued
};

}  // namespace umpath::ublk
