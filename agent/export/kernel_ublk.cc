// The real UblkDriver: /dev/ublk-control for the commands, /dev/ublkcN served by the
// workers for each device's queues.

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "agent/base/files.h"
#include "absl/strings/str_split.h"
#include "agent/base/mutex.h"
#include "agent/export/ublk_control.h"
#include "agent/export/ublk_driver.h"
#include "agent/export/ublk_queue.h"

namespace umpath::ublk {

namespace fs = std::filesystem;

namespace {

constexpr int kDrainTries = 2000;  // x 5 ms: how long a stopped queue may take to end

// Runs `fn` on the worker's thread and waits for it.
void OnWorker(Worker* w, absl::AnyInvocable<void()> fn) {
  auto done = std::make_shared<Notification>();
  w->Post([fn = std::move(fn), done]() mutable {
    fn();
    done->Notify();
  });
  done->WaitFor(std::chrono::hours(1));
}

class KernelUblk final : public UblkDriver {
 public:
  KernelUblk(KernelUblkOptions options, std::unique_ptr<Control> control)
      : options_(std::move(options)),
        control_(std::move(control)),
        budget_per_worker_(static_cast<uint32_t>(std::min<uint64_t>(
            options_.max_pinned_bytes / std::max<size_t>(1, options_.workers.size()) /
                std::max<uint32_t>(1, options_.buffer_bytes),
            kMaxQueueDepth * 1024))),
        pool_(options_.workers.size()) {
    for (size_t w = 0; w < options_.workers.size(); ++w) {
      pool_[w].pool = std::make_unique<BufferPool>(options_.buffer_bytes);
    }
    heads_left_.store(budget_per_worker_, std::memory_order_relaxed);
  }
  ~KernelUblk() override {
    for (auto& [id, s] : served_) {
      if (s.cdev_fd >= 0) close(s.cdev_fd);
    }
  }

  uint64_t Features() override { return control_->Features(); }
  absl::StatusOr<ublksrv_ctrl_dev_info> Add(const ublksrv_ctrl_dev_info& want) override {
    return control_->Add(want);
  }
  absl::Status SetParams(uint32_t dev_id, const ublk_params& params) override {
    return control_->SetParams(dev_id, params);
  }
  absl::StatusOr<ublk_params> GetParams(uint32_t dev_id) override { return control_->GetParams(dev_id); }
  absl::Status Start(uint32_t dev_id) override { return control_->Start(dev_id, getpid()); }
  absl::Status EndRecovery(uint32_t dev_id) override { return control_->EndRecovery(dev_id, getpid()); }
  absl::Status StartRecovery(uint32_t dev_id) override { return control_->StartRecovery(dev_id); }
  absl::Status Stop(uint32_t dev_id) override { return control_->Stop(dev_id); }
  absl::Status Delete(uint32_t dev_id) override { return control_->Delete(dev_id); }
  absl::Status DeleteNoWait(uint32_t dev_id) override {
    absl::Status s = control_->DeleteAsync(dev_id);
    // An older kernel does not know the command (EINVAL, EOPNOTSUPP, ENOTSUPP).
    return s.ok() || absl::IsNotFound(s) ? s : control_->Delete(dev_id);
  }
  absl::StatusOr<ublksrv_ctrl_dev_info> Info(uint32_t dev_id) override { return control_->Info(dev_id); }
  bool ServedByAnother(const ublksrv_ctrl_dev_info& info) override {
    return info.ublksrv_pid > 0 && info.ublksrv_pid != getpid() && kill(info.ublksrv_pid, 0) == 0 &&
           info.state == kStateLive;
  }

