#include "agent/export/ublk_control.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace umpath::ublk {

absl::StatusOr<std::unique_ptr<Control>> Control::Open(const std::string& path) {
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    if (e == ENOENT) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " does not exist: the kernel has no ublk (ublk_drv, Linux 6.0 "
                             "or later; modprobe ublk_drv)"));
    }
    return absl::FailedPreconditionError(absl::StrCat("open ", path, ": ", std::strerror(e)));
  }
  io_uring ring;
  const int r = io_uring_queue_init(4, &ring, IORING_SETUP_SQE128);
  if (r < 0) {
    close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat("io_uring with 128-byte entries: ", std::strerror(-r)));
  }
  return std::unique_ptr<Control>(new Control(fd, ring));
}

Control::~Control() {
  {
    MutexLock l(&mu_);
    io_uring_queue_exit(&ring_);
  }
  close(fd_);
}

void PrepareControlSqe(io_uring_sqe* sqe, int fd, const ControlCommand& c) {
  std::memset(sqe, 0, 2 * sizeof(*sqe));  // a 128-byte entry
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = fd;
  sqe->cmd_op = c.op;
  auto* cmd = reinterpret_cast<ublksrv_ctrl_cmd*>(sqe->cmd);
  cmd->dev_id = c.dev_id;
  cmd->queue_id = static_cast<uint16_t>(-1);
  cmd->addr = reinterpret_cast<uint64_t>(c.addr);
  cmd->len = static_cast<uint16_t>(c.len);
  cmd->data[0] = c.data0;
}

ControlCommand QuiesceCommand(uint32_t dev_id, uint32_t timeout_ms) {
  return {kCmdQuiesceDev, dev_id, nullptr, 0, std::max<uint64_t>(timeout_ms, 1)};
}

absl::Status QuiesceResult(uint32_t dev_id, uint32_t timeout_ms, int res) {
  if (res == -EBUSY) {
    return absl::DeadlineExceededError(
        absl::StrCat("ublk quiesce (device ", dev_id,
                     "): a queue had every request in service for ", timeout_ms, " ms"));
  }
  if (res == -EOPNOTSUPP || res == -EINVAL) {
    return absl::UnimplementedError(
        absl::StrCat("ublk quiesce (device ", dev_id, "): ", std::strerror(-res),
                     " (made without UBLK_F_QUIESCE, or before Linux 6.15)"));
  }
  return Control::Check("quiesce", dev_id, res);
}

int Control::Run(const ControlCommand& c) {
  MutexLock l(&mu_);
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) return -EBUSY;
  PrepareControlSqe(sqe, fd_, c);
  int r = io_uring_submit(&ring_);
  if (r < 0) return r;
  io_uring_cqe* cqe = nullptr;
  do {
    r = io_uring_wait_cqe(&ring_, &cqe);
  } while (r == -EINTR);
  if (r < 0) return r;
  const int res = cqe->res;
  io_uring_cqe_seen(&ring_, cqe);
  return res;
}

absl::Status Control::Check(const char* what, uint32_t dev_id, int res) {
  if (res >= 0) return absl::OkStatus();
  const std::string msg = absl::StrCat("ublk ", what, " (device ", dev_id, "): ", std::strerror(-res));
  switch (-res) {
    case ENODEV:
      return absl::NotFoundError(msg);
    case EEXIST:
      return absl::AlreadyExistsError(msg);
    case EBUSY:
      return absl::FailedPreconditionError(msg);
    case EPERM:
    case EACCES:
      return absl::PermissionDeniedError(msg);
    case EINVAL:
    case EOPNOTSUPP:
      return absl::InvalidArgumentError(msg);
    default:
      return absl::InternalError(msg);
  }
}

uint64_t Control::Features() {
  uint64_t features = 0;
  const int r = Run(kCmdGetFeatures, 0, &features, sizeof features, 0);
  return r < 0 ? 0 : features;
}

absl::StatusOr<ublksrv_ctrl_dev_info> Control::Add(const ublksrv_ctrl_dev_info& want) {
  ublksrv_ctrl_dev_info info = want;
  const int r = Run(kCmdAddDev, want.dev_id, &info, sizeof info, 0);
  if (absl::Status s = Check("add", want.dev_id, r); !s.ok()) return s;
  return info;
}

absl::Status Control::SetParams(uint32_t dev_id, const ublk_params& params) {
  ublk_params p = params;
  return Check("set parameters", dev_id, Run(kCmdSetParams, dev_id, &p, p.len, 0));
}

absl::StatusOr<ublk_params> Control::GetParams(uint32_t dev_id) {
  ublk_params p;
  std::memset(&p, 0, sizeof p);
  p.len = offsetof(ublk_params, discard) + sizeof(p.discard);
  const int r = Run(kCmdGetParams, dev_id, &p, p.len, 0);
  if (absl::Status s = Check("get parameters", dev_id, r); !s.ok()) return s;
  return p;
}

absl::Status Control::Start(uint32_t dev_id, pid_t pid) {
  return Check("start", dev_id, Run(kCmdStartDev, dev_id, nullptr, 0, static_cast<uint64_t>(pid)));
}

absl::Status Control::Stop(uint32_t dev_id) {
  return Check("stop", dev_id, Run(kCmdStopDev, dev_id, nullptr, 0, 0));
}

absl::Status Control::Delete(uint32_t dev_id) {
  return Check("delete", dev_id, Run(kCmdDelDev, dev_id, nullptr, 0, 0));
}

absl::Status Control::DeleteAsync(uint32_t dev_id) {
  return Check("delete", dev_id, Run(kCmdDelDevAsync, dev_id, nullptr, 0, 0));
}

absl::StatusOr<ublksrv_ctrl_dev_info> Control::Info(uint32_t dev_id) {
  ublksrv_ctrl_dev_info info;
  std::memset(&info, 0, sizeof info);
  const int r = Run(kCmdGetDevInfo, dev_id, &info, sizeof info, 0);
  if (absl::Status s = Check("get info", dev_id, r); !s.ok()) return s;
  return info;
}

absl::Status Control::StartRecovery(uint32_t dev_id) {
  return Check("start user recovery", dev_id, Run(kCmdStartUserRecovery, dev_id, nullptr, 0, 0));
}

absl::Status Control::EndRecovery(uint32_t dev_id, pid_t pid) {
  return Check("end user recovery", dev_id,
               Run(kCmdEndUserRecovery, dev_id, nullptr, 0, static_cast<uint64_t>(pid)));
}

absl::Status Control::Quiesce(uint32_t dev_id, uint32_t timeout_ms) {
  return QuiesceResult(dev_id, timeout_ms, Run(QuiesceCommand(dev_id, timeout_ms)));
}

}  // namespace umpath::ublk
