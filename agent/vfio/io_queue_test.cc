#include "agent/vfio/io_queue.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace umpath::vfio {
namespace {

using nvme::CompletionEntry;
using nvme::IoOpcode;
using nvme::Status;
using nvme::SubmissionEntry;
namespace sc = nvme::status_code;

constexpr uint32_t kPage = 4096;
constexpr uint32_t kBlock = 512;

// The controller's side, as the spec has it: consumes SQ entries up to the tail
// doorbell, moves data through the PRPs (IOVAs here are host addresses, the mapping the
// test registers), and posts CQEs with its phase tag.
struct FakeNvme {
  explicit FakeNvme(uint16_t depth) : depth(depth), sq(depth), cq(depth), disk(1 << 20) {}

  std::vector<std::pair<uint8_t*, uint32_t>> Segments(const SubmissionEntry& e, uint32_t len) {
    std::vector<std::pair<uint8_t*, uint32_t>> out;
    uint64_t addr = e.prp1;
    uint32_t first = std::min<uint32_t>(len, kPage - static_cast<uint32_t>(addr & (kPage - 1)));
    out.push_back({reinterpret_cast<uint8_t*>(addr), first});
    len -= first;
    if (len == 0) return out;
    if (len <= kPage) {
      out.push_back({reinterpret_cast<uint8_t*>(e.prp2), len});
      return out;
    }
    auto* list = reinterpret_cast<uint64_t*>(e.prp2);
    size_t i = 0;
    while (len > 0) {
      if (i == kPage / 8 - 1 && len > kPage) {  // chain to the next list page
        list = reinterpret_cast<uint64_t*>(list[i]);
        i = 0;
      }
      const uint32_t n = std::min(len, kPage);
      out.push_back({reinterpret_cast<uint8_t*>(list[i++]), n});
      len -= n;
    }
    return out;
  }

  // Executes and completes what was rung, up to `limit` commands.
  int Run(int limit = 1 << 30, uint16_t status_code = 0) {
    int n = 0;
    while (sq_head != sq_tail_db && n < limit) {
      const SubmissionEntry e = sq[sq_head];
      sq_head = static_cast<uint16_t>((sq_head + 1) % depth);
      ++executed[e.opcode];
      last = e;
      const uint64_t slba = e.cdw10 | uint64_t{e.cdw11} << 32;
      const uint32_t len = ((e.cdw12 & 0xffff) + 1) * kBlock;
      if (e.opcode == uint8_t(IoOpcode::kWrite) || e.opcode == uint8_t(IoOpcode::kRead)) {
        uint64_t off = slba * kBlock;
        for (auto [p, l] : Segments(e, len)) {
          if (e.opcode == uint8_t(IoOpcode::kWrite)) {
            std::memcpy(&disk[off], p, l);
          } else {
            std::memcpy(p, &disk[off], l);
          }
          off += l;
        }
      } else if (e.opcode == uint8_t(IoOpcode::kWriteZeroes)) {
        std::memset(&disk[slba * kBlock], 0, len);
      } else if (e.opcode == uint8_t(IoOpcode::kDatasetManagement) && (e.cdw11 & 4)) {
        // Deallocated blocks read back as zeroes here (DLFEAT 001b).
        const uint8_t* r = reinterpret_cast<const uint8_t*>(e.prp1);
        for (uint32_t i = 0; i <= (e.cdw10 & 0xff); ++i, r += 16) {
          uint32_t nlb;
          uint64_t start;
          std::memcpy(&nlb, r + 4, 4);
          std::memcpy(&start, r + 8, 8);
          std::memset(&disk[start * kBlock], 0, uint64_t{nlb} * kBlock);
        }
      }
      Post(e.cid, status_code);
      ++n;
    }
    return n;
  }
  // The controller was disabled and the queues created again: slot 0, phase 1.
  void ResetQueues() {
    for (auto& c : cq) c = CompletionEntry{};
    sq_tail_db = cq_head_db = 0;
    sq_head = cq_tail = 0;
    phase = true;
  }
  void Post(uint16_t cid, uint16_t status_code) {
    CompletionEntry& c = cq[cq_tail];
    c.cid = cid;
    c.sq_head = sq_head;
    c.status = static_cast<uint16_t>((Status::Make(status_code).ToCompletionField() << 1) |
                                     (phase ? 1 : 0));
    if (++cq_tail == depth) {
      cq_tail = 0;
      phase = !phase;
    }
  }

