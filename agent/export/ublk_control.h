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

 private:
  Control(int fd, const io_uring& ring) : fd_(fd), ring_(ring) {}
  // The command's result: 0 or more, or -errno.
  int Run(uint32_t op, uint32_t dev_id, void* addr, uint32_t len, uint64_t data0);
  absl::Status Check(const char* what, uint32_t dev_id, int res);

  const int fd_;
  Mutex mu_;
  io_uring ring_ ABSL_GUARDED_BY(mu_);
};

}  // namespace umpath::ublk
