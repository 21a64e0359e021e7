#include "agent/nvme/io_command.h"

#include <gtest/gtest.h>

namespace umpath::nvme {
namespace {

namespace sc = status_code;

IoCommand Rw(IoOpcode op, uint64_t slba, uint32_t blocks, uint32_t len) {
  return IoCommand{.opcode = op, .nsid = 7, .slba = slba, .blocks = blocks, .data_len = len,
                   .has_data = true};
}

TEST(EncodeIoTest, ReadAndWriteCarryLbaCountAndFua) {
  IoCommandWords w;
  IoCommand c = Rw(IoOpcode::kWrite, 0x1'2345'6789, 16, 8192);
  c.fua = true;
  ASSERT_TRUE(EncodeIo(c, 0, &w).ok());
  EXPECT_EQ(w.opcode, 0x01);
  EXPECT_EQ(w.nsid, 7u);
  EXPECT_EQ(w.cdw10, 0x23456789u);
  EXPECT_EQ(w.cdw11, 0x1u);
  EXPECT_EQ(w.cdw12, 15u | 1u << 30);
  ASSERT_TRUE(EncodeIo(Rw(IoOpcode::kRead, 0, 0x10000, 1 << 25), 0, &w).ok());
  EXPECT_EQ(w.cdw12, 0xffffu) << "65536 blocks, the most one command carries";
}

TEST(EncodeIoTest, FlushWriteZeroesAndDeallocate) {
  IoCommandWords w;
  ASSERT_TRUE(EncodeIo(IoCommand{.opcode = IoOpcode::kFlush, .nsid = 1}, 0, &w).ok());
  EXPECT_EQ(w.opcode, 0x00);
  EXPECT_EQ(w.cdw10 | w.cdw11 | w.cdw12, 0u);
  ASSERT_TRUE(EncodeIo(IoCommand{.opcode = IoOpcode::kWriteZeroes, .slba = 100, .blocks = 8}, 0, &w).ok());
  EXPECT_EQ(w.opcode, 0x08);
  EXPECT_EQ(w.cdw10, 100u);
  EXPECT_EQ(w.cdw12, 7u);
  IoCommand d{.opcode = IoOpcode::kDatasetManagement, .blocks = 2, .data_len = 32, .has_data = true};
  ASSERT_TRUE(EncodeIo(d, 0, &w).ok());
  EXPECT_EQ(w.cdw10, 1u);
  EXPECT_EQ(w.cdw11, 1u << 2);
}

TEST(EncodeIoTest, WhatCannotBeSentFailsWithDnr) {
  IoCommandWords w;
  const struct {
    const char* what;
    IoCommand c;
    uint32_t max;
  } cases[] = {
      {"no blocks", Rw(IoOpcode::kRead, 0, 0, 4096), 0},
      {"more than 65536 blocks", Rw(IoOpcode::kRead, 0, 0x10001, 4096), 0},
      {"no data", Rw(IoOpcode::kRead, 0, 8, 0), 0},
      {"larger than the path takes", Rw(IoOpcode::kWrite, 0, 16, 8192), 4096},
      {"no buffer", IoCommand{.opcode = IoOpcode::kRead, .blocks = 8, .data_len = 4096}, 0},
      {"ranges that do not match", IoCommand{.opcode = IoOpcode::kDatasetManagement, .blocks = 2,
                                            .data_len = 16, .has_data = true}, 0},
      {"more than 256 ranges", IoCommand{.opcode = IoOpcode::kDatasetManagement, .blocks = 257,
                                        .data_len = 257 * 16, .has_data = true}, 0},
      {"write zeroes of nothing", IoCommand{.opcode = IoOpcode::kWriteZeroes}, 0},
  };
  for (const auto& c : cases) {
    const Status s = EncodeIo(c.c, c.max, &w);
    EXPECT_EQ(s.code(), sc::kInvalidField) << c.what;
    EXPECT_TRUE(s.dnr()) << c.what;
  }
  const Status s = EncodeIo(IoCommand{.opcode = static_cast<IoOpcode>(0x7f)}, 0, &w);
  EXPECT_EQ(s.code(), sc::kInvalidOpcode);
  EXPECT_TRUE(s.dnr());
}

}  // namespace
}  // namespace umpath::nvme
