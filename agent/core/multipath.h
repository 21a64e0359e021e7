#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <thread>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/base/mutex.h"
#include "absl/types/span.h"
#include "agent/core/clock.h"
#include "agent/core/event_journal.h"
#include "agent/core/info.h"
#include "agent/core/queue_pair.h"
#include "agent/core/snapshot.h"
#include "agent/core/types.h"
#include "agent/core/worker.h"
#include "agent/nvme/ana_log.h"
#include "agent/nvme/identify.h"

namespace umpath {

// A head's stable name, from its identity: nguid-<hex>, else eui64-<hex>, else
// uuid-<uuid>, else ns<nsid>.<subsystem NQN> when the namespace reports no identifier.
std::string HeadNameFor(absl::string_view subsys_nqn, uint32_t nsid,
                        const nvme::NamespaceIds& ids);

// What the core asks of a controller's backend (vfio, libnvme). Threading: called from
// the control side with no core lock held; implementations answer asynchronously
// (Multipath::OnAnaLog, SetControllerState, ControllerFenced).
class ControllerBackend {
 public:
  virtual ~ControllerBackend() = default;
  virtual void RequestAnaLog() = 0;
  // ANATT expired with a group still in CHANGE (SEMANTICS "ANA").
  virtual void Reset() = 0;
  // After RemoveController or QuiesceController: no worker places commands on the
  // controller's queue pairs or polls them any more. The backend now fences the
  // controller (SEMANTICS "Fencing") and then calls Multipath::ControllerFenced; until
  // it does, nothing the controller holds is handed back for failover.
  virtual void OnQuiesced() = 0;
  // After QuiesceController and ControllerFenced: the commands it held went back to
  // their heads; the queue pairs stay out of service until ResumeController.
  virtual void OnHandedBack() = 0;
  // After RemoveController: every worker has let go of the controller's queue pairs
  // (what the layer below still held has come back first).
  virtual void OnQueuePairsReleased() = 0;
};

struct ControllerSpec {
  std::string name;         // unique, e.g. "0000:00:04.0" or "nvme3"
  std::string subsys_nqn;
  std::string transport;    // "pcie", "tcp", ...
  std::string address;
  int numa_node = -1;
  bool ana_supported = false;
  uint32_t anagrpmax = 0;
  uint8_t anatt_secs = 0;
  std::array<uint16_t, 3> crdt{};
  // Command Quiesce Time (Identify Controller, NVMe 2.1): after the controller is fenced,
  // its commands are handed back only once this has passed. 0: at once.
  uint16_t cqt_ms = 0;
  ControllerState state = ControllerState::kLive;
};

struct NamespaceSpec {
  std::string controller;
  uint32_t nsid = 0;
  nvme::NamespaceIds ids;
  uint32_t ana_group_id = 0;
  uint64_t size_blocks = 0;
  uint32_t block_size = 512;
  // What the path's controller can do for this namespace (an export's limits).
  uint32_t max_transfer_bytes = 0;  // 0: no limit known
  bool write_zeroes = false;        // ONCS bit 3
  bool deallocate = false;          // ONCS bit 2 (Dataset Management)
  bool volatile_write_cache = false;
};

// A path's spec from what its controller says of the namespace, the same for every
// backend: each identifier from the descriptor list (Identify CNS 03h) where it has one,
// from Identify Namespace otherwise; the commands it can do from ONCS.
NamespaceSpec PathSpecFromIdentify(std::string controller, uint32_t nsid,
                                   const nvme::NamespaceIdentity& ns,
                                   const std::optional<nvme::NamespaceIds>& descriptors,
                                   const nvme::ControllerIdentity& ctrl,
                                   uint32_t max_transfer_bytes);

// A run of the agent: a random name, and revisions and head uids that start at the
// wall clock's microseconds, past anything an earlier run on this node reached (a run
// makes far fewer than a million events or heads a second).
struct Incarnation {
  std::string name;  // 16 hex digits
  uint64_t first = 1;
};
Incarnation MakeIncarnation(const Clock& clock);

struct MultipathOptions {
  const Clock* clock = SystemClock::Get();
  std::vector<Worker*> workers;
  size_t journal_capacity = 4096;
  // This run of the agent: its name, and where its event revisions and head uids start
  // (an agent starts them past what an earlier run reached: see MakeIncarnation).
  std::string incarnation;
  uint64_t first_revision = 1;
  uint64_t first_head_uid = 1;
  IoPolicy default_policy = IoPolicy::kNuma;
  uint32_t default_delayed_removal_secs = 0;
  uint32_t default_io_fail_timeout_secs = 0;
  // Looked up by head name when a head is created, before any I/O reaches it; what it
  // returns overrides the defaults. Called under the core's lock: it must not call back.
  std::function<std::optional<HeadSettings>(absl::string_view head)> initial_settings;
};

// The multipath core's control side: controllers, paths, heads, policies, ANA, delayed
// removal, and the thread-safe control API the gRPC server calls.
//
// Threading: every public method may be called from any thread. Topology lives under
// mu_ (the "control thread" of DESIGN.md is whoever holds it; timers and ANA re-reads
// run on the thread Start() makes, or in RunPending() when tests drive time by hand).
// Workers never take mu_: they learn of changes by posted messages carrying immutable
// snapshots, and report ANA errors through ControllerShared flags.
class Multipath final : public AnaReadRequester {
 public:
  static absl::StatusOr<std::unique_ptr<Multipath>> Create(MultipathOptions options);
  ~Multipath();

