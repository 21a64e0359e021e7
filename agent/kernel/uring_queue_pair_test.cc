#include "agent/kernel/uring_queue_pair.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "agent/base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace umpath::kernel {
namespace {

namespace sc = nvme::status_code;
using nvme::IoOpcode;

struct Sink final : CompletionSink {
  std::vector<std::pair<IoRequest*, nvme::Status>> done;
  void OnCompletion(IoRequest* req, nvme::Status status) override { done.emplace_back(req, status); }
};

IoRequest Read(void* buf, uint32_t len, uint64_t slba, uint32_t nsid = 1) {
  IoRequest r;
  r.opcode = IoOpcode::kRead;
  r.slba = slba;
  r.blocks = len / 512;
  r.data = buf;
  r.data_len = len;
  r.nsid = nsid;
  return r;
}

TEST(UringCommandTest, ReadWriteCarryLbaCountAndFua) {
  alignas(4096) static uint8_t buf[8192];
  IoRequest r = Read(buf, 8192, 0x1'2345'6789);
  r.opcode = IoOpcode::kWrite;
  r.flags = kIoFua;
  r.nsid = 7;
  nvme_uring_cmd cmd;
  ASSERT_TRUE(BuildUringCommand(r, 0, &cmd));
  EXPECT_EQ(cmd.opcode, 0x01);
  EXPECT_EQ(cmd.nsid, 7u);
  EXPECT_EQ(cmd.addr, reinterpret_cast<uintptr_t>(buf));
  EXPECT_EQ(cmd.data_len, 8192u);
  EXPECT_EQ(cmd.cdw10, 0x23456789u);
  EXPECT_EQ(cmd.cdw11, 0x1u);
  EXPECT_EQ(cmd.cdw12, 15u | 1u << 30);  // 16 blocks, 0-based; FUA
  EXPECT_FALSE(BuildUringCommand(r, 4096, &cmd)) << "larger than the path takes";
  r.blocks = 0;
  EXPECT_FALSE(BuildUringCommand(r, 0, &cmd));
  r = Read(nullptr, 4096, 0);
  EXPECT_FALSE(BuildUringCommand(r, 0, &cmd)) << "no buffer";
}

TEST(UringCommandTest, FlushWriteZeroesAndDeallocate) {
  IoRequest f;
  f.opcode = IoOpcode::kFlush;
  f.nsid = 1;
  nvme_uring_cmd cmd;
  ASSERT_TRUE(BuildUringCommand(f, 0, &cmd));
  EXPECT_EQ(cmd.opcode, 0x00);
  EXPECT_EQ(cmd.addr, 0u);
  IoRequest z;
  z.opcode = IoOpcode::kWriteZeroes;
  z.slba = 100;
  z.blocks = 8;
  ASSERT_TRUE(BuildUringCommand(z, 0, &cmd));
  EXPECT_EQ(cmd.opcode, 0x08);
  EXPECT_EQ(cmd.cdw10, 100u);
  EXPECT_EQ(cmd.cdw12, 7u);
  uint8_t ranges[32] = {};
  IoRequest d;
  d.opcode = IoOpcode::kDatasetManagement;
  d.blocks = 2;
  d.data = ranges;
  d.data_len = 32;
  ASSERT_TRUE(BuildUringCommand(d, 0, &cmd));
  EXPECT_EQ(cmd.cdw10, 1u);
  EXPECT_EQ(cmd.cdw11, 1u << 2);
  EXPECT_EQ(cmd.data_len, 32u);
  d.data_len = 16;  // says 2 ranges, carries 1
  EXPECT_FALSE(BuildUringCommand(d, 0, &cmd));
}

TEST(UringStatusTest, ResultsReadAsNvmeStatus) {
  EXPECT_TRUE(StatusFromResult(0).ok());
  // The kernel passes the CQE status field through: ANA inaccessible, no DNR.
  const nvme::Status ana = StatusFromResult(0x302);
  EXPECT_EQ(ana.code(), sc::kAnaInaccessible);
  EXPECT_FALSE(ana.dnr());
  EXPECT_TRUE(StatusFromResult(0x4002).dnr());
  // The kernel's side of the path is down: a path error, so the I/O fails over.
  for (int e : {ENODEV, EIO, EINTR, ENOLINK, ECANCELED, ENXIO}) {
    const nvme::Status s = StatusFromResult(-e);
    EXPECT_EQ(s.code(), sc::kHostPathError) << e;
    EXPECT_TRUE(IsHostPathStatus(s));
  }
  // A command the kernel refuses as malformed goes to the caller.
  for (int e : {EINVAL, EFAULT, EOPNOTSUPP}) {
    const nvme::Status s = StatusFromResult(-e);
    EXPECT_EQ(s.code(), sc::kInvalidField) << e;
    EXPECT_TRUE(s.dnr());
    EXPECT_FALSE(IsHostPathStatus(s));
  }
  EXPECT_TRUE(IsHostPathStatus(nvme::Status::Make(sc::kHostAbortedCommand)));
  EXPECT_FALSE(IsHostPathStatus(nvme::Status::Make(sc::kAnaTransition)));
}

// The ring itself, against a file that takes no passthrough (a memfd; newer kernels
// answer success for /dev/null, so not that one): the kernel
// completes each command with EOPNOTSUPP, which must reach the caller, not fail over.
class UringQueuePairTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fd_ = memfd_create("not-a-namespace", MFD_CLOEXEC);
    ASSERT_GE(fd_, 0);
    signals_ = std::make_shared<ControllerSignals>();
    UringQueueOptions o;
    o.depth = 4;
    o.signals = signals_;
    o.namespaces = {{1, fd_}};
    absl::StatusOr<std::unique_ptr<UringQueuePair>> qp = UringQueuePair::Create(o);
    ASSERT_THAT(qp, umpath::testing::IsOk());
    qp_ = std::move(*qp);
  }
  void TearDown() override {
    qp_.reset();
    close(fd_);
  }
  // Polls until `n` completions arrived, sleeping on the wake fd in between.
  void PollFor(size_t n) {
    for (int i = 0; i < 2000 && sink_.done.size() < n; ++i) {
      if (qp_->Poll(sink_, 16) == 0) {
        pollfd p{qp_->wake_fd(), POLLIN, 0};
        (void)poll(&p, 1, 5);
      }
    }
  }
  int fd_ = -1;
  std::shared_ptr<ControllerSignals> signals_;
  std::unique_ptr<UringQueuePair> qp_;
  Sink sink_;
  alignas(4096) uint8_t buf_[4096] = {};
};

