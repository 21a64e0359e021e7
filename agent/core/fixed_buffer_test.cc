// Issue 21: a request whose data is a fixed buffer of the frontend's ring (ublk zero
// copy) goes as it is to a queue pair that can borrow that ring (NVMe passthrough), and
// is staged into its DMA buffer, once, before any other (vfio) takes it, failover
// included.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "agent/core/testing/core_fixture.h"

namespace umpath {
namespace {

using ::umpath::testing::CoreFixture;
using ::umpath::testing::TestIo;

// What the frontend saw of its stage hook.
struct StagedIo : TestIo {
  FixedBuffer fixed;
  int stages = 0;
  bool stage_fails = false;
  StagedIo() {
    fixed.index = 7;
    fixed.stage = [](IoRequest* r) {
      auto* io = static_cast<StagedIo*>(static_cast<TestIo*>(r->user));
      ++io->stages;
      return !io->stage_fails;
    };
    req.fixed = &fixed;
  }
};

class FixedBufferTest : public CoreFixture {
 protected:
  // "kern" (passthrough: takes fixed buffers) preferred, "vfio" behind it.
  std::string KernelThenVfio() {
    AddController("kern");
    AddController("vfio");
    Qp("kern").set_takes_fixed_buffers(true);
    auto h = AddPath("kern");
    EXPECT_OK(AddPath("vfio"));
    EXPECT_OK(h);
    Run();
    return *h;
  }
};

TEST_F(FixedBufferTest, APassthroughPathTakesTheFixedBufferWithoutACopy) {
  const std::string head = KernelThenVfio();
  StagedIo io;
  Submit(head, io);
  Run();
  ASSERT_TRUE(io.done);
  EXPECT_TRUE(io.result.ok());
  EXPECT_EQ(Qp("kern").fixed_submits(), 1);
  EXPECT_EQ(io.stages, 0);
  EXPECT_FALSE(io.fixed.staged);
}

TEST_F(FixedBufferTest, FailoverFromKernelToVfioStagesOnceAndKeepsTheCopy) {
  const std::string head = KernelThenVfio();
  StagedIo io;
  // A host path error on the kernel path, whose queue pair then takes nothing (the
  // controller going): the request fails over to the vfio path, which cannot name the
  // fixed buffer.
  Qp("kern").Script({nvme::Status::Make(nvme::status_code::kHostPathError)});
  Submit(head, io);
  Qp("kern").set_gone(true);
  Run();
  ASSERT_TRUE(io.done);
  EXPECT_TRUE(io.result.ok());
  EXPECT_EQ(Qp("kern").fixed_submits(), 1);
  EXPECT_EQ(Qp("vfio").submits(), 1);
  EXPECT_EQ(Qp("vfio").fixed_submits(), 0);
  EXPECT_EQ(io.stages, 1);
  EXPECT_TRUE(io.fixed.staged);  // the frontend copies a read's result out of `data`
}

TEST_F(FixedBufferTest, AVfioOnlyHeadStagesEveryRequestAndAFailedCopyFailsIt) {
  AddController("vfio");
  auto head = AddPath("vfio");
  ASSERT_OK(head);
  Run();
  StagedIo ok, bad;
  bad.stage_fails = true;
  Submit(*head, ok);
  Submit(*head, bad);
  Run();
  ASSERT_TRUE(ok.done && bad.done);
  EXPECT_TRUE(ok.result.ok());
  EXPECT_EQ(ok.stages, 1);
  EXPECT_FALSE(bad.result.ok());
  EXPECT_EQ(bad.result.status.code(), nvme::status_code::kDataTransferError);
  EXPECT_EQ(Qp("vfio").submits(), 1);  // the one whose copy failed never reached it
}

}  // namespace
}  // namespace umpath
