#pragma once

// Translation between ublk's I/O descriptors and the multipath core's requests: pure
// functions, so the rules are tested without a kernel.

#include <liburing.h>

#include <cstdint>
#include <string>

#include "agent/core/io_request.h"
#include "agent/export/ublk_abi.h"

namespace umpath::ublk {

// What a queue's requests may carry; fixed when the device is made.
struct IoShape {
  uint32_t block_size = 512;    // the head's logical block size
  uint32_t buffer_bytes = 0;    // each tag's buffer (the device's largest I/O)
  bool write_zeroes = false;
  bool deallocate = false;
};

// How a device's request data reaches the agent's buffers, fixed when it is made (its
// flags say which, so a device taken over is served the way it was made).
enum class DataMode : uint8_t {
  kTagBuffers,  // before NEED_GET_DATA (6.0): a buffer per tag, the driver copies
  kGetData,     // NEED_GET_DATA: pool buffers while served, the driver copies
  kUserCopy,    // USER_COPY: pool buffers, the agent copies (pread/pwrite on /dev/ublkcN)
  // AUTO_BUF_REG with USER_COPY: each request's pages are a fixed buffer of the queue's
  // ring, used as they are by NVMe passthrough (kernel paths); a path that cannot
  // (vfio) gets a USER_COPY copy in a pool buffer.
  kZeroCopy,
};
struct DataWant {
  bool user_copy = false;  // --ublk_user_copy
  bool zero_copy = false;  // --ublk_zero_copy, where this head's paths can use it
};
// The device flags for `want` that the driver's `features` allow; what it lacks falls
// back to the next older mode (zero copy to USER_COPY or NEED_GET_DATA, USER_COPY to
// NEED_GET_DATA, NEED_GET_DATA to buffers per tag). Zero copy needs both AUTO_BUF_REG
// (6.16) and USER_COPY (its fallback and the copy for vfio paths).
uint64_t DataFlagsFor(uint64_t features, DataWant want);
DataMode DataModeOf(uint64_t device_flags);

// Fills a zeroed SQE with the I/O command `op` (FETCH, COMMIT_AND_FETCH, NEED_GET_DATA)
// for (q_id, tag) on /dev/ublkcN `cdev_fd`; user_data is the tag. `buffer` goes in the
// command's addr (0 where the driver copies nothing of ours). With `auto_buf_reg` the
// driver is told where to register the next request's pages: the tag's own index of
// the ring's buffer table, with the fallback flag, in the SQE's own addr (the command's
// addr must then be 0: the driver refuses a FETCH with one).
void PrepIoCommand(io_uring_sqe* sqe, int cdev_fd, uint32_t op, uint16_t q_id, uint16_t tag,
                   int32_t result, uint64_t buffer, bool auto_buf_reg);

// Fills `req` (opcode, slba, blocks, data, data_len, flags) from a descriptor, with the
// tag's buffer at `buffer`. Returns 0, or a negative errno to hand straight back to the
// kernel: -EOPNOTSUPP for an operation the device does not offer, -EINVAL for a
// descriptor that is not whole blocks, is empty, or does not fit the buffer.
int Translate(const ublksrv_io_desc& iod, const IoShape& shape, void* buffer, IoRequest* req);

// The result to commit for a request: bytes moved for reads and writes, 0 for the rest;
// a negative errno when it failed (the block layer turns it into a status).
int ResultFor(const ublksrv_io_desc& iod, const IoResult& result);

// Device parameters for a head of `size_blocks` blocks of `block_size` bytes.
struct DeviceShape {
  uint64_t size_blocks = 0;
  uint32_t block_size = 512;
  uint32_t max_io_bytes = 0;    // at most each tag's buffer
  bool write_zeroes = false;
  bool deallocate = false;
  bool volatile_write_cache = false;
};
ublk_params ParamsFor(const DeviceShape& shape);

// Whether a kernel (its `uname -r`, "6.12.95+deb12-cloud-amd64") has the ublk race in
// which a server that exits with requests on their way to it (killed, or handing its
// devices over under I/O) gets a command completed twice and the kernel oopses in
// io_fallback_tw (CVE-2025-37906). It came with the cancel path in 6.7 and was fixed by
// f40139fde527 in 6.15, backported to 6.14.6 and 6.12.114; 6.8..6.11 and 6.13 ended
// without it. False for a release that does not parse.
bool HasUblkCancelRace(const std::string& release);

}  // namespace umpath::ublk