  // Starts the timer thread (real clocks); without it, RunPending() does its job.
  void Start();
  // Fails every waiting I/O (kShutdown), cancels pending removals and timers, closes
  // every event subscription. Idempotent; the destructor calls it.
  void Shutdown();
  // Handles due removals, ANATT expiries and ANA re-read requests.
  void RunPending();

  // --- Backends: topology. ---
  absl::Status AddController(const ControllerSpec& spec, ControllerBackend* backend,
                             std::vector<QueuePair*> queue_pairs);
  absl::Status SetControllerState(absl::string_view controller, ControllerState state,
                                  absl::string_view reason = "");
  // Removes its paths (new I/O goes elsewhere) and takes its queue pairs out of service
  // on every worker; what they hold stays held. Then, as for any fence: OnQuiesced, the
  // backend fences the controller and calls ControllerFenced, the commands are handed
  // back after CQT, and OnQueuePairsReleased runs once every worker let go.
  absl::Status RemoveController(absl::string_view controller, absl::string_view reason = "");
  // SEMANTICS "Fencing", the one place commands given to a controller come back without
  // their completion. QuiesceController takes a controller that stays (a reset) out of
  // service; OnQuiesced follows. ControllerFenced: the backend made sure the controller
  // executes nothing more (vfio: disabled, or bus master off and function reset, or
  // released; kernel: the kernel owns what it holds); after the controller's CQT every
  // command its queue pairs may give up goes back to its head (failover), then
  // OnHandedBack (a reset) or OnQueuePairsReleased (a removal). ResumeController puts a
  // handed-back controller's queue pairs back in service.
  absl::Status QuiesceController(absl::string_view controller);
  absl::Status ControllerFenced(absl::string_view controller);
  absl::Status ResumeController(absl::string_view controller);
  // Commands handed back after fencing, over the agent's life (metrics).
  uint64_t fenced_ios_total() const { return fenced_ios_total_.load(std::memory_order_relaxed); }
  // Returns the head name the path joined. A path whose identifiers do not match its
  // head is rejected (FAILED_PRECONDITION) and reported as an event.
  absl::StatusOr<std::string> AddPath(const NamespaceSpec& ns);
  absl::Status RemovePath(absl::string_view controller, uint32_t nsid,
                          absl::string_view reason = "");
  // A new ANA log from a controller; a malformed one changes nothing and is reported.
  absl::Status OnAnaLog(absl::string_view controller, absl::Span<const uint8_t> log);

