#pragma once

// The kernel's ublk driver as the exporter sees it (UblkDriver), for tests: devices by
// id, every call recorded, users (holders, mounts, open files) set by the test.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/base/mutex.h"
#include "agent/export/ublk_driver.h"
#include "gtest/gtest.h"

namespace umpath::ublk {

// Threading: the exporter's offload thread calls it, the test reads and sets it; every
// field but the start gate is under mu_.
class FakeUblk final : public UblkDriver {
 public:
  struct Dev {
    ublksrv_ctrl_dev_info info{};
    ublk_params params{};
    uint64_t diskseq = 0;  // as the kernel numbers disks: each new one higher
  };

  uint64_t Features() override { return features; }
  absl::StatusOr<ublksrv_ctrl_dev_info> Add(const ublksrv_ctrl_dev_info& want) override {
    MutexLock l(&mu_);
    calls_.push_back("add");
    Dev d;
    d.info = want;
    if (want.dev_id != static_cast<uint32_t>(-1)) {
      // Taken by another ublk server meanwhile (taken_ids), or already ours.
      if (devs_.contains(want.dev_id) || taken_ids_.erase(want.dev_id) > 0) {
        return absl::AlreadyExistsError("ublk add: File exists");
      }
      recorded_at_add_ = std::filesystem::exists(record_dir + "/" + std::to_string(want.dev_id));
    } else {
      d.info.dev_id = next_id_++;
    }
    d.info.state = kStateDead;
    d.diskseq = ++last_diskseq_;
    devs_[d.info.dev_id] = d;
    return d.info;
  }
  absl::Status SetParams(uint32_t id, const ublk_params& p) override {
    MutexLock l(&mu_);
    Record("set-params", id);
    devs_[id].params = p;
    return absl::OkStatus();
  }
  absl::StatusOr<ublk_params> GetParams(uint32_t id) override {
    MutexLock l(&mu_);
    return devs_.at(id).params;
  }
  absl::Status Start(uint32_t id) override {
    {
      MutexLock l(&mu_);
      Record("start", id);
      recorded_at_start_ = std::filesystem::exists(record_dir + "/" + std::to_string(id));
      if (!start_error.ok()) return start_error;
    }
    if (block_start) {
      start_entered.Notify();
      release_start.WaitFor(std::chrono::hours(1));
    }
    MutexLock l(&mu_);
    devs_[id].info.state = kStateLive;
    return absl::OkStatus();
  }
  absl::Status EndRecovery(uint32_t id) override {
    MutexLock l(&mu_);
    Record("end-recovery", id);
    devs_[id].info.state = kStateLive;
    return absl::OkStatus();
  }
  absl::Status StartRecovery(uint32_t id) override {
    MutexLock l(&mu_);
    Record("start-recovery", id);
    return absl::OkStatus();
  }
  absl::Status Stop(uint32_t id) override {
    MutexLock l(&mu_);
    Record("stop", id);
    if (!devs_.contains(id)) return absl::NotFoundError("no device");
    devs_[id].info.state = kStateDead;
    return absl::OkStatus();
  }
  // The kernel's DEL_DEV would not return while a user holds the device: a test that
  // gets there fails instead of hanging.
  absl::Status Delete(uint32_t id) override {
    MutexLock l(&mu_);
    Record("delete", id);
    EXPECT_TRUE(UsersLocked(id).empty())
        << "DEL_DEV of device " << id << " waits for its users: " << absl::StrJoin(UsersLocked(id), ", ");
    return devs_.erase(id) ? absl::OkStatus() : absl::NotFoundError("no device");
  }
  absl::Status DeleteNoWait(uint32_t id) override {
    MutexLock l(&mu_);
    Record("delete-nowait", id);
    return devs_.erase(id) ? absl::OkStatus() : absl::NotFoundError("no device");
  }
  absl::StatusOr<ublksrv_ctrl_dev_info> Info(uint32_t id) override {
    MutexLock l(&mu_);
    auto it = devs_.find(id);
    if (it == devs_.end()) return absl::NotFoundError("no device");
    return it->second.info;
  }
  bool ServedByAnother(const ublksrv_ctrl_dev_info& info) override {
    return info.ublksrv_pid == another_agent;
  }
  absl::Status OpenQueues(uint32_t id, const QueueSetup& setup) override {
    MutexLock l(&mu_);
    Record("open-queues", id);
    EXPECT_GT(setup.queues, 0);
    EXPECT_GT(setup.shape.buffer_bytes, 0u);
    setups_.push_back(setup);
    return absl::OkStatus();
  }
  bool CloseQueues(uint32_t id) override {
    MutexLock l(&mu_);
    Record("close-queues", id);
    return true;
  }
  void HoldQueues(uint32_t id) override {
    MutexLock l(&mu_);
    Record("hold", id);
  }
  absl::Status Quiesce(uint32_t id, uint32_t timeout_ms) override {
    MutexLock l(&mu_);
    Record("quiesce", id);
    quiesce_timeouts_.push_back(timeout_ms);
    return quiesce_error_;
  }
  // The next values from SetUnanswered, then the last one for good (0 if none).
  uint32_t Unanswered(uint32_t id) override {
    MutexLock l(&mu_);
    Record("unanswered", id);
    if (unanswered_.size() > 1) {
      const uint32_t n = unanswered_.front();
      unanswered_.erase(unanswered_.begin());
      return n;
    }
    return unanswered_.empty() ? 0 : unanswered_.front();
  }
  uint32_t ReleaseQueues(uint32_t id) override {
    MutexLock l(&mu_);
    Record("release", id);
    return 3;
  }
  // dev_t 259:id, as the kernel numbers ublk disks when nothing else takes block major 259.
  absl::StatusOr<BlockDeviceIds> DiskIds(uint32_t id) override {
    MutexLock l(&mu_);
    auto it = devs_.find(id);
    if (it == devs_.end()) return absl::NotFoundError("no device");
    return BlockDeviceIds{.major = 259, .minor = id, .diskseq = it->second.diskseq};
  }
  std::vector<std::string> Users(uint32_t id) override {
    MutexLock l(&mu_);
    return UsersLocked(id);
  }
  PinnedMemory Pinned() const override {
    PinnedMemory m;
    m.budget_bytes = uint64_t{8} << 20;
    m.buffer_bytes = 65536;
    m.heads_left = heads_left.load();
    return m;
  }

