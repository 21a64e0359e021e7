#include "agent/export/ublk_io.h"

#include <cerrno>
#include <cstring>

#include "agent/nvme/status.h"

namespace umpath::ublk {

namespace {

constexpr uint32_t kSector = 512;
// NVMe Write Zeroes and a Dataset Management range carry a 16-bit / 32-bit block count;
// the device's limits keep requests at or under 65536 blocks.
constexpr uint32_t kMaxBlocksPerCommand = 0x10000;

uint32_t Log2(uint32_t v) {
  uint32_t s = 0;
  while ((1u << (s + 1)) <= v) ++s;
  return s;
}

}  // namespace

uint64_t DataFlagsFor(uint64_t features, DataWant want) {
  if ((features & kFlagNeedGetData) == 0) return 0;
  const uint64_t zero_copy = kFlagAutoBufReg | kFlagUserCopy;
  if (want.zero_copy && (features & zero_copy) == zero_copy) return zero_copy;
  if (want.user_copy && (features & kFlagUserCopy) != 0) return kFlagUserCopy;
  return kFlagNeedGetData;
}

DataMode DataModeOf(uint64_t device_flags) {
  // The driver clears NEED_GET_DATA when USER_COPY is set; look at USER_COPY first all
  // the same.
  if ((device_flags & kFlagAutoBufReg) && (device_flags & kFlagUserCopy)) return DataMode::kZeroCopy;
  if (device_flags & kFlagUserCopy) return DataMode::kUserCopy;
  if (device_flags & kFlagNeedGetData) return DataMode::kGetData;
  return DataMode::kTagBuffers;
}

void PrepIoCommand(io_uring_sqe* sqe, int cdev_fd, uint32_t op, uint16_t q_id, uint16_t tag,
                   int32_t result, uint64_t buffer, bool auto_buf_reg) {
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = cdev_fd;
  sqe->cmd_op = op;
  sqe->user_data = tag;
  auto* cmd = reinterpret_cast<ublksrv_io_cmd*>(sqe->cmd);
  cmd->q_id = q_id;
  cmd->tag = tag;
  cmd->result = result;
  cmd->addr = auto_buf_reg ? 0 : buffer;
  if (auto_buf_reg) sqe->addr = AutoBufRegAddr(tag, kAutoBufRegFallback);
}

int Translate(const ublksrv_io_desc& iod, const IoShape& shape, void* buffer, IoRequest* req) {
  const uint8_t op = iod.op_flags & 0xff;
  const uint64_t bytes = uint64_t{iod.nr_sectors} * kSector;
  const uint64_t offset = iod.start_sector * kSector;
  req->flags = 0;
  req->data = nullptr;
  req->data_len = 0;
  req->slba = 0;
  req->blocks = 0;
  if (op == kOpFlush) {
    req->opcode = nvme::IoOpcode::kFlush;
    return 0;
  }
  if (op != kOpRead && op != kOpWrite && op != kOpWriteZeroes && op != kOpDiscard) {
    return -EOPNOTSUPP;
  }
  if ((op == kOpWriteZeroes && !shape.write_zeroes) || (op == kOpDiscard && !shape.deallocate)) {
    return -EOPNOTSUPP;
  }
  if (bytes == 0 || shape.block_size == 0 || bytes % shape.block_size != 0 ||
      offset % shape.block_size != 0) {
    return -EINVAL;
  }
  const uint64_t blocks = bytes / shape.block_size;
  req->slba = offset / shape.block_size;
  switch (op) {
    case kOpRead:
    case kOpWrite:
      if (bytes > shape.buffer_bytes) return -EINVAL;
      req->opcode = op == kOpRead ? nvme::IoOpcode::kRead : nvme::IoOpcode::kWrite;
      req->blocks = static_cast<uint32_t>(blocks);
      req->data = buffer;
      req->data_len = static_cast<uint32_t>(bytes);
      if (iod.op_flags & kIoFlagFua) req->flags |= kIoFua;
      return 0;
    case kOpWriteZeroes:
      if (blocks > kMaxBlocksPerCommand) return -EINVAL;
      req->opcode = nvme::IoOpcode::kWriteZeroes;
      req->blocks = static_cast<uint32_t>(blocks);
      return 0;
    case kOpDiscard: {
      if (blocks > kMaxBlocksPerCommand || shape.buffer_bytes < 16) return -EINVAL;
      // One deallocate range in the tag's buffer: attributes 0, length, starting LBA.
      uint8_t range[16] = {};
      const uint32_t nlb = static_cast<uint32_t>(blocks);
      std::memcpy(range + 4, &nlb, 4);
      std::memcpy(range + 8, &req->slba, 8);
      std::memcpy(buffer, range, sizeof range);
      req->opcode = nvme::IoOpcode::kDatasetManagement;
      req->blocks = 1;  // ranges
      req->data = buffer;
      req->data_len = 16;
      return 0;
    }
  }
  return -EOPNOTSUPP;
}

int ResultFor(const ublksrv_io_desc& iod, const IoResult& result) {
  const uint8_t op = iod.op_flags & 0xff;
  switch (result.error) {
    case IoError::kNone:
      return (op == kOpRead || op == kOpWrite) ? static_cast<int>(iod.nr_sectors * kSector) : 0;
    case IoError::kNoPath:
    case IoError::kFastFail:
      return -ENOLINK;  // BLK_STS_TRANSPORT
    case IoError::kHeadRemoved:
    case IoError::kShutdown:
      return -EIO;
    case IoError::kNvme:
      break;
  }
  const nvme::Status& s = result.status;
  if (s.code() == nvme::status_code::kInvalidOpcode) return -EOPNOTSUPP;
  if (s.code() == nvme::status_code::kCapacityExceeded) return -ENOSPC;
  if (s.sct() == 2) return -ENODATA;  // media and data integrity errors: BLK_STS_MEDIUM
  return -EIO;
}

ublk_params ParamsFor(const DeviceShape& shape) {
  ublk_params p;
  std::memset(&p, 0, sizeof p);
  p.len = offsetof(ublk_params, discard) + sizeof(p.discard);
  p.types = kParamBasic;
  const uint32_t shift = Log2(shape.block_size);
  p.basic.logical_bs_shift = static_cast<uint8_t>(shift);
  p.basic.physical_bs_shift = static_cast<uint8_t>(shift);
  p.basic.io_min_shift = static_cast<uint8_t>(shift);
  p.basic.io_opt_shift = static_cast<uint8_t>(shift);
  p.basic.max_sectors = shape.max_io_bytes / kSector;
  p.basic.dev_sectors = shape.size_blocks * (shape.block_size / kSector);
  if (shape.volatile_write_cache) {
    p.basic.attrs |= UBLK_ATTR_VOLATILE_CACHE | UBLK_ATTR_FUA;
  }
  if (shape.write_zeroes || shape.deallocate) {
    const uint32_t max_sectors = kMaxBlocksPerCommand * (shape.block_size / kSector);
    p.types |= kParamDiscard;
    p.discard.discard_granularity = shape.block_size;
    if (shape.deallocate) {
      p.discard.max_discard_sectors = max_sectors;
      p.discard.max_discard_segments = 1;
    }
    if (shape.write_zeroes) p.discard.max_write_zeroes_sectors = max_sectors;
  }
  return p;
}

bool HasUblkCancelRace(const std::string& release) {
  int v[3] = {0, 0, 0};
  size_t i = 0;
  for (int part = 0; part < 3; ++part) {
    if (i >= release.size() || release[i] < '0' || release[i] > '9') {
      if (part < 2) return false;  // at least major.minor
      break;
    }
    while (i < release.size() && release[i] >= '0' && release[i] <= '9' && v[part] < 100000) {
      v[part] = v[part] * 10 + (release[i++] - '0');
    }
    if (i < release.size() && release[i] == '.') {
      ++i;
    } else {
      break;
    }
  }
  const int major = v[0], minor = v[1], patch = v[2];
  if (major != 6 || minor < 7 || minor >= 15) return false;
  if (minor == 14) return patch < 6;
  if (minor == 12) return patch < 114;
  return true;
}

}  // namespace umpath::ublk