  uint16_t depth;
  std::vector<SubmissionEntry> sq;
  std::vector<CompletionEntry> cq;
  std::vector<uint8_t> disk;
  uint32_t sq_tail_db = 0, cq_head_db = 0;
  uint16_t sq_head = 0, cq_tail = 0;
  bool phase = true;
  int executed[256] = {};
  SubmissionEntry last;
};

struct Sink final : CompletionSink {
  void OnCompletion(IoRequest* req, Status s) override { done.push_back({req, s}); }
  std::vector<std::pair<IoRequest*, Status>> done;
};

class VfioQueuePairTest : public ::testing::Test {
 protected:
  void Make(uint16_t depth, uint32_t max_transfer = 512 * 1024) {
    dev_ = std::make_unique<FakeNvme>(depth);
    opts_.depth = depth;
    opts_.max_transfer = max_transfer;
    opts_.list_pages_per_command = ListPagesPerCommand(max_transfer, kPage);
    opts_.registry = &registry_;
    opts_.clock = &clock_;
    opts_.timeout_ns = 1'000'000'000;
    opts_.on_timeout = [this] { ++timeouts_; };
    lists_.assign(size_t{depth} * opts_.list_pages_per_command * kPage + kPage, 0);
    uint8_t* lists = lists_.data() + (kPage - reinterpret_cast<uintptr_t>(lists_.data()) % kPage);
    IoQueueMemory m;
    m.sq = dev_->sq.data();
    m.cq = dev_->cq.data();
    m.prp_lists = lists;
    m.prp_lists_iova = reinterpret_cast<uint64_t>(lists);
    m.sq_doorbell = &dev_->sq_tail_db;
    m.cq_doorbell = &dev_->cq_head_db;
    qp_ = std::make_unique<VfioQueuePair>(opts_, m);
    buf_.assign(2 << 20, 0);
    ASSERT_TRUE(registry_.Add(buf_.data(), buf_.size(), reinterpret_cast<uint64_t>(buf_.data())).ok());
  }
  IoRequest Req(IoOpcode op, uint64_t slba, uint32_t bytes, uint8_t* data) {
    IoRequest r;
    r.opcode = op;
    r.slba = slba;
    r.blocks = bytes / kBlock;
    r.data = data;
    r.data_len = bytes;
    r.nsid = 1;
    return r;
  }

