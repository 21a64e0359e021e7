// The exporter's devices that outlive the agent: each device's record (which head it
// serves), the devices an earlier run left, and their take-over or removal.
#include "agent/export/exporter.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "agent/base/files.h"

namespace umpath::ublk {

namespace fs = std::filesystem;

// Written whole (a temporary file, fsynced, renamed) and the directory fsynced: after
// a crash or a power cut the record is there, or it is not; never half of it.
absl::Status Exporter::WriteRecord(const Device& d) const {
  absl::Status s = WriteFileAtomically(absl::StrCat(options_.state_dir, "/", d.dev_id),
                                       absl::StrCat("head=", d.head, "\n"));
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat("recording device ", d.dev_id, " in ", options_.state_dir,
                                             ": ", s.message()));
}

void Exporter::EraseRecord(uint32_t dev_id) const {
  std::error_code ec;
  fs::remove(fs::path(options_.state_dir) / std::to_string(dev_id), ec);
}

// At Create, on the caller's thread.
void Exporter::FindLeftovers() {
  // The links a device left by the last run still backs: kept (and repaired).
  absl::flat_hash_map<std::string, std::string> linked;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(options_.state_dir, ec)) {
    uint32_t dev_id;
    if (!absl::SimpleAtoi(e.path().filename().string(), &dev_id)) continue;
    const std::string line = FirstLine(e.path());
    absl::string_view head_view = line;
    if (!absl::ConsumePrefix(&head_view, "head=") || head_view.empty()) {
      Log(absl::StrCat("ublk: ", e.path().string(), ": not a device record; ignored"));
      continue;
    }
    const std::string head(head_view);
    absl::StatusOr<ublksrv_ctrl_dev_info> info = driver_->Info(dev_id);
    if (!info.ok()) {
      // Gone already (the kernel removed it, or a reboot): forget it.
      EraseRecord(dev_id);
      continue;
    }
    if (driver_->ServedByAnother(*info)) {
      Log(absl::StrCat("ublk: device ", dev_id, " of head ", head, " is served by running pid ",
                       info->ublksrv_pid, "; left alone"));
      linked[head] = absl::StrCat("/dev/ublkb", dev_id);
      continue;
    }
    int64_t wait_secs = options_.recover_wait_secs;
    if (options_.head_delayed_removal_secs) {
      wait_secs = std::max(wait_secs, options_.head_delayed_removal_secs(head));
    }
    Leftover lo{dev_id, head, Now() + wait_secs * kNanosPerSecond, wait_secs, ""};
    if (!(info->flags & kFlagUserRecovery)) {
      // No recovery: the kernel stopped it when its agent went; only removal is left.
      RemoveLeftoverDevice(dev_id, head);
      LeftoverRemoved(lo, "it was made without user recovery");
      continue;
    }
    if (info->state == kStateDead) {
      // Its agent went between recording it and starting it: no disk, nothing waits.
      RemoveLeftoverDevice(dev_id, head);
      LeftoverRemoved(lo, "it was never started");
      continue;
    }
    Log(absl::StrCat("ublk: device ", dev_id, " of head ", head, " left by pid ", info->ublksrv_pid,
                     " (state ", info->state, "); taken over when the head appears, or removed in ",
                     wait_secs, " s"));
    linked[head] = absl::StrCat("/dev/ublkb", dev_id);
    leftovers_.push_back(std::move(lo));
  }
  links_.Sweep(linked);
}

void Exporter::BeginRemoveLeftover(size_t i, std::string why) {
  const uint32_t dev_id = leftovers_[i].dev_id;
  Offload([this, dev_id, head = leftovers_[i].head, why = std::move(why)]() -> Then {
    RemoveLeftoverDevice(dev_id, head);
    return [this, dev_id, why] {
      for (size_t j = 0; j < leftovers_.size(); ++j) {
        if (leftovers_[j].dev_id != dev_id) continue;
        LeftoverRemoved(leftovers_[j], why);
        leftovers_.erase(leftovers_.begin() + j);
        return;
      }
    };
  });
}

// Offload thread (or Create's, or Shutdown's).
void Exporter::RemoveLeftoverDevice(uint32_t dev_id, const std::string& head, Deletion deletion) {
  links_.Unlink(head, absl::StrCat("/dev/ublkb", dev_id));
  if (absl::Status s = driver_->Stop(dev_id); !s.ok() && !absl::IsNotFound(s)) {
    Log(std::string(s.message()));
  }
  absl::Status s = deletion == Deletion::kWait ? driver_->Delete(dev_id) : driver_->DeleteNoWait(dev_id);
  if (!s.ok() && !absl::IsNotFound(s)) {
    Log(std::string(s.message()));
  }
  EraseRecord(dev_id);
}

