#pragma once

// The ublk driver's user ABI as of Linux 6.12 (include/uapi/linux/ublk_cmd.h). Debian
// 12's headers are from 6.1, before the ioctl-encoded commands; the structures there are
// the same and come from that header, the rest is spelled out here.

#include <linux/ublk_cmd.h>
#include <sys/ioctl.h>

#include <cstddef>
#include <cstdint>

namespace umpath::ublk {

// Control commands, on /dev/ublk-control through IORING_OP_URING_CMD with 128-byte SQEs.
inline constexpr uint32_t kCmdGetDevInfo = _IOR('u', 0x02, struct ublksrv_ctrl_cmd);
inline constexpr uint32_t kCmdAddDev = _IOWR('u', 0x04, struct ublksrv_ctrl_cmd);
inline constexpr uint32_t kCmdDelDev = _IOWR('u', 0x05, struct ublksrv_ctrl_cmd);
inline constexpr uint32_t kCmdStartDev = _IOWR('u', 0x06, struct ublksrv_ctrl_cmd);
inline constexpr uint32_t kCmdStopDev = _IOWR('u', 0x07, struct ublksrv_ctrl_cmd);
inline constexpr uint32_t kCmdSetParams = _IOWR('u', 0x08, struct ublksrv_ctrl_cmd);
inline constexpr uint32_t kCmdGetParams = _IOR('u', 0x09, struct ublksrv_ctrl_cmd);
inline constexpr uint32_t kCmdStartUserRecovery = _IOWR('u', 0x10, struct ublksrv_ctrl_cmd);
inline constexpr uint32_t kCmdEndUserRecovery = _IOWR('u', 0x11, struct ublksrv_ctrl_cmd);
inline constexpr uint32_t kCmdGetFeatures = _IOR('u', 0x13, struct ublksrv_ctrl_cmd);
// Linux 6.9: DEL_DEV without waiting for the device's last user to let go of it.
inline constexpr uint32_t kCmdDelDevAsync = _IOR('u', 0x14, struct ublksrv_ctrl_cmd);

// I/O commands, on /dev/ublkcN, 64-byte SQEs.
inline constexpr uint32_t kIoFetchReq = _IOWR('u', 0x20, struct ublksrv_io_cmd);
inline constexpr uint32_t kIoCommitAndFetchReq = _IOWR('u', 0x21, struct ublksrv_io_cmd);
inline constexpr uint32_t kIoNeedGetData = _IOWR('u', 0x22, struct ublksrv_io_cmd);

// Device flags (ublksrv_ctrl_dev_info::flags) and features.
// Writes' data is copied when the server asks (kIoNeedGetData), reads' at the commit:
// a buffer is needed only while a request is served (Linux 6.0).
inline constexpr uint64_t kFlagNeedGetData = 1ull << 2;
inline constexpr uint64_t kFlagUserRecovery = 1ull << 3;
inline constexpr uint64_t kFlagUserRecoveryReissue = 1ull << 4;
inline constexpr uint64_t kFlagCmdIoctlEncode = 1ull << 6;

// Device states.
inline constexpr uint16_t kStateDead = 0;
inline constexpr uint16_t kStateLive = 1;
inline constexpr uint16_t kStateQuiesced = 2;

// Operations in ublksrv_io_desc::op_flags (low 8 bits), and flags above them.
inline constexpr uint8_t kOpRead = 0;
inline constexpr uint8_t kOpWrite = 1;
inline constexpr uint8_t kOpFlush = 2;
inline constexpr uint8_t kOpDiscard = 3;
inline constexpr uint8_t kOpWriteSame = 4;
inline constexpr uint8_t kOpWriteZeroes = 5;
inline constexpr uint32_t kIoFlagFua = 1u << 13;
inline constexpr uint32_t kIoFlagNoUnmap = 1u << 15;

// Parameter types.
inline constexpr uint32_t kParamBasic = 1u << 0;
inline constexpr uint32_t kParamDiscard = 1u << 1;

inline constexpr uint32_t kMaxQueueDepth = 4096;
// The I/O descriptors of queue q are mapped at q * this offset of /dev/ublkcN.
inline constexpr size_t kMaxCmdBufBytes =
    ((kMaxQueueDepth * sizeof(ublksrv_io_desc)) + 4095) & ~size_t{4095};

// Linux 6.5: the server copies a request's data itself, pread/pwrite on /dev/ublkcN at
// UserCopyOffset(q, tag); the driver copies nothing and ignores the commands' addr.
inline constexpr uint64_t kFlagUserCopy = 1ull << 7;
// Linux 6.15/6.16: the request's pages become a fixed buffer of the io_uring that fetched
// it (SUPPORT_ZERO_COPY by UBLK_U_IO_REGISTER_IO_BUF, AUTO_BUF_REG by itself at the index
// the FETCH/COMMIT_AND_FETCH names in its addr, dropped again at the commit).
inline constexpr uint64_t kFlagSupportZeroCopy = 1ull << 0;
inline constexpr uint64_t kFlagAutoBufReg = 1ull << 11;
// AUTO_BUF_REG's sqe addr: bits 0..15 the buffer index, 16..23 flags, the rest zero.
inline constexpr uint8_t kAutoBufRegFallback = 1u << 0;
// Set in a descriptor whose registration failed (with kAutoBufRegFallback).
inline constexpr uint32_t kIoFlagNeedRegBuf = 1u << 17;
// pread/pwrite positions on /dev/ublkcN (USER_COPY): queue and tag above the buffer.
inline constexpr uint64_t kUserCopyBase = 0x80000000ull;
inline constexpr int kUserCopyTagShift = 25;
inline constexpr int kUserCopyQueueShift = 41;
inline constexpr uint64_t UserCopyOffset(uint16_t q_id, uint16_t tag) {
  return kUserCopyBase + (uint64_t{q_id} << kUserCopyQueueShift) + (uint64_t{tag} << kUserCopyTagShift);
}
inline constexpr uint64_t AutoBufRegAddr(uint16_t index, uint8_t flags) {
  return uint64_t{index} | uint64_t{flags} << 16;
}

static_assert(sizeof(ublksrv_ctrl_cmd) == 32);
static_assert(sizeof(ublksrv_io_cmd) == 16);
static_assert(sizeof(ublksrv_io_desc) == 24);
static_assert(sizeof(ublksrv_ctrl_dev_info) == 64);
static_assert(offsetof(ublk_params, basic) == 8);
static_assert(offsetof(ublk_params, discard) == 40);

// Linux 6.15: a hand-over stop. QUIESCE_DEV (data[0]: how long it may wait, in ms; 0
// waits for ever) needs the device made with kFlagQuiesce (and user recovery). Newer
// kernels (the lab's 6.18) set kFlagPerIoDaemon on every device they make: a tag's
// commands must come from the task that fetched that tag, not from one task per queue.
inline constexpr uint32_t kCmdQuiesceDev = _IOWR('u', 0x16, struct ublksrv_ctrl_cmd);
inline constexpr uint64_t kFlagQuiesce = 1ull << 12;
inline constexpr uint64_t kFlagPerIoDaemon = 1ull << 13;

}  // namespace umpath::ublk
