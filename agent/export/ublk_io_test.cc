#include "agent/export/ublk_io.h"

#include <cerrno>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace umpath::ublk {
namespace {

ublksrv_io_desc Desc(uint8_t op, uint64_t sector, uint32_t sectors, uint32_t flags = 0) {
  ublksrv_io_desc d{};
  d.op_flags = op | flags;
  d.start_sector = sector;
  d.nr_sectors = sectors;
  return d;
}

class TranslateTest : public ::testing::Test {
 protected:
  IoShape Shape(uint32_t bs) {
    IoShape s;
    s.block_size = bs;
    s.buffer_bytes = 128 * 1024;
    s.write_zeroes = true;
    s.deallocate = true;
    return s;
  }
  std::vector<uint8_t> buf_ = std::vector<uint8_t>(128 * 1024);
  IoRequest req_;
};

TEST_F(TranslateTest, ReadsAndWritesBecomeBlocksOfTheHead) {
  ASSERT_EQ(Translate(Desc(kOpRead, 16, 8), Shape(512), buf_.data(), &req_), 0);
  EXPECT_EQ(req_.opcode, nvme::IoOpcode::kRead);
  EXPECT_EQ(req_.slba, 16u);
  EXPECT_EQ(req_.blocks, 8u);
  EXPECT_EQ(req_.data, buf_.data());
  EXPECT_EQ(req_.data_len, 4096u);
  EXPECT_EQ(req_.flags, 0);

  // 4 KiB blocks: sector 16 is block 2, 64 sectors are 8 blocks; FUA carries over.
  ASSERT_EQ(Translate(Desc(kOpWrite, 16, 64, kIoFlagFua), Shape(4096), buf_.data(), &req_), 0);
  EXPECT_EQ(req_.opcode, nvme::IoOpcode::kWrite);
  EXPECT_EQ(req_.slba, 2u);
  EXPECT_EQ(req_.blocks, 8u);
  EXPECT_EQ(req_.data_len, 32768u);
  EXPECT_EQ(req_.flags, kIoFua);
}

TEST_F(TranslateTest, MalformedDescriptorsAreRefused) {
  // Not whole 4 KiB blocks, in start or length.
  EXPECT_EQ(Translate(Desc(kOpRead, 1, 8), Shape(4096), buf_.data(), &req_), -EINVAL);
  EXPECT_EQ(Translate(Desc(kOpRead, 8, 4), Shape(4096), buf_.data(), &req_), -EINVAL);
  // Empty, and larger than the tag's buffer.
  EXPECT_EQ(Translate(Desc(kOpWrite, 0, 0), Shape(512), buf_.data(), &req_), -EINVAL);
  EXPECT_EQ(Translate(Desc(kOpWrite, 0, 257), Shape(512), buf_.data(), &req_), -EINVAL);
  // Operations the device does not do.
  EXPECT_EQ(Translate(Desc(kOpWriteSame, 0, 8), Shape(512), buf_.data(), &req_), -EOPNOTSUPP);
  EXPECT_EQ(Translate(Desc(0x7f, 0, 8), Shape(512), buf_.data(), &req_), -EOPNOTSUPP);
  IoShape plain = Shape(512);
  plain.write_zeroes = plain.deallocate = false;
  EXPECT_EQ(Translate(Desc(kOpWriteZeroes, 0, 8), plain, buf_.data(), &req_), -EOPNOTSUPP);
  EXPECT_EQ(Translate(Desc(kOpDiscard, 0, 8), plain, buf_.data(), &req_), -EOPNOTSUPP);
  // More blocks than one Write Zeroes carries.
  EXPECT_EQ(Translate(Desc(kOpWriteZeroes, 0, 0x10001), Shape(512), buf_.data(), &req_), -EINVAL);
}

TEST_F(TranslateTest, FlushWriteZeroesAndDiscard) {
  ASSERT_EQ(Translate(Desc(kOpFlush, 0, 0), Shape(512), buf_.data(), &req_), 0);
  EXPECT_EQ(req_.opcode, nvme::IoOpcode::kFlush);
  EXPECT_EQ(req_.data, nullptr);

  ASSERT_EQ(Translate(Desc(kOpWriteZeroes, 80, 16), Shape(4096), buf_.data(), &req_), 0);
  EXPECT_EQ(req_.opcode, nvme::IoOpcode::kWriteZeroes);
  EXPECT_EQ(req_.slba, 10u);
  EXPECT_EQ(req_.blocks, 2u);
  EXPECT_EQ(req_.data_len, 0u);

  // A discard is one deallocate range, written into the tag's buffer.
  std::memset(buf_.data(), 0xaa, 32);
  ASSERT_EQ(Translate(Desc(kOpDiscard, 2048, 1024), Shape(512), buf_.data(), &req_), 0);
  EXPECT_EQ(req_.opcode, nvme::IoOpcode::kDatasetManagement);
  EXPECT_EQ(req_.blocks, 1u);
  EXPECT_EQ(req_.data, buf_.data());
  EXPECT_EQ(req_.data_len, 16u);
  uint32_t attrs, nlb;
  uint64_t slba;
  std::memcpy(&attrs, buf_.data(), 4);
  std::memcpy(&nlb, buf_.data() + 4, 4);
  std::memcpy(&slba, buf_.data() + 8, 8);
  EXPECT_EQ(attrs, 0u);
  EXPECT_EQ(nlb, 1024u);
  EXPECT_EQ(slba, 2048u);
  EXPECT_EQ(buf_[16], 0xaa) << "only the range is written";
}

TEST(ResultForTest, BytesForDataAndErrnoForFailures) {
  EXPECT_EQ(ResultFor(Desc(kOpRead, 0, 8), IoResult{}), 4096);
  EXPECT_EQ(ResultFor(Desc(kOpWrite, 0, 256), IoResult{}), 131072);
  EXPECT_EQ(ResultFor(Desc(kOpFlush, 0, 0), IoResult{}), 0);
  EXPECT_EQ(ResultFor(Desc(kOpDiscard, 0, 8), IoResult{}), 0);
  EXPECT_EQ(ResultFor(Desc(kOpRead, 0, 8), IoResult{IoError::kNoPath, {}}), -ENOLINK);
  EXPECT_EQ(ResultFor(Desc(kOpRead, 0, 8), IoResult{IoError::kHeadRemoved, {}}), -EIO);
  EXPECT_EQ(ResultFor(Desc(kOpRead, 0, 8), IoResult{IoError::kShutdown, {}}), -EIO);
  auto nvme = [](uint16_t code) {
    return IoResult{IoError::kNvme, nvme::Status::Make(code, /*dnr=*/true)};
  };
  EXPECT_EQ(ResultFor(Desc(kOpRead, 0, 8), nvme(0x281)), -ENODATA);  // unrecovered read error
  EXPECT_EQ(ResultFor(Desc(kOpWrite, 0, 8), nvme(0x081)), -ENOSPC);
  EXPECT_EQ(ResultFor(Desc(kOpWrite, 0, 8), nvme(0x001)), -EOPNOTSUPP);
  EXPECT_EQ(ResultFor(Desc(kOpWrite, 0, 8), nvme(0x002)), -EIO);
}

TEST(ParamsForTest, LimitsComeFromTheNamespace) {
  DeviceShape s;
  s.size_blocks = 1000;
  s.block_size = 4096;
  s.max_io_bytes = 128 * 1024;
  ublk_params p = ParamsFor(s);
  EXPECT_EQ(p.types, kParamBasic);
  EXPECT_EQ(p.len, offsetof(ublk_params, discard) + sizeof(p.discard));
  EXPECT_EQ(p.basic.logical_bs_shift, 12);
  EXPECT_EQ(p.basic.physical_bs_shift, 12);
  EXPECT_EQ(p.basic.max_sectors, 256u);
  EXPECT_EQ(p.basic.dev_sectors, 8000u);
  EXPECT_EQ(p.basic.attrs, 0u);

  s.block_size = 512;
  s.write_zeroes = true;
  s.volatile_write_cache = true;
  p = ParamsFor(s);
  EXPECT_EQ(p.types, kParamBasic | kParamDiscard);
  EXPECT_EQ(p.basic.logical_bs_shift, 9);
  EXPECT_EQ(p.basic.dev_sectors, 1000u);
  EXPECT_EQ(p.basic.attrs, uint32_t{UBLK_ATTR_VOLATILE_CACHE | UBLK_ATTR_FUA});
  EXPECT_EQ(p.discard.max_discard_sectors, 0u) << "no deallocate: no discard";
  EXPECT_EQ(p.discard.max_write_zeroes_sectors, 0x10000u);
  EXPECT_EQ(p.discard.discard_granularity, 512u);

  s.deallocate = true;
  p = ParamsFor(s);
  EXPECT_EQ(p.discard.max_discard_sectors, 0x10000u);
  EXPECT_EQ(p.discard.max_discard_segments, 1);
}

TEST(HasUblkCancelRaceTest, TheKernelsWithoutTheFix) {
  EXPECT_TRUE(HasUblkCancelRace("6.12.95+deb12-cloud-amd64"));  // the lab's
  EXPECT_TRUE(HasUblkCancelRace("6.12.113"));
  EXPECT_FALSE(HasUblkCancelRace("6.12.114"));
  EXPECT_FALSE(HasUblkCancelRace("6.12.117+deb13-cloud-amd64"));
  EXPECT_TRUE(HasUblkCancelRace("6.7.0"));
  EXPECT_TRUE(HasUblkCancelRace("6.13.12"));
  EXPECT_TRUE(HasUblkCancelRace("6.14.5"));
  EXPECT_FALSE(HasUblkCancelRace("6.14.6"));
  EXPECT_FALSE(HasUblkCancelRace("6.15-rc4"));
  EXPECT_FALSE(HasUblkCancelRace("6.18.15+deb13-cloud-amd64"));
  EXPECT_FALSE(HasUblkCancelRace("6.6.50"));  // before the cancel path
  EXPECT_FALSE(HasUblkCancelRace("6.1.0-28-amd64"));
  EXPECT_FALSE(HasUblkCancelRace("7.0.1"));
  EXPECT_FALSE(HasUblkCancelRace(""));
  EXPECT_FALSE(HasUblkCancelRace("garbage"));
  EXPECT_TRUE(HasUblkCancelRace("6.10"));
}

}  // namespace
}  // namespace umpath::ublk