  absl::Status OpenQueues(uint32_t dev_id, const QueueSetup& setup) override;
  bool CloseQueues(uint32_t dev_id) override;
  void HoldQueues(uint32_t dev_id) override;
  absl::Status Quiesce(uint32_t dev_id, uint32_t timeout_ms) override {
    return control_->Quiesce(dev_id, timeout_ms);
  }
  uint32_t Unanswered(uint32_t dev_id) override;
  uint32_t ReleaseQueues(uint32_t dev_id) override;
  std::vector<std::string> Users(uint32_t dev_id) override {
    struct stat st;
    if (stat(absl::StrCat("/dev/ublkb", dev_id).c_str(), &st) != 0) return {};
    return BlockDeviceUsers(major(st.st_rdev), minor(st.st_rdev), absl::StrCat("ublkb", dev_id));
  }
  absl::StatusOr<BlockDeviceIds> DiskIds(uint32_t dev_id) override {
    const std::string node = absl::StrCat("/dev/ublkb", dev_id);
    struct stat st;
    if (stat(node.c_str(), &st) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("stat ", node));
    if (!S_ISBLK(st.st_mode)) return absl::FailedPreconditionError(absl::StrCat(node, " is not a block device"));
    BlockDeviceIds ids;
    ids.major = major(st.st_rdev);
    ids.minor = minor(st.st_rdev);
    // Since Linux 5.15; the same number BLKGETDISKSEQ answers, without opening the disk
    // (an open would count as a user to a concurrent unexport's check).
    if (!absl::SimpleAtoi(FirstLine(absl::StrCat("/sys/block/ublkb", dev_id, "/diskseq")), &ids.diskseq)) {
      ids.diskseq = 0;
    }
    return ids;
  }
  PinnedMemory Pinned() const override {
    PinnedMemory m;
    m.bytes = pinned_bytes_.load(std::memory_order_relaxed);
    m.budget_bytes = options_.max_pinned_bytes;
    m.buffer_bytes = options_.buffer_bytes;
    m.heads_left = heads_left_.load(std::memory_order_relaxed);
    return m;
  }

 private:
  struct Served {
    int cdev_fd = -1;
    std::vector<std::unique_ptr<Queue>> q;
    IoMemory memory;     // the tags' own buffers (a device without the pools)
    bool pooled = false;
    uint16_t pooled_queues = 0;  // counted in the pools' accounts
    uint16_t depth = 0;
  };
  // One worker's pool, and what the devices ask of it. The counts are the lane's (one
  // device's work at a time); the pool itself is the worker's.
  struct WorkerPool {
    std::unique_ptr<BufferPool> pool;
    uint32_t made = 0;      // buffers given to the pool
    uint32_t queues = 0;    // pooled queues served: each is guaranteed a buffer
    uint32_t demand = 0;    // their depths
  };
  // Grows the pools of workers [0, queues) for one more queue of `depth` each.
  absl::Status GrowPools(uint16_t queues, uint16_t depth, bool beyond_budget);
  void ForgetPooled(Served& s);
  void UpdateHeadsLeft();
  void Log(const std::string& line) const {
    if (options_.log) options_.log(line);
  }
  absl::Status OpenCdev(uint32_t dev_id, Served* s);