TEST_F(UringQueuePairTest, KernelRefusalsReachTheCaller) {
  IoRequest a = Read(buf_, 4096, 0), b = Read(buf_, 4096, 8);
  ASSERT_EQ(qp_->Submit(&a), SubmitResult::kOk);
  ASSERT_EQ(qp_->Submit(&b), SubmitResult::kOk);
  EXPECT_EQ(qp_->outstanding(), 2u);
  EXPECT_EQ(qp_->outstanding_shared(), 2u);
  qp_->Ring();
  PollFor(2);
  ASSERT_EQ(sink_.done.size(), 2u);
  for (const auto& [req, st] : sink_.done) {
    EXPECT_TRUE(req == &a || req == &b);
    EXPECT_EQ(st.code(), sc::kInvalidField);
    EXPECT_TRUE(st.dnr());
  }
  EXPECT_EQ(qp_->outstanding(), 0u);
  EXPECT_FALSE(signals_->suspect.load()) << "a refusal says nothing about the path";
  EXPECT_EQ(qp_->ring_errors(), 0u);
}

TEST_F(UringQueuePairTest, DepthBoundsWhatIsInFlight) {
  IoRequest r[5] = {Read(buf_, 4096, 0), Read(buf_, 4096, 8), Read(buf_, 4096, 16),
                    Read(buf_, 4096, 24), Read(buf_, 4096, 32)};
  for (int i = 0; i < 4; ++i) ASSERT_EQ(qp_->Submit(&r[i]), SubmitResult::kOk);
  EXPECT_EQ(qp_->Submit(&r[4]), SubmitResult::kBusy);
  qp_->Ring();
  PollFor(4);
  EXPECT_EQ(sink_.done.size(), 4u);
  EXPECT_EQ(qp_->Submit(&r[4]), SubmitResult::kOk);
  qp_->Ring();
  PollFor(5);
  EXPECT_EQ(sink_.done.size(), 5u);
}

TEST_F(UringQueuePairTest, UnknownNamespaceAndMalformedAreRefusedOnTheNextPoll) {
  IoRequest other = Read(buf_, 4096, 0, /*nsid=*/9);
  IoRequest empty = Read(buf_, 4096, 0);
  empty.blocks = 0;
  ASSERT_EQ(qp_->Submit(&other), SubmitResult::kOk);
  ASSERT_EQ(qp_->Submit(&empty), SubmitResult::kOk);
  EXPECT_TRUE(sink_.done.empty()) << "Submit never calls back";
  EXPECT_EQ(qp_->Poll(sink_, 16), 2u);
  ASSERT_EQ(sink_.done.size(), 2u);
  EXPECT_EQ(sink_.done[0].second.code(), sc::kInvalidNamespace);
  EXPECT_EQ(sink_.done[1].second.code(), sc::kInvalidField);
  // A namespace that appears later is served.
  qp_->AddNamespace(9, fd_);
  ASSERT_EQ(qp_->Submit(&other), SubmitResult::kOk);
  qp_->Ring();
  PollFor(3);
  EXPECT_EQ(sink_.done.back().second.code(), sc::kInvalidField) << "reached the kernel";
}