  // --- Control API. ---
  std::vector<HeadInfo> ListHeads() const;
  // One page, in name order: at most `limit` heads named after `after` that `keep`
  // accepts; `more` says whether another follows. Only the heads it looks at are
  // described, so listing every head by pages costs what one listing does.
  std::vector<HeadInfo> ListHeadsPage(absl::string_view after, size_t limit,
                                      const std::function<bool(const HeadInfo&)>& keep, bool* more) const;
  absl::StatusOr<HeadInfo> GetHead(absl::string_view name) const;
  std::vector<ControllerInfo> ListControllers() const;
  absl::StatusOr<ControllerInfo> GetController(absl::string_view name) const;
  Defaults GetDefaults() const;
  // Setting 0 (or a value whose deadline has passed) during a pending removal removes
  // the head now (SEMANTICS 12): then `*removed`, when given, is the head as this call
  // left it just before it went, so the caller can answer what it did.
  absl::Status SetDelayedRemoval(absl::string_view head, int64_t secs,
                                 std::optional<HeadInfo>* removed = nullptr);
  absl::Status SetDefaultDelayedRemoval(int64_t secs);
  // SEMANTICS "Fast fail": 0..86400, 0 = no limit of its own. A head without a usable path
  // for this long fails the I/O that waits and then new I/O at once, until a path is
  // usable again; the head and its device stay until the removal deadline.
  absl::Status SetIoFailTimeout(absl::string_view head, int64_t secs);
  absl::Status SetDefaultIoFailTimeout(int64_t secs);
  absl::Status SetPolicy(absl::string_view head, absl::string_view policy);
  absl::Status SetDefaultPolicy(absl::string_view policy);
  absl::Status FailPath(absl::string_view head, absl::string_view path, absl::string_view reason);
  absl::Status ReinstatePath(absl::string_view head, absl::string_view path);
  // A frontend made (device non-empty) or removed (empty) the head's block device: the
  // head reports it and an event says so. NOT_FOUND when the head (that uid) is gone,
  // except for a removal, which is still reported. `ids` change with the device (a link
  // repaired on the same device changes them alone, without an event).
  absl::Status SetHeadExport(absl::string_view head, uint64_t uid, absl::string_view device,
                             absl::string_view reason = "", const BlockDeviceIds& ids = {});
  // The head's volume label (ValidateVolume; empty: none). A label, not a state: no event.
  absl::Status SetVolume(absl::string_view head, absl::string_view volume);

  // Events. WatchState returns the current state and a subscription that continues
  // exactly after it (no gap, no duplicate).
  struct WatchStart {
    uint64_t revision = 0;  // the state below is as of this revision
    std::vector<HeadInfo> heads;
    std::vector<ControllerInfo> controllers;
    std::shared_ptr<EventSubscription> subscription;
  };
  absl::StatusOr<WatchStart> WatchState(size_t queue_limit, std::function<void()> notify);
  EventJournal& journal() { return journal_; }
  const Clock* clock() const { return options_.clock; }

  // AnaReadRequester (worker threads).
  void RequestAnaRead(ControllerShared* controller) override;

 private:
  struct Head;
  struct Controller;
  struct Path {
    Controller* controller = nullptr;
    Head* head = nullptr;
    uint32_t nsid = 0;
    uint32_t ana_group_id = 0;
    nvme::AnaState ana = nvme::AnaState::kOptimized;
    bool ana_pending = false;
    bool ready = true;
    bool admin_failed = false;
    std::string fail_reason;
    PathRecordShared shared;
    PathStateWord Word() const;
  };
  // Where a controller is in SEMANTICS "Fencing".
  enum class Fence : uint8_t {
    kNone,         // in service
    kQuiescing,    // workers told to stop using its queue pairs
    kQuiesced,     // they have; the backend is fencing it
    kFenced,       // fenced; waiting out CQT (fence_at)
    kHandingBack,  // workers hand its commands back
    kHandedBack,   // done; a reset controller waits for ResumeController
  };
  struct Controller {
    std::string name;
    ControllerSpec spec;
    ControllerState state = ControllerState::kNew;
    ControllerBackend* backend = nullptr;
    std::shared_ptr<ControllerShared> shared;
    std::vector<std::unique_ptr<Path>> paths;
    std::optional<nvme::AnaLog> last_ana_log;
    int64_t anatt_deadline = 0;  // monotonic ns; 0 = not armed
    std::vector<QueuePair*> qps;  // one per worker; read here only for their counters
    Fence fence = Fence::kNone;
    bool removing = false;  // RemoveController: the fence ends with the queue pairs gone
    bool handback_removes = false;  // the hand back under way removes the queue pairs
    int64_t fence_at = 0;   // kFenced: monotonic ns when CQT has passed
    // Workers that still have to finish the current step, and what they handed back.
    std::shared_ptr<std::atomic<int>> step_left;
    std::shared_ptr<std::atomic<uint64_t>> step_handed_back;
    uint64_t fenced_ios = 0;
  };
  // Set by the last worker to finish a fence step (lock-free); the control side then
  // moves the fence on. Shared with the workers' messages, so it outlives the core.
  struct FenceNotice {
    std::atomic<bool> pending{false};
    int fd = -1;  // a dup of the timer's eventfd
    ~FenceNotice();
    void Notify();
  };
  struct Head {
    std::string name;
    uint64_t uid = 0;
    std::string subsys_nqn;
    uint32_t nsid = 0;
    nvme::NamespaceIds ids;
    uint64_t size_blocks = 0;
    uint32_t block_size = 0;
    HeadLimits limits;
    std::string export_device;
    BlockDeviceIds export_ids;
    std::string volume;
    IoPolicy policy = IoPolicy::kNuma;
    uint32_t delayed_removal_secs = 0;
    uint32_t io_fail_timeout_secs = 0;
    std::vector<Path*> paths;  // list order
    std::shared_ptr<HeadShared> shared;
    uint64_t generation = 0;
    int64_t lost_at = 0;           // monotonic ns when the last path went
    int64_t removal_deadline = 0;  // monotonic ns; 0 = no removal armed
    // Fast fail: when the head last had no selectable path (0: it has one), and when its
    // fast fail begins (0: none armed, or it began: shared->fail_fast).
    int64_t unusable_since = 0;
    int64_t fast_fail_deadline = 0;
    // umpath_head_no_path_seconds_total: closed outages, and when the one under way began
    // (0: a path is selectable). Monotonic ns.
    int64_t no_path_nanos = 0;
    int64_t no_path_since = 0;
    int64_t created_wall = 0;
  };