  const KernelUblkOptions options_;
  const std::unique_ptr<Control> control_;
  const uint32_t budget_per_worker_;  // buffers
  // Before the queues: they give buffers back as they close.
  std::vector<WorkerPool> pool_;
  std::atomic<uint64_t> pinned_bytes_{0};
  std::atomic<uint32_t> heads_left_{0};
  std::map<uint32_t, Served> served_;
  // Queues whose requests were still in the core when their device stopped: kept.
  std::vector<Served> kept_;
};

absl::Status KernelUblk::OpenCdev(uint32_t dev_id, Served* s) {
  const std::string cdev = absl::StrCat("/dev/ublkc", dev_id);
  // devtmpfs makes the node as the driver adds the device; udev may still be chowning.
  for (int i = 0; i < 200 && s->cdev_fd < 0; ++i) {
    s->cdev_fd = open(cdev.c_str(), O_RDWR | O_CLOEXEC);
    if (s->cdev_fd < 0 && errno != ENOENT) break;
    if (s->cdev_fd < 0) usleep(10'000);
  }
  if (s->cdev_fd < 0) {
    return absl::FailedPreconditionError(absl::StrCat("open ", cdev, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status KernelUblk::GrowPools(uint16_t queues, uint16_t depth, bool beyond_budget) {
  for (uint16_t w = 0; w < queues; ++w) {
    if (pool_[w].queues + 1 > budget_per_worker_ && !beyond_budget) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the I/O buffers' budget (--max_pinned_mib=", options_.max_pinned_bytes >> 20, ": ",
          budget_per_worker_, " buffers of ", options_.buffer_bytes >> 10, " KiB per worker) holds ",
          budget_per_worker_, " exported heads, each guaranteed one buffer per worker, and all ",
          pool_[w].queues, " are taken; unexport a head or raise --max_pinned_mib"));
    }
  }
  for (uint16_t w = 0; w < queues; ++w) {
    WorkerPool& p = pool_[w];
    // Up to the budget, every queue brings its depth's worth; past it the queues share
    // (and a take-over beyond it brings its one guaranteed buffer).
    const uint32_t want = std::max(std::min(budget_per_worker_, p.demand + depth), p.queues + 1);
    if (want <= p.made) continue;
    const uint32_t add = want - p.made;
    absl::StatusOr<IoMemory> mem = options_.alloc(uint64_t{add} * options_.buffer_bytes);
    if (!mem.ok()) {
      if (p.made >= p.queues + 1) continue;  // enough to serve, if not to serve fast
      return absl::Status(mem.status().code(), absl::StrCat("I/O buffers: ", mem.status().message()));
    }
    BufferPool* pool = p.pool.get();
    OnWorker(options_.workers[w], [pool, m = std::move(*mem), add]() mutable { pool->Add(std::move(m), add); });
    p.made += add;
    pinned_bytes_.fetch_add(uint64_t{add} * options_.buffer_bytes, std::memory_order_relaxed);
  }
  for (uint16_t w = 0; w < queues; ++w) {
    ++pool_[w].queues;
    pool_[w].demand += depth;
  }
  UpdateHeadsLeft();
  return absl::OkStatus();
}

void KernelUblk::ForgetPooled(Served& s) {
  for (uint16_t w = 0; w < s.pooled_queues; ++w) {
    --pool_[w].queues;
    pool_[w].demand -= s.depth;
  }
  if (s.pooled_queues > 0) UpdateHeadsLeft();
  s.pooled_queues = 0;
}

void KernelUblk::UpdateHeadsLeft() {
  uint32_t left = budget_per_worker_;
  for (const WorkerPool& p : pool_) left = std::min(left, p.queues >= budget_per_worker_ ? 0 : budget_per_worker_ - p.queues);
  heads_left_.store(left, std::memory_order_relaxed);
}

absl::Status KernelUblk::OpenQueues(uint32_t dev_id, const QueueSetup& setup) {
  if (setup.queues > options_.workers.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the device has ", setup.queues, " queues and this agent ", options_.workers.size(),
        " workers; start it with --workers=", setup.queues, " or more"));
  }
  // The pools' buffers are this agent's largest I/O; a device left by an agent that
  // allowed larger ones keeps buffers of its own.
  const bool pooled = setup.pooled && setup.shape.buffer_bytes <= options_.buffer_bytes;
  if (setup.pooled && !pooled) {
    return absl::FailedPreconditionError(absl::StrCat(
        "its largest I/O is ", setup.shape.buffer_bytes, " bytes and this agent's ", options_.buffer_bytes,
        " (--ublk_max_io_kib)"));
  }
  if (pooled) {
    if (absl::Status s = GrowPools(setup.queues, setup.depth, setup.beyond_budget); !s.ok()) return s;
  }
  Served& s = served_[dev_id];
  s.pooled = pooled;
  s.pooled_queues = pooled ? setup.queues : 0;
  s.depth = setup.depth;
  absl::Status result = OpenCdev(dev_id, &s);
  const uint32_t buffer_bytes = setup.shape.buffer_bytes;
  if (result.ok() && !pooled) {
    const uint64_t bytes = uint64_t{setup.queues} * setup.depth * buffer_bytes;
    absl::StatusOr<IoMemory> mem = options_.alloc(bytes);
    if (mem.ok()) {
      // Counted while the device is served.
      auto* pinned = &pinned_bytes_;
      pinned->fetch_add(bytes, std::memory_order_relaxed);
      s.memory = IoMemory{mem->host, std::shared_ptr<void>(mem->host, [owner = std::move(mem->owner), pinned, bytes](void*) {
                            pinned->fetch_sub(bytes, std::memory_order_relaxed);
                          })};
    }
    result = mem.status();
  }
  for (uint16_t q = 0; result.ok() && q < setup.queues; ++q) {
    Queue::Options qo;
    qo.cdev_fd = s.cdev_fd;
    qo.q_id = q;
    qo.depth = setup.depth;
    qo.head_uid = setup.head_uid;
    qo.shape = setup.shape;
    if (pooled) {
      qo.pool = pool_[q].pool.get();
      qo.user_copy = setup.data == DataMode::kUserCopy || setup.data == DataMode::kZeroCopy;
      qo.zero_copy = setup.data == DataMode::kZeroCopy;
    } else {
      qo.buffers = static_cast<uint8_t*>(s.memory.host) + size_t{q} * setup.depth * buffer_bytes;
    }
    s.q.push_back(std::make_unique<Queue>(qo));
  }
  for (size_t q = 0; q < s.q.size(); ++q) {
    Worker* w = options_.workers[q];
    Queue* queue = s.q[q].get();
    absl::Status st;
    OnWorker(w, [&st, queue, w] {
      st = queue->Open(*w);
      if (st.ok()) w->AddSource(queue);
    });
    if (!st.ok() && result.ok()) result = st;
  }
  if (!result.ok()) {
    CloseQueues(dev_id);
  } else if (pooled) {
    Log(absl::StrCat("ublk: device ", dev_id, ": request data ",
                     setup.data == DataMode::kZeroCopy   ? "zero copy (AUTO_BUF_REG; USER_COPY for vfio paths)"
                     : setup.data == DataMode::kUserCopy ? "copied by the agent (USER_COPY)"
                                                         : "copied by the driver (NEED_GET_DATA)"));
  }
  return result;
}

bool KernelUblk::CloseQueues(uint32_t dev_id) {
  auto it = served_.find(dev_id);
  if (it == served_.end()) return true;
  Served& s = it->second;
  bool all_closed = true;
  for (size_t q = 0; q < s.q.size(); ++q) {
    Worker* w = options_.workers[q];
    Queue* queue = s.q[q].get();
    // A stopped device cancels what its queues fetched; wait until every tag ended and
    // nothing is left in the core (which calls back into the queue).
    bool drained = false, in_core = false;
    for (int i = 0; i < kDrainTries && !drained; ++i) {
      OnWorker(w, [&] {
        queue->Drain(*w);
        drained = queue->drained();
        in_core = queue->in_core() > 0;
      });
      if (!drained) usleep(5'000);
      // Tags only fetched are cancelled when the ring goes; tags in the core are not.
      if (!in_core && i >= 20) break;
    }
    if (in_core) {
      Log(absl::StrCat("ublk: device ", dev_id, " queue ", q,
                       ": requests still in the core after the device stopped; keeping the queue"));
      all_closed = false;
      continue;
    }
    OnWorker(w, [&] {
      w->RemoveSource(queue, nullptr);
      queue->Close();
    });
  }
  if (s.cdev_fd >= 0) {
    close(s.cdev_fd);
    s.cdev_fd = -1;
  }
  if (all_closed) {
    ForgetPooled(s);
  } else {
    kept_.push_back(std::move(s));  // its buffers stay taken with it
  }
  served_.erase(it);
  return all_closed;
}

void KernelUblk::HoldQueues(uint32_t dev_id) {
  auto it = served_.find(dev_id);
  if (it == served_.end()) return;
  for (size_t q = 0; q < it->second.q.size(); ++q) {
    Queue* queue = it->second.q[q].get();
    OnWorker(options_.workers[q], [queue] { queue->Hold(); });
  }
}

uint32_t KernelUblk::Unanswered(uint32_t dev_id) {
  auto it = served_.find(dev_id);
  if (it == served_.end()) return 0;
  uint32_t n = 0;
  for (size_t q = 0; q < it->second.q.size(); ++q) {
    Worker* w = options_.workers[q];
    Queue* queue = it->second.q[q].get();
    OnWorker(w, [&n, queue, w] {
      queue->Drain(*w);
      n += queue->unanswered();
    });
  }
  return n;
}

uint32_t KernelUblk::ReleaseQueues(uint32_t dev_id) {
  auto it = served_.find(dev_id);
  if (it == served_.end()) return 0;
  Served& s = it->second;
  uint32_t held = 0;
  for (size_t q = 0; q < s.q.size(); ++q) {
    Worker* w = options_.workers[q];
    Queue* queue = s.q[q].get();
    // Nothing of the device is stopped: the ring goes (the driver cancels the tags
    // still fetching), the held requests stay with the kernel.
    OnWorker(w, [&held, queue, w] {
      queue->Drain(*w);
      held += queue->held();
      w->RemoveSource(queue, nullptr);
      queue->Close();
    });
  }
  if (s.cdev_fd >= 0) close(s.cdev_fd);
  s.cdev_fd = -1;
  ForgetPooled(s);
  served_.erase(it);
  return held;
}

}  // namespace

absl::StatusOr<std::unique_ptr<UblkDriver>> OpenKernelUblk(KernelUblkOptions options) {
  absl::StatusOr<std::unique_ptr<Control>> control = Control::Open(options.control_path);
  if (!control.ok()) return control.status();
  return std::make_unique<KernelUblk>(std::move(options), std::move(*control));
}

std::vector<std::string> BlockDeviceUsers(uint32_t major_num, uint32_t minor_num,
                                          const std::string& sysname) {
  std::vector<std::string> users;
  const dev_t want = makedev(major_num, minor_num);
  // Processes with it open (what fuser shows).
  std::error_code ec;
  for (const auto& proc : fs::directory_iterator("/proc", ec)) {
    const std::string pid = proc.path().filename();
    if (pid.empty() || !std::isdigit(static_cast<unsigned char>(pid[0]))) continue;
    if (pid == std::to_string(getpid())) continue;
    std::error_code ec2;
    for (const auto& fd : fs::directory_iterator(proc.path() / "fd", ec2)) {
      struct stat st;
      if (stat(fd.path().c_str(), &st) == 0 && S_ISBLK(st.st_mode) && st.st_rdev == want) {
        users.push_back(absl::StrCat("pid ", pid, " (", FirstLine(proc.path() / "comm"), ")"));
        break;
      }
    }
  }
  // Mounts.
  std::ifstream mi("/proc/self/mountinfo");
  const std::string majmin = absl::StrCat(major_num, ":", minor_num);
  for (std::string line; std::getline(mi, line);) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() > 4 && f[2] == majmin) users.push_back(absl::StrCat("mounted at ", f[4]));
  }
  // Stacked devices (device-mapper, md).
  for (const auto& h : fs::directory_iterator(fs::path("/sys/block") / sysname / "holders", ec)) {
    users.push_back(absl::StrCat("held by ", h.path().filename().string()));
  }
  return users;
}

}  // namespace umpath::ublk