TEST_F(UringQueuePairTest, SuspectHoldsAndDrainingRefuses) {
  IoRequest r = Read(buf_, 4096, 0);
  signals_->suspect = true;
  EXPECT_EQ(qp_->Submit(&r), SubmitResult::kBusy);
  signals_->suspect = false;
  signals_->draining = true;
  EXPECT_EQ(qp_->Submit(&r), SubmitResult::kGone);
  EXPECT_EQ(qp_->outstanding(), 0u);
}

// SEMANTICS "Fencing": what the kernel was given comes back only from the kernel.
TEST_F(UringQueuePairTest, AbortAllNeverCompletesWhatTheKernelWasGiven) {
  IoRequest a = Read(buf_, 4096, 0), refused = Read(buf_, 4096, 0, 5);
  ASSERT_EQ(qp_->Submit(&a), SubmitResult::kOk);
  ASSERT_EQ(qp_->Submit(&refused), SubmitResult::kOk);
  qp_->AbortAll(sink_);  // submits what was placed; hands back only what is back
  PollFor(2);
  ASSERT_EQ(sink_.done.size(), 2u);
  for (const auto& [req, st] : sink_.done) {
    EXPECT_NE(st.code(), sc::kHostAbortedCommand) << "completed by the agent, not the kernel";
  }
  EXPECT_EQ(qp_->outstanding(), 0u);
  EXPECT_EQ(qp_->outstanding_shared(), 0u);
}

// SEMANTICS acceptance 14 on io_uring: a CQE for a tag not in flight, or of an earlier
// use of it, is dropped and counted; the command now in the slot completes with its own.
TEST_F(UringQueuePairTest, Acceptance14DuplicateAndLateCompletionsAreDroppedAndCounted) {
  IoRequest a = Read(buf_, 4096, 0);
  ASSERT_EQ(qp_->Submit(&a), SubmitResult::kOk);
  qp_->Ring();
  const uint64_t first_use = a.backend_tag;
  PollFor(1);
  ASSERT_EQ(sink_.done.size(), 1u);
  ASSERT_TRUE(qp_->PostNop(first_use));  // the same completion again
  for (int i = 0; i < 200 && qp_->stray_completions() == 0; ++i) {
    qp_->Poll(sink_, 16);
    pollfd p{qp_->wake_fd(), POLLIN, 0};
    (void)poll(&p, 1, 5);
  }
  EXPECT_EQ(qp_->stray_completions(), 1u);
  EXPECT_EQ(sink_.done.size(), 1u);

  // The slot is taken again; a late success for its first use must not complete it.
  // The late one is in the completion queue, not yet reaped, ahead of b's own.
  ASSERT_TRUE(qp_->PostNop(first_use));
  IoRequest b = Read(buf_, 4096, 8);
  ASSERT_EQ(qp_->Submit(&b), SubmitResult::kOk);
  ASSERT_EQ(b.backend_tag & 0xffffffffu, first_use & 0xffffffffu) << "the same slot";
  ASSERT_NE(b.backend_tag, first_use) << "a new generation";
  qp_->Ring();
  PollFor(2);
  ASSERT_EQ(sink_.done.size(), 2u);
  EXPECT_EQ(sink_.done[1].first, &b);
  EXPECT_EQ(sink_.done[1].second.code(), sc::kInvalidField) << "b's own completion";
  EXPECT_EQ(qp_->stray_completions(), 2u);
}

