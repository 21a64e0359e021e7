#pragma once

// The command dwords of an NVM I/O command (NVMe NVM Command Set 1.0: Read, Write,
// Flush, Write Zeroes, Dataset Management), written once for every transport: the vfio
// queue pair adds PRPs, io_uring passthrough an address and length.

#include <cstdint>

#include "agent/nvme/status.h"
#include "agent/nvme/wire.h"

namespace umpath::nvme {

struct IoCommand {
  IoOpcode opcode = IoOpcode::kRead;
  uint32_t nsid = 0;
  uint64_t slba = 0;
  uint32_t blocks = 0;      // for Dataset Management: the number of ranges
  uint32_t data_len = 0;    // bytes
  bool has_data = false;    // a buffer is given
  bool fua = false;
};

struct IoCommandWords {
  uint8_t opcode = 0;
  uint32_t nsid = 0;
  uint32_t cdw10 = 0, cdw11 = 0, cdw12 = 0;
};

// Success, or the status the command fails with before it reaches a device (DNR set):
// Invalid Opcode for an opcode this agent does not send, Invalid Field for no blocks,
// more than a command carries (65536 blocks, 256 ranges), a missing or mis-sized buffer,
// or more than `max_transfer` bytes (0: no limit).
Status EncodeIo(const IoCommand& in, uint32_t max_transfer, IoCommandWords* out);

}  // namespace umpath::nvme
