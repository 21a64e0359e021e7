#include "agent/vfio/queue.h"

#include <vector>

#include "agent/vfio/regs.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace umpath::vfio {
namespace {

using nvme::CompletionEntry;
using nvme::SubmissionEntry;

// The controller's side of one queue pair, as the NVMe spec has it: it consumes SQ
// entries up to the tail doorbell and posts CQEs with its phase tag.
struct FakeController {
  explicit FakeController(uint16_t depth) : depth(depth), sq(depth), cq(depth) {}
  // Completes everything submitted; returns how many.
  int Run(uint16_t status_field = 0) {
    int n = 0;
    while (sq_head != sq_tail_db) {
      const SubmissionEntry& e = sq[sq_head];
      sq_head = static_cast<uint16_t>((sq_head + 1) % depth);
      CompletionEntry& c = cq[cq_tail];
      c.cid = e.cid;
      c.sq_head = sq_head;
      c.status = static_cast<uint16_t>((status_field << 1) | (phase ? 1 : 0));
      if (++cq_tail == depth) {
        cq_tail = 0;
        phase = !phase;
      }
      ++n;
    }
    return n;
  }
  uint16_t depth;
  std::vector<SubmissionEntry> sq;
  std::vector<CompletionEntry> cq;
  uint32_t sq_tail_db = 0, cq_head_db = 0;
  uint16_t sq_head = 0, cq_tail = 0;
  bool phase = true;
};

SubmissionEntry Cmd(uint16_t cid) {
  SubmissionEntry e;
  e.opcode = static_cast<uint8_t>(nvme::IoOpcode::kRead);
  e.cid = cid;
  return e;
}

TEST(QueueTest, OneDoorbellWritePerBatch) {
  FakeController c(8);
  SubmissionRing sq(c.sq.data(), 8, &c.sq_tail_db);
  for (uint16_t i = 0; i < 5; ++i) ASSERT_TRUE(sq.Push(Cmd(i)));
  EXPECT_EQ(c.sq_tail_db, 0u);  // nothing visible before the doorbell
  sq.Ring();
  sq.Ring();
  EXPECT_EQ(c.sq_tail_db, 5u);
  EXPECT_EQ(sq.doorbell_writes(), 1u);
}

TEST(QueueTest, AFullQueueRefusesAndFreesAsTheControllerConsumes) {
  FakeController c(4);
  SubmissionRing sq(c.sq.data(), 4, &c.sq_tail_db);
  CompletionRing cq(c.cq.data(), 4, &c.cq_head_db);
  for (uint16_t i = 0; i < 3; ++i) ASSERT_TRUE(sq.Push(Cmd(i)));
  EXPECT_TRUE(sq.full());
  EXPECT_FALSE(sq.Push(Cmd(3)));
  sq.Ring();
  ASSERT_EQ(c.Run(), 3);
  CompletionEntry e;
  while (cq.Peek(&e)) {
    sq.SetHead(e.sq_head);
    cq.Pop();
  }
  cq.Ring();
  EXPECT_EQ(sq.free_slots(), 3u);
  EXPECT_EQ(c.cq_head_db, 3u);
}

TEST(QueueTest, CompletionsFollowThePhaseTagThroughManyWraps) {
  constexpr uint16_t kDepth = 4;
  FakeController c(kDepth);
  SubmissionRing sq(c.sq.data(), kDepth, &c.sq_tail_db);
  CompletionRing cq(c.cq.data(), kDepth, &c.cq_head_db);
  CompletionEntry e;
  EXPECT_FALSE(cq.Peek(&e));  // zeroed memory has phase 0: nothing posted yet
  uint16_t next_cid = 0, expect_cid = 0;
  for (int round = 0; round < 10; ++round) {
    for (int i = 0; i < 2; ++i) ASSERT_TRUE(sq.Push(Cmd(next_cid++)));
    sq.Ring();
    ASSERT_EQ(c.Run(round % 3 == 2 ? 0x303 : 0), 2);
    for (int i = 0; i < 2; ++i) {
      ASSERT_TRUE(cq.Peek(&e)) << round;
      EXPECT_EQ(e.cid, expect_cid++);
      EXPECT_EQ(nvme::Status::FromCqe(e).code(), round % 3 == 2 ? 0x303 : 0);
      sq.SetHead(e.sq_head);
      cq.Pop();
    }
    EXPECT_FALSE(cq.Peek(&e)) << "an old-phase entry was taken as new, round " << round;
    cq.Ring();
    EXPECT_EQ(c.cq_head_db, cq.head());
  }
}

TEST(QueueTest, CidTableBindsAndReleasesWithoutTrustingTheController) {
  CidTable<int, 4> t;
  int items[5];
  int cids[4];
  for (int i = 0; i < 4; ++i) {
    cids[i] = t.Acquire(&items[i]);
    ASSERT_GE(cids[i], 0);
  }
  EXPECT_EQ(t.Acquire(&items[4]), -1);
  EXPECT_EQ(t.in_use(), 4u);
  EXPECT_EQ(t.Release(static_cast<uint16_t>(cids[2])), &items[2]);
  EXPECT_EQ(t.Release(static_cast<uint16_t>(cids[2])), nullptr);  // a duplicate completion
  EXPECT_EQ(t.Release(999), nullptr);                              // a CID never issued
  EXPECT_EQ(t.Acquire(&items[4]), cids[2]);
}

TEST(RegsTest, DecodesQemusCap) {
  const regs::Cap cap{0x004018200f0107ffull};  // QEMU 7.2's NVMe controller (LAB.md)
  EXPECT_TRUE(cap.mqes() == 2048);
  EXPECT_TRUE(cap.cqr());
  EXPECT_TRUE(cap.timeout_ms() == 7500);
  EXPECT_TRUE(cap.doorbell_stride() == 4);
  EXPECT_TRUE(cap.nvm_command_set());
  EXPECT_TRUE(cap.mps_min() == 4096);
  EXPECT_TRUE(cap.mps_max() == 65536);
  EXPECT_TRUE(regs::SqTailDoorbell(1, 4) == 0x1008);
  EXPECT_TRUE(regs::CqHeadDoorbell(1, 4) == 0x100c);
  EXPECT_TRUE(regs::CcEnable(4096) == 0x00460001);
}

// Issue 17 item 7b: 4096 << 20 wrapped to 0 in 32 bits, and every I/O over the "limit"
// of 0 bytes then failed. MDTS is a byte: every value gives a sane limit.
TEST(RegsTest, MaxTransferNeverWrapsWhateverMdtsSays) {
  const regs::Cap cap{0x004018200f0107ffull};  // MPSMIN 4 KiB
  EXPECT_EQ(regs::MaxTransferBytes(cap, 0), 1u << 20) << "no limit";
  EXPECT_EQ(regs::MaxTransferBytes(cap, 1), 8192u);
  EXPECT_EQ(regs::MaxTransferBytes(cap, 7), 512u * 1024);
  for (int mdts = 8; mdts <= 255; ++mdts) {
    EXPECT_EQ(regs::MaxTransferBytes(cap, static_cast<uint8_t>(mdts)), 1u << 20) << "MDTS " << mdts;
  }
  const regs::Cap big_pages{0x004018200f0107ffull | uint64_t{0xf} << 48};  // MPSMIN 128 MiB
  EXPECT_EQ(regs::MaxTransferBytes(big_pages, 20), 1u << 20);
}

}  // namespace
}  // namespace umpath::vfio
