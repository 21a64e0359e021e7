// The control commands' bytes as the kernel reads them (include/uapi/linux/ublk_cmd.h)
// and what their results mean, without a kernel: QUIESCE_DEV's encoding and errors.

#include "agent/export/ublk_control.h"

#include <cerrno>
#include <cstring>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace umpath::ublk {
namespace {

using ::testing::HasSubstr;

TEST(UblkControlTest, QuiesceDevIsTheKernelsCommand) {
  // _IOWR('u', 0x16, struct ublksrv_ctrl_cmd): read and write, 32 bytes, type 'u'.
  EXPECT_EQ(kCmdQuiesceDev, 0xc0207516u);
  EXPECT_EQ(kFlagQuiesce, uint64_t{1} << 12);
  EXPECT_EQ(kFlagPerIoDaemon, uint64_t{1} << 13);
}

TEST(UblkControlTest, QuiesceCommandCarriesItsWaitAndNeverAsksForAnEndlessOne) {
  const ControlCommand c = QuiesceCommand(7, 250);
  EXPECT_EQ(c.op, kCmdQuiesceDev);
  EXPECT_EQ(c.dev_id, 7u);
  EXPECT_EQ(c.data0, 250u);
  EXPECT_EQ(c.addr, nullptr);
  EXPECT_EQ(c.len, 0u);
  // The kernel waits for ever on 0: a stop must not.
  EXPECT_EQ(QuiesceCommand(7, 0).data0, 1u);
}

TEST(UblkControlTest, TheSqeIsA128ByteUringCmdForEveryQueue) {
  io_uring_sqe sqe[2];
  std::memset(sqe, 0xa5, sizeof sqe);
  PrepareControlSqe(sqe, 17, QuiesceCommand(3, 2000));
  EXPECT_EQ(sqe[0].opcode, IORING_OP_URING_CMD);
  EXPECT_EQ(sqe[0].fd, 17);
  EXPECT_EQ(sqe[0].cmd_op, kCmdQuiesceDev);
  EXPECT_EQ(sqe[0].flags, 0);
  ublksrv_ctrl_cmd cmd;
  std::memcpy(&cmd, sqe[0].cmd, sizeof cmd);
  EXPECT_EQ(cmd.dev_id, 3u);
  EXPECT_EQ(cmd.queue_id, 0xffff);  // not a queue's command
  EXPECT_EQ(cmd.addr, 0u);
  EXPECT_EQ(cmd.len, 0);
  EXPECT_EQ(cmd.data[0], 2000u);
  // dev_path_len and the rest (newer headers' fields): zero, as for a privileged device.
  const auto* bytes = reinterpret_cast<const unsigned char*>(&cmd);
  for (size_t i = 24; i < sizeof cmd; ++i) EXPECT_EQ(bytes[i], 0) << "byte " << i;
  // The command runs on into the entry's second half (its first 16 bytes); the rest of
  // that half is nothing stale either.
  const auto* tail = reinterpret_cast<const unsigned char*>(&sqe[1]);
  for (size_t i = 16; i < sizeof sqe[1]; ++i) ASSERT_EQ(tail[i], 0) << "byte " << i;
}

TEST(UblkControlTest, QuiesceResults) {
  EXPECT_TRUE(QuiesceResult(3, 2000, 0).ok());
  const absl::Status busy = QuiesceResult(3, 2000, -EBUSY);
  EXPECT_TRUE(absl::IsDeadlineExceeded(busy)) << busy;
  EXPECT_THAT(busy.message(), HasSubstr("device 3"));
  EXPECT_THAT(busy.message(), HasSubstr("2000 ms"));
  // Made without the flag, or a kernel before 6.15 (an unknown command).
  EXPECT_TRUE(absl::IsUnimplemented(QuiesceResult(3, 2000, -EOPNOTSUPP)));
  EXPECT_TRUE(absl::IsUnimplemented(QuiesceResult(3, 2000, -EINVAL)));
  EXPECT_TRUE(absl::IsNotFound(QuiesceResult(3, 2000, -ENODEV)));
  EXPECT_TRUE(absl::IsInternal(QuiesceResult(3, 2000, -EINTR)));
}

}  // namespace
}  // namespace umpath::ublk