namespace umpath::ublk {
namespace {

// Issue 21: USER_COPY where asked and offered; each missing feature falls back to the
// next older mode, and a device's flags say how it is served (taken over as made).
TEST(DataFlagsForTest, UserCopyOnlyWhereAskedAndOffered) {
  const uint64_t k612 = kFlagNeedGetData | kFlagUserCopy | kFlagUserRecovery;
  EXPECT_EQ(DataFlagsFor(k612, DataWant{.user_copy = true}), kFlagUserCopy);
  EXPECT_EQ(DataFlagsFor(k612, DataWant{}), kFlagNeedGetData);
  EXPECT_EQ(DataFlagsFor(kFlagNeedGetData, DataWant{.user_copy = true}), kFlagNeedGetData);
  EXPECT_EQ(DataFlagsFor(0, DataWant{.user_copy = true}), 0u);
  EXPECT_EQ(DataModeOf(kFlagUserCopy | kFlagCmdIoctlEncode), DataMode::kUserCopy);
  EXPECT_EQ(DataModeOf(kFlagUserCopy | kFlagNeedGetData), DataMode::kUserCopy);
  EXPECT_EQ(DataModeOf(kFlagNeedGetData), DataMode::kGetData);
  EXPECT_EQ(DataModeOf(kFlagCmdIoctlEncode), DataMode::kTagBuffers);
}

// Zero copy needs AUTO_BUF_REG (6.16) and USER_COPY (the copy for a vfio path and for a
// registration that failed) together; without either it falls back, and 6.12's
// features (no AUTO_BUF_REG) give today's modes.
TEST(DataFlagsForTest, ZeroCopyOnlyWithAutoBufRegAndUserCopy) {
  const uint64_t k618 = 0x7fff;  // what 6.18's GET_FEATURES answers
  const uint64_t k612 = kFlagNeedGetData | kFlagUserCopy | kFlagUserRecovery | kFlagUserRecoveryReissue |
                        kFlagCmdIoctlEncode | kFlagSupportZeroCopy;
  const DataWant zc{.zero_copy = true};
  EXPECT_EQ(DataFlagsFor(k618, zc), kFlagAutoBufReg | kFlagUserCopy);
  EXPECT_EQ(DataModeOf(DataFlagsFor(k618, zc) | kFlagCmdIoctlEncode), DataMode::kZeroCopy);
  EXPECT_EQ(DataFlagsFor(k612, zc), kFlagNeedGetData);
  EXPECT_EQ(DataFlagsFor(k612, DataWant{.user_copy = true, .zero_copy = true}), kFlagUserCopy);
  EXPECT_EQ(DataFlagsFor(k618 & ~kFlagUserCopy, zc), kFlagNeedGetData);
  EXPECT_EQ(DataFlagsFor(k618, DataWant{}), kFlagNeedGetData);
}

// The driver reads AUTO_BUF_REG's index from the SQE's own addr and refuses a FETCH
// whose command carries an address on a device that copies nothing of ours (a first
// lab run, with the index in the command, never started the device).
TEST(PrepIoCommandTest, AutoBufRegGoesInTheSqeAddrAndTheCommandHasNone) {
  alignas(64) io_uring_sqe sqe[2] = {};
  PrepIoCommand(sqe, 9, kIoFetchReq, 1, 5, 0, 0, /*auto_buf_reg=*/true);
  const auto* cmd = reinterpret_cast<const ublksrv_io_cmd*>(sqe->cmd);
  EXPECT_EQ(sqe->opcode, IORING_OP_URING_CMD);
  EXPECT_EQ(sqe->fd, 9);
  EXPECT_EQ(sqe->cmd_op, kIoFetchReq);
  EXPECT_EQ(sqe->user_data, 5u);
  EXPECT_EQ(sqe->addr, 5u | 1u << 16) << "index 5, UBLK_AUTO_BUF_REG_FALLBACK";
  EXPECT_EQ(cmd->addr, 0u);
  EXPECT_EQ(cmd->q_id, 1);
  EXPECT_EQ(cmd->tag, 5);

  std::memset(sqe, 0, sizeof sqe);
  PrepIoCommand(sqe, 9, kIoCommitAndFetchReq, 0, 3, 4096, 0x7000, /*auto_buf_reg=*/false);
  EXPECT_EQ(sqe->addr, 0u);
  EXPECT_EQ(cmd->addr, 0x7000u);
  EXPECT_EQ(cmd->result, 4096);
}

TEST(UserCopyOffsetTest, QueueAndTagAboveTheBuffer) {
  EXPECT_EQ(UserCopyOffset(0, 0), 0x80000000ull);
  EXPECT_EQ(UserCopyOffset(0, 1), 0x80000000ull + (1ull << 25));
  EXPECT_EQ(UserCopyOffset(3, 7), 0x80000000ull + (3ull << 41) + (7ull << 25));
  EXPECT_EQ(AutoBufRegAddr(5, kAutoBufRegFallback), 5ull | (1ull << 16));
}

}  // namespace
}  // namespace umpath::ublk
