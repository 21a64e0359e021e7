#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include <liburing.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/base/mutex.h"
#include "agent/export/ublk_abi.h"

namespace umpath::ublk {

// One control command as the driver reads it from a 128-byte SQE: what Control::Run
// sends (a seam for tests; the command's bytes are the kernel's ABI).
struct ControlCommand {
  uint32_t op = 0;
  uint32_t dev_id = 0;
  void* addr = nullptr;
  uint32_t len = 0;
  uint64_t data0 = 0;
};
// QUIESCE_DEV of `dev_id`, waiting at most `timeout_ms` (at least 1: the kernel reads 0
// as for ever).
ControlCommand QuiesceCommand(uint32_t dev_id, uint32_t timeout_ms);
// Fills the two halves of a 128-byte SQE for `cmd` on the control device `fd`.
void PrepareControlSqe(io_uring_sqe* sqe, int fd, const ControlCommand& cmd);
// What QUIESCE_DEV's result means: DEADLINE_EXCEEDED when a queue had no idle tag for
// the whole wait (EBUSY), UNIMPLEMENTED when the device was made without kFlagQuiesce or
// the kernel has no such command (EOPNOTSUPP, EINVAL), the usual mapping otherwise.
absl::Status QuiesceResult(uint32_t dev_id, uint32_t timeout_ms, int res);

// The ublk driver's control device, /dev/ublk-control: one io_uring of 128-byte SQEs,
// one command at a time, each waited for. Errors name the command and the errno.
//
// Threading: thread-safe (commands are serialized); START_DEV and END_USER_RECOVERY
// block until every queue of the device has fetched its requests, and STOP_DEV until
// the disk is gone, so the workers must keep running meanwhile.
class Control {
 public:
  static absl::StatusOr<std::unique_ptr<Control>> Open(const std::string& path = "/dev/ublk-control");
  ~Control();

  // UBLK_F_* the driver offers; 0 where GET_FEATURES is unknown (before 6.5).
  uint64_t Features();
  absl::StatusOr<ublksrv_ctrl_dev_info> Add(const ublksrv_ctrl_dev_info& want);
  absl::Status SetParams(uint32_t dev_id, const ublk_params& params);
  absl::StatusOr<ublk_params> GetParams(uint32_t dev_id);
  absl::Status Start(uint32_t dev_id, pid_t pid);
  absl::Status Stop(uint32_t dev_id);
  absl::Status Delete(uint32_t dev_id);
  absl::Status DeleteAsync(uint32_t dev_id);  // INVALID_ARGUMENT or INTERNAL before 6.9
  // NOT_FOUND when there is no such device.
  absl::StatusOr<ublksrv_ctrl_dev_info> Info(uint32_t dev_id);
  absl::Status StartRecovery(uint32_t dev_id);
  absl::Status EndRecovery(uint32_t dev_id, pid_t pid);
  // QUIESCE_DEV (Linux 6.15, a device made with kFlagQuiesce): from now on the kernel
  // keeps new requests to itself (requeued, for the next server) instead of handing them
  // to the queues; returns once every queue has a tag with no request (at most
  // `timeout_ms`), and then ends each such tag's fetch (UBLK_IO_RES_ABORT). The requests
  // the queues already have are theirs to answer. See QuiesceResult for the errors.
  absl::Status Quiesce(uint32_t dev_id, uint32_t timeout_ms);

  // A command's result as a status naming the command and the errno.
  static absl::Status Check(const char* what, uint32_t dev_id, int res);

 private:
  Control(int fd, const io_uring& ring) : fd_(fd), ring_(ring) {}
  // The command's result: 0 or more, or -errno.
  int Run(uint32_t op, uint32_t dev_id, void* addr, uint32_t len, uint64_t data0) {
    return Run({op, dev_id, addr, len, data0});
  }
  int Run(const ControlCommand& cmd);

  const int fd_;
  Mutex mu_;
  io_uring ring_ ABSL_GUARDED_BY(mu_);
};

}  // namespace umpath::ublk