  IoQueueOptions opts_;
  ManualClock clock_;
  DmaRegistry registry_;
  std::unique_ptr<FakeNvme> dev_;
  std::vector<uint8_t> lists_, buf_;
  std::unique_ptr<VfioQueuePair> qp_;
  Sink sink_;
  int timeouts_ = 0;
};

TEST_F(VfioQueuePairTest, WriteThenReadBackThroughPrpsAndLists) {
  Make(64);
  // 4 KiB (PRP1 only), 8 KiB (PRP2 a page), 64 KiB at an odd offset (a PRP list) and
  // 512 KiB (MDTS, the largest list).
  for (uint32_t bytes : {4096u, 8192u, 65536u, 524288u}) {
    SCOPED_TRACE(bytes);
    uint8_t* w = buf_.data() + 512;  // not page aligned: one more page spanned
    uint8_t* r = buf_.data() + (1 << 20);
    for (uint32_t i = 0; i < bytes; ++i) w[i] = static_cast<uint8_t>(i * 7 + bytes);
    std::memset(r, 0, bytes);
    IoRequest wr = Req(IoOpcode::kWrite, 8, bytes, w);
    ASSERT_EQ(qp_->Submit(&wr), SubmitResult::kOk);
    qp_->Ring();
    dev_->Run();
    ASSERT_EQ(qp_->Poll(sink_, 16), 1u);
    IoRequest rd = Req(IoOpcode::kRead, 8, bytes, r);
    ASSERT_EQ(qp_->Submit(&rd), SubmitResult::kOk);
    qp_->Ring();
    dev_->Run();
    ASSERT_EQ(qp_->Poll(sink_, 16), 1u);
    EXPECT_EQ(std::memcmp(w, r, bytes), 0);
    EXPECT_EQ(dev_->last.nsid, 1u);
    EXPECT_EQ(dev_->last.cdw12, bytes / kBlock - 1);
  }
  for (auto& [req, s] : sink_.done) EXPECT_TRUE(s.ok());
  EXPECT_EQ(qp_->outstanding(), 0u);
}

// A hand-over: a second queue pair over the same rings, restored to where the first
// left them (empty, in the middle of a pass, the CQ's phase flipped once), goes on as
// if it had driven them all along: across the wrap, completions found by phase tag,
// none taken twice and none missed.
TEST_F(VfioQueuePairTest, ASuccessorGoesOnWhereTheRingsWereLeft) {
  Make(8);
  uint8_t* data = buf_.data();
  std::vector<IoRequest> reqs(20, Req(IoOpcode::kRead, 0, 4096, data));
  // 11 commands, one by one: the SQ tail and CQ head end at 3, past one wrap.
  for (int i = 0; i < 11; ++i) {
    ASSERT_EQ(qp_->Submit(&reqs[i]), SubmitResult::kOk);
    qp_->Ring();
    dev_->Run();
    ASSERT_EQ(qp_->Poll(sink_, 8), 1u);
  }
  ASSERT_EQ(qp_->outstanding(), 0u);
  const VfioQueuePair::Positions left = qp_->positions();
  EXPECT_EQ(left.sq_tail, 3);
  EXPECT_EQ(left.cq_head, 3);
  EXPECT_FALSE(left.cq_phase);
  IoQueueMemory m;
  m.sq = dev_->sq.data();
  m.cq = dev_->cq.data();
  uint8_t* lists = lists_.data() + (kPage - reinterpret_cast<uintptr_t>(lists_.data()) % kPage);
  m.prp_lists = lists;
  m.prp_lists_iova = reinterpret_cast<uint64_t>(lists);
  m.sq_doorbell = &dev_->sq_tail_db;
  m.cq_doorbell = &dev_->cq_head_db;
  qp_.reset();
  VfioQueuePair next(opts_, m);
  // Not restored, it would write its commands from slot 0 while the device reads on
  // from slot 3, and wait for completions of phase 1 where the device posts phase 0.
  next.RestorePositions(left);
  EXPECT_EQ(next.Poll(sink_, 8), 0u);
  // Nine more, several in flight at once, across the next wrap.
  for (int i = 11; i < 20; i += 3) {
    for (int j = i; j < i + 3; ++j) ASSERT_EQ(next.Submit(&reqs[j]), SubmitResult::kOk);
    next.Ring();
    EXPECT_EQ(dev_->sq_tail_db, static_cast<uint32_t>((i + 3) % 8));
    dev_->Run();
    EXPECT_EQ(next.Poll(sink_, 8), 3u);
  }
  EXPECT_EQ(next.outstanding(), 0u);
  EXPECT_EQ(next.stray_completions(), 0u);
  ASSERT_EQ(sink_.done.size(), 20u);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(sink_.done[i].first, &reqs[i]) << i;
    EXPECT_TRUE(sink_.done[i].second.ok()) << i;
  }
  EXPECT_EQ(next.positions().sq_tail, 4);
}

TEST_F(VfioQueuePairTest, FlushAndWriteZeroes) {
  Make(16);
  std::memset(dev_->disk.data(), 0xee, 4096);
  IoRequest wz = Req(IoOpcode::kWriteZeroes, 0, 4096, nullptr);
  wz.data_len = 0;
  IoRequest fl = Req(IoOpcode::kFlush, 0, 0, nullptr);
  ASSERT_EQ(qp_->Submit(&wz), SubmitResult::kOk);
  ASSERT_EQ(qp_->Submit(&fl), SubmitResult::kOk);
  qp_->Ring();
  EXPECT_EQ(dev_->Run(), 2);
  EXPECT_EQ(qp_->Poll(sink_, 16), 2u);
  EXPECT_EQ(dev_->executed[uint8_t(IoOpcode::kWriteZeroes)], 1);
  EXPECT_EQ(dev_->executed[uint8_t(IoOpcode::kFlush)], 1);
  EXPECT_EQ(dev_->disk[100], 0);
}