  class ABSL_SCOPED_LOCKABLE Locked;
  explicit Multipath(MultipathOptions options, int wake_fd);
  // Backend calls are made after mu_ is released (a backend may call straight back).
  void AfterUnlock(absl::AnyInvocable<void()> fn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    after_unlock_.push_back(std::move(fn));
  }
  void WakeTimer();

  Controller* FindController(absl::string_view name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Head* FindHead(absl::string_view name) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Path* FindHeadPath(Head* head, absl::string_view path) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The head a path joins, made for the first one; FAILED_PRECONDITION (and an event)
  // when the path's identifiers conflict with a head's.
  absl::StatusOr<Head*> HeadForPath(const NamespaceSpec& ns, const Controller& c)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RejectPath(const Controller& c, std::string head, std::string why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Head* CreateHead(const NamespaceSpec& ns, const Controller& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AttachPath(const NamespaceSpec& ns, Controller* c, Head* head)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // From the controller's last ANA log; without one, ANA_PENDING until one is read.
  void SetInitialAna(Path* p, const Controller& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Publish(Head* head) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void KickHead(Head* head) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StorePathState(Path* p, bool clear_ana_pending = false) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<Head*> HeadsOf(const Controller& c) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DetachPath(Path* p, absl::string_view reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnLastPathGone(Head* head) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fast fail: after any change of the head's paths or their states, arms, re-arms or
  // ends it (and wakes the timer).
  void UpdateFastFail(Head* head) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Opens or closes the head's no-path interval.
  void AccountNoPath(Head* head, bool selectable) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartFastFail(Head* head) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveHead(Head* head, std::string reason, IoError why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ApplyAnaLog(Controller* c, const nvme::AnaLog& log) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t ToWall(int64_t mono) const;
  HeadInfo DescribeHead(const Head& h) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  ControllerInfo DescribeController(const Controller& c) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Emit(Event e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t NextDeadline() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TimerLoop();
  // Fencing (multipath_fence.cc).
  Controller* FindFencing(absl::string_view name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartQuiesce(Controller* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartHandBack(Controller* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AdvanceFences(int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool AdvanceFence(Controller* c, int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const MultipathOptions options_;
  EventJournal journal_;

  mutable Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Controller>> controllers_ ABSL_GUARDED_BY(mu_);
  // Removed from the topology, still being fenced (their queue pairs hold commands).
  // A name may be in use again (a controller re-added) while its old one is fenced.
  std::vector<std::unique_ptr<Controller>> retired_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<FenceNotice> fence_notice_;
  std::atomic<uint64_t> fenced_ios_total_{0};
  std::vector<std::unique_ptr<Head>> heads_ ABSL_GUARDED_BY(mu_);  // creation order
  // The same heads by name, and by (subsystem NQN, NSID): lookups stay O(1) with
  // thousands of heads (a path joining its head, every call naming one).
  absl::flat_hash_map<std::string, Head*> heads_by_name_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::pair<std::string, uint32_t>, Head*> heads_by_namespace_ ABSL_GUARDED_BY(mu_);
  uint32_t next_controller_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_head_uid_ ABSL_GUARDED_BY(mu_) = 1;
  IoPolicy default_policy_ ABSL_GUARDED_BY(mu_);
  uint32_t default_delayed_removal_secs_ ABSL_GUARDED_BY(mu_);
  uint32_t default_io_fail_timeout_secs_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<absl::AnyInvocable<void()>> after_unlock_ ABSL_GUARDED_BY(mu_);
  const int wake_fd_;  // eventfd: wakes the timer thread (workers write it lock-free)

  // Set by workers (no lock) when a controller asked for an ANA re-read.
  std::atomic<bool> ana_reads_requested_{false};
  std::thread timer_thread_;
};

}  // namespace umpath
