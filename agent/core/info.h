#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "agent/core/head_io_stats.h"
#include "agent/core/types.h"
#include "agent/nvme/wire.h"

namespace umpath {

// Plain values the control API returns; nothing in them points into the core.

struct PathCounters {
  uint64_t submitted = 0;
  uint64_t completed = 0;
  uint64_t errors = 0;
  uint64_t failovers = 0;
  uint64_t retries = 0;
  uint64_t bytes = 0;
  int64_t in_flight = 0;
  // Latency of the `completed` commands: how many took at most 1 ms, at most 10 ms
  // (cumulative), and the sum.
  uint64_t latency_le_1ms = 0;
  uint64_t latency_le_10ms = 0;
  uint64_t latency_ns_sum = 0;
  uint16_t last_error_status = 0;  // status field of the last error on any worker; 0: none
};

struct PathInfo {
  std::string name;  // the controller's name: a head has one path per controller
  std::string head;
  std::string controller;
  ControllerState controller_state = ControllerState::kNew;
  uint32_t nsid = 0;
  uint32_t ana_group_id = 0;
  nvme::AnaState ana_state = nvme::AnaState::kOptimized;
  bool ana_pending = false;
  bool ready = false;
  bool admin_failed = false;
  bool usable = false;
  bool selectable = false;
  int numa_node = -1;
  PathCounters counters;
};

// What every path of a head can do (the most restrictive of them).
struct HeadLimits {
  uint32_t max_transfer_bytes = 0;  // 0: no limit known
  bool write_zeroes = false;
  bool deallocate = false;
  bool volatile_write_cache = false;  // any path's controller has one
};

// What names an exported block device for good: /dev/ublkbN numbers are handed to the
// next device once one goes, so a CSI driver holds the dev_t with the kernel's diskseq
// (never reused until a reboot), or the link named after the head.
struct BlockDeviceIds {
  uint32_t major = 0;
  uint32_t minor = 0;
  uint64_t diskseq = 0;    // 0: the kernel does not report one (before 5.15)
  std::string by_id_link;  // /dev/disk/by-id/umpath-<head>; empty: no link kept
  bool operator==(const BlockDeviceIds&) const = default;
};

// A head's block device as the frontend answers an export.
struct ExportedDevice {
  std::string path;  // /dev/ublkbN
  BlockDeviceIds ids;
};

struct HeadInfo {
  std::string name;
  uint64_t uid = 0;  // differs between two heads of the same identity over time
  std::string subsys_nqn;
  uint32_t nsid = 0;
  std::string nguid, eui64, uuid;  // empty when not reported
  uint64_t size_blocks = 0;
  uint32_t block_size = 0;
  IoPolicy policy = IoPolicy::kNuma;
  uint32_t delayed_removal_secs = 0;
  uint32_t io_fail_timeout_secs = 0;
  // SEMANTICS "Fast fail": no usable path for io_fail_timeout_secs; I/O fails at once.
  bool failing_fast = false;
  bool removal_pending = false;
  int64_t removal_deadline_wall_nanos = 0;  // 0 unless removal_pending
  int64_t created_wall_nanos = 0;
  uint32_t live_paths = 0;  // controller LIVE
  uint32_t selectable_paths = 0;
  uint64_t waiting_ios = 0;
  HeadLimits limits;
  std::string export_device;  // empty when not exported
  BlockDeviceIds export_ids;  // zero when not exported
  // A label the caller set (a PersistentVolume's name, say) to join the head with it;
  // empty when none.
  std::string volume;
  // What the application saw (head_io_stats.h), and how long the head has had no
  // selectable path over its life, the outage under way included.
  HeadIoCounters io;
  int64_t no_path_nanos = 0;
  std::vector<PathInfo> paths;
};

struct ControllerInfo {
  std::string name;
  std::string subsys_nqn;
  std::string transport;
  std::string address;
  ControllerState state = ControllerState::kNew;
  int numa_node = -1;
  bool ana_supported = false;
  uint32_t anagrpmax = 0;
  uint8_t anatt_secs = 0;
  bool anatt_timer_armed = false;
  std::vector<std::string> heads;  // heads it has a path in
  uint32_t cqt_ms = 0;             // Command Quiesce Time it reports
  // SEMANTICS "Fencing": commands handed back for failover only after the controller was
  // fenced (and CQT passed), and completions dropped because their identifier was not
  // in flight or belonged to an earlier use of it.
  uint64_t fenced_ios = 0;
  uint64_t stray_completions = 0;
};

// The block devices' I/O buffers, pinned for DMA (see ublk::PinnedMemory).
struct BufferBudgetInfo {
  uint64_t pinned_bytes = 0;   // made so far
  uint64_t budget_bytes = 0;   // --max_pinned_mib
  uint32_t buffer_bytes = 0;
  uint32_t exportable_heads = 0;  // more heads that can be exported within the budget
};

// Settings a head starts with instead of the node defaults (persisted ones, say).
struct HeadSettings {
  std::optional<IoPolicy> policy;
  std::optional<uint32_t> delayed_removal_secs;
  std::optional<uint32_t> io_fail_timeout_secs;
  // Exported as a block device as it appears (the exporter's; the core ignores it).
  std::optional<bool> export_wanted;
  // HeadInfo::volume (ValidateVolume); empty: none.
  std::optional<std::string> volume;
};

struct Defaults {
  IoPolicy policy = IoPolicy::kNuma;
  uint32_t delayed_removal_secs = 0;
  uint32_t io_fail_timeout_secs = 0;
};

}  // namespace umpath