TEST_F(VfioQueuePairTest, DeallocateAndForceUnitAccess) {
  Make(16);
  std::memset(dev_->disk.data(), 0xee, 16 * kBlock);
  // One range: blocks 2..5.
  uint8_t* ranges = buf_.data() + 2 * kPage;
  std::memset(ranges, 0, 16);
  const uint32_t nlb = 4;
  const uint64_t start = 2;
  std::memcpy(ranges + 4, &nlb, 4);
  std::memcpy(ranges + 8, &start, 8);
  IoRequest dsm = Req(IoOpcode::kDatasetManagement, 0, 0, ranges);
  dsm.blocks = 1;
  dsm.data_len = 16;
  ASSERT_EQ(qp_->Submit(&dsm), SubmitResult::kOk);
  qp_->Ring();
  EXPECT_EQ(dev_->Run(), 1);
  EXPECT_EQ(dev_->last.cdw10, 0u);
  EXPECT_EQ(dev_->last.cdw11, 4u);
  EXPECT_EQ(dev_->disk[1 * kBlock], 0xee);
  EXPECT_EQ(dev_->disk[2 * kBlock], 0);
  EXPECT_EQ(dev_->disk[6 * kBlock - 1], 0);
  EXPECT_EQ(dev_->disk[6 * kBlock], 0xee);

  IoRequest w = Req(IoOpcode::kWrite, 0, 4096, buf_.data());
  w.flags = kIoFua;
  ASSERT_EQ(qp_->Submit(&w), SubmitResult::kOk);
  qp_->Ring();
  EXPECT_EQ(dev_->Run(), 1);
  EXPECT_EQ(dev_->last.cdw12, (1u << 30) | (4096 / kBlock - 1));

  // A range list that crosses a page, or whose length does not match its count.
  const uintptr_t page_end =
      (reinterpret_cast<uintptr_t>(buf_.data()) + 3 * kPage) & ~uintptr_t{kPage - 1};
  IoRequest crossing = Req(IoOpcode::kDatasetManagement, 0, 0,
                           reinterpret_cast<uint8_t*>(page_end - 8));
  crossing.blocks = 1;
  crossing.data_len = 16;
  IoRequest short_list = Req(IoOpcode::kDatasetManagement, 0, 0, ranges);
  short_list.blocks = 2;
  short_list.data_len = 16;
  EXPECT_EQ(qp_->Submit(&crossing), SubmitResult::kOk);
  EXPECT_EQ(qp_->Submit(&short_list), SubmitResult::kOk);
  qp_->Ring();
  EXPECT_EQ(dev_->Run(), 0);
  EXPECT_EQ(qp_->Poll(sink_, 16), 2u + 2u);
  int refused = 0;
  for (auto& [req, st] : sink_.done) {
    if (req == &crossing || req == &short_list) {
      EXPECT_EQ(st.code(), sc::kInvalidField);
      ++refused;
    }
  }
  EXPECT_EQ(refused, 2);
}

TEST_F(VfioQueuePairTest, BadRequestsNeverReachTheDevice) {
  Make(16, 64 * 1024);
  std::vector<uint8_t> foreign(8192);
  IoRequest unregistered = Req(IoOpcode::kRead, 0, 4096, foreign.data());
  IoRequest too_big = Req(IoOpcode::kRead, 0, 128 * 1024, buf_.data());
  IoRequest no_blocks = Req(IoOpcode::kWrite, 0, 4096, buf_.data());
  no_blocks.blocks = 0;
  IoRequest misaligned = Req(IoOpcode::kRead, 0, 4096, buf_.data() + 1);
  IoRequest past_buffer = Req(IoOpcode::kRead, 0, 8192, buf_.data() + buf_.size() - 4096);
  IoRequest dsm = Req(static_cast<IoOpcode>(0x0c), 0, 4096, buf_.data());  // Verify: not ours
  for (IoRequest* r : {&unregistered, &too_big, &no_blocks, &misaligned, &past_buffer, &dsm}) {
    ASSERT_EQ(qp_->Submit(r), SubmitResult::kOk);  // completes with its error on the next poll
  }
  EXPECT_TRUE(sink_.done.empty()) << "Submit never calls back";
  EXPECT_EQ(qp_->outstanding(), 6u);
  qp_->Ring();
  EXPECT_EQ(dev_->Run(), 0);
  EXPECT_EQ(qp_->Poll(sink_, 16), 6u);
  ASSERT_EQ(sink_.done.size(), 6u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(sink_.done[i].second.code(), sc::kInvalidField) << i;
    EXPECT_TRUE(sink_.done[i].second.dnr()) << i;
  }
  EXPECT_EQ(sink_.done[5].second.code(), sc::kInvalidOpcode);
  EXPECT_EQ(qp_->outstanding(), 0u);
  EXPECT_EQ(dev_->sq_tail_db, 0u) << "no doorbell for refused commands";
}