// Issue 21: the SQE of a zero-copy passthrough names the fixed buffer of the ring it
// goes on, at offset 0 (a buffer the kernel registered for a ublk request starts there);
// one on plain memory names none and keeps its address.
TEST(PrepPassthroughTest, AFixedBufferIsNamedByIndexAtOffsetZero) {
  alignas(4096) static uint8_t buf[8192];
  nvme_uring_cmd cmd;
  ASSERT_TRUE(BuildUringCommand(Read(buf, 8192, 64, 3), 0, &cmd));
  alignas(64) io_uring_sqe sqe[2] = {};
  PrepPassthrough(sqe, 42, cmd, 17);
  EXPECT_EQ(sqe->opcode, IORING_OP_URING_CMD);
  EXPECT_EQ(sqe->fd, 42);
  EXPECT_EQ(sqe->cmd_op, NVME_URING_CMD_IO);
  EXPECT_EQ(sqe->uring_cmd_flags, IORING_URING_CMD_FIXED);
  EXPECT_EQ(sqe->buf_index, 17);
  nvme_uring_cmd carried;
  std::memcpy(&carried, sqe->cmd, sizeof carried);
  EXPECT_EQ(carried.addr, 0u);
  EXPECT_EQ(carried.data_len, 8192u);
  EXPECT_EQ(carried.nsid, 3u);
  EXPECT_EQ(carried.cdw10, 64u);

  std::memset(sqe, 0, sizeof sqe);
  PrepPassthrough(sqe, 42, cmd, -1);
  EXPECT_EQ(sqe->uring_cmd_flags, 0u);
  EXPECT_EQ(sqe->buf_index, 0);
  std::memcpy(&carried, sqe->cmd, sizeof carried);
  EXPECT_EQ(carried.addr, reinterpret_cast<uintptr_t>(buf));
}

// A frontend's ring as the queue pair sees it: hands out one SQE and remembers who is
// to be told.
struct FakeFixedRing final : FixedBufferRing {
  alignas(64) io_uring_sqe sqe[2] = {};
  int borrowed = 0;
  bool full = false;
  FixedCompletionHandler* done = nullptr;
  void* BorrowSqe(IoRequest*, FixedCompletionHandler* handler) override {
    if (full) return nullptr;
    ++borrowed;
    done = handler;
    std::memset(sqe, 0, sizeof sqe);
    sqe->user_data = 0xfeed;  // the ring's own
    return sqe;
  }
};

TEST_F(UringQueuePairTest, AZeroCopyRequestGoesOnTheFrontendsRingAndCompletesOnce) {
  FakeFixedRing ring;
  FixedBuffer fixed{.ring = &ring, .index = 5};
  IoRequest r = Read(buf_, 4096, 0);
  r.fixed = &fixed;
  ring.full = true;
  EXPECT_EQ(qp_->Submit(&r), SubmitResult::kBusy) << "the frontend's ring is full: later";
  EXPECT_EQ(qp_->outstanding(), 0u);
  ring.full = false;
  ASSERT_EQ(qp_->Submit(&r), SubmitResult::kOk);
  EXPECT_EQ(ring.borrowed, 1);
  EXPECT_EQ(ring.done, qp_.get());
  EXPECT_EQ(ring.sqe->user_data, 0xfeedu) << "the ring routes its CQE; the queue pair leaves it";
  EXPECT_EQ(ring.sqe->uring_cmd_flags, IORING_URING_CMD_FIXED);
  EXPECT_EQ(ring.sqe->buf_index, 5);
  EXPECT_EQ(ring.sqe->fd, fd_);
  EXPECT_EQ(qp_->outstanding(), 1u);
  qp_->Ring();
  EXPECT_EQ(qp_->Poll(sink_, 16), 0u) << "nothing of it on the queue pair's own ring";
  // The CQE, as the frontend's poll hands it over, then once more (a duplicate).
  qp_->OnFixedCompletion(&r, 0);
  qp_->OnFixedCompletion(&r, 0);
  PollFor(1);
  ASSERT_EQ(sink_.done.size(), 1u);
  EXPECT_EQ(sink_.done[0].first, &r);
  EXPECT_TRUE(sink_.done[0].second.ok());
  EXPECT_EQ(qp_->outstanding(), 0u);
  qp_->OnFixedCompletion(&r, 0);  // late: its slot is free now
  EXPECT_EQ(qp_->Poll(sink_, 16), 0u);
  EXPECT_EQ(sink_.done.size(), 1u);
  EXPECT_EQ(qp_->stray_completions(), 2u);
  // Staged (it went to a vfio path meanwhile): the queue pair's own ring and the copy.
  fixed.staged = true;
  ring.borrowed = 0;
  ASSERT_EQ(qp_->Submit(&r), SubmitResult::kOk);
  EXPECT_EQ(ring.borrowed, 0);
  qp_->Ring();
  PollFor(2);
  ASSERT_EQ(sink_.done.size(), 2u);
  EXPECT_EQ(sink_.done[1].second.code(), sc::kInvalidField) << "the memfd refused it: it went there";
}

TEST(UringQueuePairCreateTest, BadOptions) {
  UringQueueOptions o;
  o.signals = std::make_shared<ControllerSignals>();
  o.depth = 0;
  EXPECT_THAT(UringQueuePair::Create(o), umpath::testing::StatusIs(absl::StatusCode::kInvalidArgument));
  o.depth = 8;
  o.signals = nullptr;
  EXPECT_THAT(UringQueuePair::Create(o), umpath::testing::StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace umpath::kernel
