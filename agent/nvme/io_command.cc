#include "agent/nvme/io_command.h"

namespace umpath::nvme {

Status EncodeIo(const IoCommand& in, uint32_t max_transfer, IoCommandWords* out) {
  *out = IoCommandWords{};
  out->opcode = static_cast<uint8_t>(in.opcode);
  out->nsid = in.nsid;
  const Status invalid = Status::Make(status_code::kInvalidField, /*dnr=*/true);
  switch (in.opcode) {
    case IoOpcode::kFlush:
      return Status{};
    case IoOpcode::kWriteZeroes:
      if (in.blocks == 0 || in.blocks > 0x10000) return invalid;
      out->cdw10 = static_cast<uint32_t>(in.slba);
      out->cdw11 = static_cast<uint32_t>(in.slba >> 32);
      out->cdw12 = in.blocks - 1;  // NLB, 0-based
      return Status{};
    case IoOpcode::kDatasetManagement:
      // Deallocate; the ranges (16 bytes each) are the data.
      if (in.blocks == 0 || in.blocks > 256 || !in.has_data || in.data_len != in.blocks * 16u) {
        return invalid;
      }
      out->cdw10 = in.blocks - 1;  // NR, 0-based
      out->cdw11 = 1u << 2;        // AD: deallocate
      return Status{};
    case IoOpcode::kRead:
    case IoOpcode::kWrite:
      if (in.blocks == 0 || in.blocks > 0x10000 || !in.has_data || in.data_len == 0 ||
          (max_transfer != 0 && in.data_len > max_transfer)) {
        return invalid;
      }
      out->cdw10 = static_cast<uint32_t>(in.slba);
      out->cdw11 = static_cast<uint32_t>(in.slba >> 32);
      out->cdw12 = (in.blocks - 1) | (in.fua ? 1u << 30 : 0);  // NLB; FUA
      return Status{};
  }
  return Status::Make(status_code::kInvalidOpcode, /*dnr=*/true);
}

}  // namespace umpath::nvme