TEST_F(VfioQueuePairTest, FullQueueIsBusyAndOneDoorbellPerBatch) {
  Make(8);
  std::vector<IoRequest> reqs;
  for (int i = 0; i < 10; ++i) reqs.push_back(Req(IoOpcode::kRead, i, 512, buf_.data() + i * 512));
  int accepted = 0;
  for (auto& r : reqs) {
    if (qp_->Submit(&r) == SubmitResult::kOk) ++accepted;
  }
  EXPECT_EQ(accepted, 7) << "depth - 1 in flight";
  qp_->Ring();
  qp_->Ring();
  EXPECT_EQ(qp_->doorbell_writes(), 1u);
  EXPECT_EQ(dev_->sq_tail_db, 7u);
  dev_->Run();
  EXPECT_EQ(qp_->Poll(sink_, 64), 7u);
  EXPECT_EQ(dev_->cq_head_db, 7u) << "the CQ head doorbell once for the batch";
  // The rings wrap: another two rounds with the phase flipping.
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 7; ++i) ASSERT_EQ(qp_->Submit(&reqs[i]), SubmitResult::kOk);
    qp_->Ring();
    dev_->Run();
    EXPECT_EQ(qp_->Poll(sink_, 64), 7u);
  }
  EXPECT_EQ(qp_->completions(), 21u);
}

TEST_F(VfioQueuePairTest, UnknownAndStaleCidsAreIgnored) {
  Make(8);
  IoRequest r = Req(IoOpcode::kRead, 0, 512, buf_.data());
  ASSERT_EQ(qp_->Submit(&r), SubmitResult::kOk);
  qp_->Ring();
  dev_->Post(5, 0);     // a CID never issued
  dev_->Post(4000, 0);  // out of range
  dev_->Run();
  EXPECT_EQ(qp_->Poll(sink_, 64), 1u);
  ASSERT_EQ(sink_.done.size(), 1u);
  EXPECT_EQ(sink_.done[0].first, &r);
  EXPECT_EQ(qp_->stray_completions(), 2u);
}

// SEMANTICS acceptance 14: a completion for an identifier not in flight, or of an
// earlier use of it, is dropped and counted; the command now holding that identifier
// completes only with its own.
TEST_F(VfioQueuePairTest, Acceptance14DuplicateAndLateCompletionsAreDroppedAndCounted) {
  Make(4);  // three slots
  IoRequest first = Req(IoOpcode::kWrite, 0, 512, buf_.data());
  ASSERT_EQ(qp_->Submit(&first), SubmitResult::kOk);
  qp_->Ring();
  const uint16_t first_cid = dev_->sq[0].cid;
  dev_->Run();
  dev_->Post(first_cid, 0);  // the device completes it twice
  EXPECT_EQ(qp_->Poll(sink_, 64), 1u);
  ASSERT_EQ(sink_.done.size(), 1u);
  EXPECT_EQ(sink_.done[0].first, &first);
  EXPECT_EQ(qp_->stray_completions(), 1u);

  // Use every slot once more, so the first command's slot is taken again.
  IoRequest a = Req(IoOpcode::kRead, 8, 512, buf_.data() + 4096);
  IoRequest b = Req(IoOpcode::kRead, 16, 512, buf_.data() + 8192);
  ASSERT_EQ(qp_->Submit(&a), SubmitResult::kOk);
  ASSERT_EQ(qp_->Submit(&b), SubmitResult::kOk);
  qp_->Ring();
  dev_->Run();
  EXPECT_EQ(qp_->Poll(sink_, 64), 2u);
  IoRequest now = Req(IoOpcode::kRead, 24, 512, buf_.data() + 12288);
  ASSERT_EQ(qp_->Submit(&now), SubmitResult::kOk);
  const uint16_t now_cid = dev_->sq[3].cid;
  EXPECT_EQ(now_cid & 3, first_cid & 3) << "the same slot";
  EXPECT_NE(now_cid, first_cid) << "a new generation";

  // A late completion of the first use: it must not complete the command now in the slot.
  dev_->Post(first_cid, sc::kDataTransferError);
  EXPECT_EQ(qp_->Poll(sink_, 64), 0u);
  EXPECT_EQ(sink_.done.size(), 3u);
  EXPECT_EQ(qp_->outstanding(), 1u);
  EXPECT_EQ(qp_->stray_completions(), 2u);

  // Its own completion does.
  qp_->Ring();
  dev_->Run();
  EXPECT_EQ(qp_->Poll(sink_, 64), 1u);
  ASSERT_EQ(sink_.done.size(), 4u);
  EXPECT_EQ(sink_.done[3].first, &now);
  EXPECT_TRUE(sink_.done[3].second.ok());
  EXPECT_EQ(qp_->stray_completions(), 2u);
}

