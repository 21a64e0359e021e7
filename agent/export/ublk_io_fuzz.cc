// libFuzzer: a ublk I/O descriptor (kernel data) never makes Translate write outside the
// tag's buffer or hand the core a request that does not fit it, whatever its fields.
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "agent/export/ublk_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace umpath::ublk;
  if (size < sizeof(ublksrv_io_desc) + 3) return 0;
  ublksrv_io_desc iod;
  std::memcpy(&iod, data, sizeof iod);
  IoShape shape;
  shape.block_size = 512u << (data[sizeof iod] % 4);        // 512..4096
  shape.buffer_bytes = 4096u << (data[sizeof iod + 1] % 6);  // 4 KiB..128 KiB
  shape.write_zeroes = data[sizeof iod + 2] & 1;
  shape.deallocate = data[sizeof iod + 2] & 2;
  // Exactly the buffer, so ASan sees any write past it.
  std::vector<uint8_t> buf(shape.buffer_bytes);
  umpath::IoRequest req;
  const int r = Translate(iod, shape, buf.data(), &req);
  if (r != 0) {
    if (r != -EINVAL && r != -EOPNOTSUPP) std::abort();
    return 0;
  }
  if (req.data != nullptr && (req.data != buf.data() || req.data_len > shape.buffer_bytes)) std::abort();
  if (req.opcode == umpath::nvme::IoOpcode::kRead || req.opcode == umpath::nvme::IoOpcode::kWrite) {
    if (uint64_t{req.blocks} * shape.block_size != req.data_len) std::abort();
  }
  const int res = ResultFor(iod, umpath::IoResult{});
  if (res < 0) std::abort();
  return 0;
}