// The end of a device the core never knew as exported is news too: an event on its
// head's name (the head may not exist).
void Exporter::LeftoverRemoved(const Leftover& l, const std::string& why) {
  const std::string what = absl::StrCat("/dev/ublkb", l.dev_id, " removed: ", why);
  Log(absl::StrCat("ublk: ", what, " (head ", l.head, ")"));
  if (absl::Status s = mp_->SetHeadExport(l.head, 0, "", what); !s.ok() && !absl::IsNotFound(s)) {
    Log(absl::StrCat("ublk: ", s.message()));
  }
}

void Exporter::BeginRecover(size_t i, const HeadInfo& head) {
  const Leftover l = leftovers_[i];
  busy_dev_ = std::make_unique<Device>();
  busy_dev_->dev_id = l.dev_id;
  busy_dev_->head = head.name;
  busy_dev_->head_uid = head.uid;
  busy_dev_->bdev = absl::StrCat("/dev/ublkb", l.dev_id);
  Offload([this, d = busy_dev_.get(), head]() -> Then {
    bool other_disk = false;
    pid_t old_pid = 0;
    absl::Status s = TakeOver(d, head, &other_disk, &old_pid);
    return [this, s, other_disk, old_pid] {
      std::unique_ptr<Device> dev = std::move(busy_dev_);
      const size_t j = FindLeftover(dev->head);
      if (s.ok()) {
        if (j < leftovers_.size()) leftovers_.erase(leftovers_.begin() + j);
        Log(absl::StrCat("ublk: ", dev->bdev, " of head ", dev->head, " taken over from pid ", old_pid));
        const std::string name = dev->head, bdev = dev->bdev;
        const uint64_t uid = dev->head_uid;
        const BlockDeviceIds ids = dev->ids;
        devices_[name] = std::move(dev);
        auto_exported_.insert(uid);
        if (absl::Status e =
                mp_->SetHeadExport(name, uid, bdev, "taken over from the agent's last run", ids);
            !e.ok()) {
          Log(absl::StrCat("ublk: ", e.message()));
        }
        return;
      }
      if (j == leftovers_.size()) return;
      Leftover& lo = leftovers_[j];
      if (std::string(s.message()) != lo.last_problem) {
        lo.last_problem = std::string(s.message());
        Log(absl::StrCat("ublk: device ", lo.dev_id, " of head ", lo.head, ": recovery: ", s.message()));
      }
      if (other_disk) {
        lo.deadline = 0;  // removed at once
        plan_.push_front({Action::kRemoveLeftover, lo.head});
      }
    };
  });
}

// Offload thread.
absl::Status Exporter::TakeOver(Device* d, const HeadInfo& head, bool* other_disk, pid_t* old_pid) {
  absl::StatusOr<ublksrv_ctrl_dev_info> info = driver_->Info(d->dev_id);
  if (!info.ok()) return info.status();
  *old_pid = info->ublksrv_pid;
  if (info->state != kStateQuiesced) {
    return absl::UnavailableError(absl::StrCat("the device is in state ", info->state,
                                               ", not yet quiesced after its agent left"));
  }
  if (info->nr_hw_queues > options_.workers.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("it has ", info->nr_hw_queues, " queues and this agent ",
                     options_.workers.size(), " workers"));
  }
  // The device keeps the capacity and block size it was made with: a head that came
  // back different is not the same disk, and the device cannot be taken over.
  absl::StatusOr<ublk_params> params = driver_->GetParams(d->dev_id);
  if (!params.ok()) return params.status();
  const uint64_t sectors = head.size_blocks * (head.block_size / 512);
  if (params->basic.dev_sectors != sectors ||
      (1u << params->basic.logical_bs_shift) != head.block_size) {
    *other_disk = true;
    return absl::FailedPreconditionError(absl::StrCat(
        "the device has ", params->basic.dev_sectors, " sectors of ",
        1u << params->basic.logical_bs_shift, " B and the head ", sectors, " of ",
        head.block_size, " B"));
  }
  // The old agent's files must be closed (EBUSY until its exit completes).
  if (absl::Status s = driver_->StartRecovery(d->dev_id); !s.ok()) return s;
  QueueSetup setup = SetupFor(head, *info);
  setup.beyond_budget = true;  // refusing it would fail the I/O it holds
  if (absl::Status s = driver_->OpenQueues(d->dev_id, setup); !s.ok()) return s;
  // Unquiesces the disk: what waited in the kernel (and what the old agent had taken,
  // reissued) now reaches this agent's queues.
  if (absl::Status s = driver_->EndRecovery(d->dev_id); !s.ok()) {
    driver_->CloseQueues(d->dev_id);
    return s;
  }
  d->added = true;
  // One made by an agent (or on a kernel) without QUIESCE_DEV is handed over by holding.
  d->quiesce = quiesce_ && (info->flags & kFlagQuiesce) != 0;
  Identify(d);
  return absl::OkStatus();
}

}  // namespace umpath::ublk