TEST_F(VfioQueuePairTest, ErrorStatusIsDelivered) {
  Make(8);
  IoRequest r = Req(IoOpcode::kRead, 0, 512, buf_.data());
  ASSERT_EQ(qp_->Submit(&r), SubmitResult::kOk);
  qp_->Ring();
  dev_->Run(1, sc::kAnaInaccessible);
  ASSERT_EQ(qp_->Poll(sink_, 64), 1u);
  EXPECT_EQ(sink_.done[0].second.code(), sc::kAnaInaccessible);
}

TEST_F(VfioQueuePairTest, DeadlineMarksTimedOutOnceAndResetRecovers) {
  Make(8);
  IoRequest a = Req(IoOpcode::kRead, 0, 512, buf_.data());
  IoRequest b = Req(IoOpcode::kRead, 1, 512, buf_.data() + 512);
  ASSERT_EQ(qp_->Submit(&a), SubmitResult::kOk);
  ASSERT_EQ(qp_->Submit(&b), SubmitResult::kOk);
  qp_->Ring();
  dev_->Run(1);  // the device answers one and sits on the other
  EXPECT_EQ(qp_->Poll(sink_, 64), 1u);
  EXPECT_EQ(qp_->Poll(sink_, 64), 0u);
  EXPECT_FALSE(qp_->timed_out());
  clock_.Advance(999'000'000);
  EXPECT_EQ(qp_->Poll(sink_, 64), 0u);
  EXPECT_EQ(timeouts_, 0);
  clock_.Advance(100'000'000);
  EXPECT_EQ(qp_->Poll(sink_, 64), 0u);
  EXPECT_TRUE(qp_->timed_out());
  EXPECT_EQ(timeouts_, 1);
  clock_.Advance(5'000'000'000);
  qp_->Poll(sink_, 64);
  EXPECT_EQ(timeouts_, 1) << "one notice per reset";
  // The owner disabled the controller: the command comes back for failover.
  qp_->set_accepting(false);
  EXPECT_EQ(qp_->Submit(&a), SubmitResult::kBusy);
  qp_->AbortAll(sink_);
  ASSERT_EQ(sink_.done.size(), 2u);
  EXPECT_EQ(sink_.done[1].first, &b);
  EXPECT_EQ(sink_.done[1].second.code(), sc::kHostAbortedCommand);
  EXPECT_EQ(qp_->outstanding(), 0u);
  // Recreated on the same memory: the device starts at slot 0 too.
  qp_->ResetRings();
  dev_->ResetQueues();
  qp_->set_accepting(true);
  EXPECT_FALSE(qp_->timed_out());
  ASSERT_EQ(qp_->Submit(&a), SubmitResult::kOk);
  qp_->Ring();
  EXPECT_EQ(dev_->sq_tail_db, 1u);
  dev_->Run();
  EXPECT_EQ(qp_->Poll(sink_, 64), 1u);
}

TEST_F(VfioQueuePairTest, GoneRefusesNewCommands) {
  Make(8);
  IoRequest r = Req(IoOpcode::kRead, 0, 512, buf_.data());
  qp_->MarkGone();
  EXPECT_EQ(qp_->Submit(&r), SubmitResult::kGone);
}

TEST_F(VfioQueuePairTest, EmptyPollResetsTheWakeEventfd) {
  const int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  ASSERT_GE(efd, 0);
  opts_.wake_fd = efd;
  Make(8);
  const uint64_t one = 1;
  ASSERT_EQ(write(efd, &one, sizeof one), 8);
  // A few empty polls are gaps in a busy queue: no system call for them.
  for (int i = 1; i < QueuePair::kMaxEmptyPollsBeforeWakeReset; ++i) {
    EXPECT_EQ(qp_->Poll(sink_, 64), 0u);
  }
  pollfd pfd{efd, POLLIN, 0};
  EXPECT_EQ(poll(&pfd, 1, 0), 1) << "still set after the first empty polls";
  EXPECT_EQ(qp_->Poll(sink_, 64), 0u);
  uint64_t v;
  EXPECT_EQ(read(efd, &v, sizeof v), -1) << "reset, so an idle worker can sleep";
  // A completion that arrives with its interrupt is still reaped.
  IoRequest r = Req(IoOpcode::kRead, 0, 512, buf_.data());
  ASSERT_EQ(qp_->Submit(&r), SubmitResult::kOk);
  qp_->Ring();
  dev_->Run();
  ASSERT_EQ(write(efd, &one, sizeof one), 8);
  EXPECT_EQ(qp_->Poll(sink_, 64), 1u);
  close(efd);
}

}  // namespace
}  // namespace umpath::vfio