  // A device an earlier agent (pid) left, quiesced, with its capacity.
  void Leave(uint32_t id, pid_t pid, uint64_t sectors, bool recovery = true,
             uint16_t state = kStateQuiesced, uint64_t more_flags = 0) {
    MutexLock l(&mu_);
    Dev d;
    d.info.dev_id = id;
    d.info.nr_hw_queues = 1;
    d.info.queue_depth = 8;
    d.info.max_io_buf_bytes = 65536;
    d.info.ublksrv_pid = pid;
    d.info.state = state;
    d.info.flags =
        (recovery ? kFlagUserRecovery | kFlagUserRecoveryReissue : 0) | more_flags;
    d.params.basic.dev_sectors = sectors;
    d.params.basic.logical_bs_shift = 9;
    d.diskseq = ++last_diskseq_;
    devs_[id] = d;
    next_id_ = std::max(next_id_, id + 1);
  }
  void SetState(uint32_t id, uint16_t state) {
    MutexLock l(&mu_);
    devs_[id].info.state = state;
  }
  std::string Calls() {
    MutexLock l(&mu_);
    return absl::StrJoin(calls_, " ");
  }
  bool Called(const std::string& what) {
    MutexLock l(&mu_);
    return std::find(calls_.begin(), calls_.end(), what) != calls_.end();
  }
  uint64_t DiskSeq(uint32_t id) {
    MutexLock l(&mu_);
    return devs_.contains(id) ? devs_[id].diskseq : 0;
  }
  bool Has(uint32_t id) {
    MutexLock l(&mu_);
    return devs_.contains(id);
  }
  // Who uses every device; SetUsers(id, ...): who uses that one (mounted, open, stacked).
  void SetUsers(std::vector<std::string> u) {
    MutexLock l(&mu_);
    users = std::move(u);
  }
  void SetUsers(uint32_t id, std::vector<std::string> u) {
    MutexLock l(&mu_);
    users_of_[id] = std::move(u);
  }

  void SetQuiesceError(absl::Status s) {
    MutexLock l(&mu_);
    quiesce_error_ = std::move(s);
  }
  void SetUnanswered(std::vector<uint32_t> counts) {
    MutexLock l(&mu_);
    unanswered_ = std::move(counts);
  }
  std::vector<uint32_t> QuiesceTimeouts() {
    MutexLock l(&mu_);
    return quiesce_timeouts_;
  }
  // Where `what` first comes in the calls; -1 if never.
  int Position(const std::string& what) {
    MutexLock l(&mu_);
    auto it = std::find(calls_.begin(), calls_.end(), what);
    return it == calls_.end() ? -1 : static_cast<int>(it - calls_.begin());
  }
  void SetStartError(absl::Status s) {
    MutexLock l(&mu_);
    start_error = std::move(s);
  }
  bool RecordedAtStart() {
    MutexLock l(&mu_);
    return recorded_at_start_;
  }
  bool RecordedAtAdd() {
    MutexLock l(&mu_);
    return recorded_at_add_;
  }
  // The number is taken by another ublk server: the next ADD_DEV asking for it fails.
  void TakeId(uint32_t id) {
    MutexLock l(&mu_);
    taken_ids_.insert(id);
  }
  std::vector<QueueSetup> Setups() {
    MutexLock l(&mu_);
    return setups_;
  }
  std::string record_dir;  // set before use
  std::atomic<bool> block_start{false};
  Notification start_entered, release_start;
  pid_t another_agent = -1;
  uint64_t features = kFlagUserRecovery | kFlagUserRecoveryReissue | kFlagNeedGetData;
  std::atomic<uint32_t> heads_left{1000};

 private:
  std::vector<std::string> UsersLocked(uint32_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = users_of_.find(id);
    return it != users_of_.end() ? it->second : users;
  }
  void Record(const char* what, uint32_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    calls_.push_back(absl::StrCat(what, " ", id));
  }
  Mutex mu_;
  std::map<uint32_t, Dev> devs_ ABSL_GUARDED_BY(mu_);
  uint32_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t last_diskseq_ ABSL_GUARDED_BY(mu_) = 40;
  std::vector<std::string> calls_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> users ABSL_GUARDED_BY(mu_);
  std::map<uint32_t, std::vector<std::string>> users_of_ ABSL_GUARDED_BY(mu_);
  absl::Status start_error ABSL_GUARDED_BY(mu_);
  bool recorded_at_start_ ABSL_GUARDED_BY(mu_) = false;
  bool recorded_at_add_ ABSL_GUARDED_BY(mu_) = false;
  std::set<uint32_t> taken_ids_ ABSL_GUARDED_BY(mu_);
  std::vector<QueueSetup> setups_ ABSL_GUARDED_BY(mu_);
  absl::Status quiesce_error_ ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> unanswered_ ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> quiesce_timeouts_ ABSL_GUARDED_BY(mu_);
};

}  // namespace umpath::ublk
