// The races SEMANTICS.md names, with real worker threads (run under TSan in CI):
// re-add racing expiry, concurrent last-path removals, shutdown with a removal pending,
// and topology churn under closed-loop I/O.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "agent/base/mutex.h"
#include "agent/core/testing/core_fixture.h"

namespace umpath {
namespace {

using ::umpath::testing::CoreFixture;
using ::umpath::testing::TestIo;

// Re-add racing expiry: the re-add either cancels the removal (same head) or finds the
// head gone (a new one); never both, never neither.
class RaceTest : public CoreFixture {};

TEST_F(RaceTest, ReAddRacesExpiry) {
  int cancelled = 0, replaced = 0;
  for (int round = 0; round < 200; ++round) {
    Build(1, {});
    qps_.clear();
    backends_.clear();
    AddController("c0");
    ASSERT_OK_AND_ASSIGN(std::string head, AddPath("c0"));
    ASSERT_OK(mp_->SetDelayedRemoval(head, 1));
    const uint64_t uid = mp_->GetHead(head)->uid;
    ASSERT_OK(mp_->RemovePath("c0", 1));
    Run();
    TestIo io;
    Submit(head, io);
    Run();
    ASSERT_FALSE(io.done);
    const uint64_t rev = mp_->journal().current_revision();
    clock_.AdvanceSeconds(1);  // the deadline is now
    std::atomic<bool> go{false};
    std::thread expire([&] {
      while (!go.load()) {
      }
      mp_->RunPending();
    });
    std::thread readd([&] {
      while (!go.load()) {
      }
      ASSERT_OK(AddPath("c0"));
    });
    go = true;
    expire.join();
    readd.join();
    Run();
    ASSERT_TRUE(io.done);
    std::vector<EventType> types = TypesSince(rev);
    const bool was_cancelled =
        std::count(types.begin(), types.end(), EventType::kRemovalCancelled) == 1;
    const bool was_removed =
        std::count(types.begin(), types.end(), EventType::kHeadRemoved) == 1;
    ASSERT_NE(was_cancelled, was_removed) << "round " << round;
    ASSERT_EQ(mp_->ListHeads().size(), 1u);
    if (was_cancelled) {
      ++cancelled;
      EXPECT_EQ(mp_->GetHead(head)->uid, uid);
      EXPECT_TRUE(io.result.ok());
    } else {
      ++replaced;
      EXPECT_NE(mp_->GetHead(head)->uid, uid);
      EXPECT_EQ(io.result.error, IoError::kHeadRemoved);
    }
    mp_->Shutdown();
    Run();
  }
  // Both outcomes are legal; print which happened (the scheduler decides).
  std::printf("re-add won %d times, expiry won %d times\n", cancelled, replaced);
}

TEST_F(RaceTest, ConcurrentLastPathRemovalsArmOnce) {
  for (int round = 0; round < 200; ++round) {
    Build(1, {});
    qps_.clear();
    backends_.clear();
    AddController("c0");
    AddController("c1");
    ASSERT_OK_AND_ASSIGN(std::string head, AddPath("c0"));
    ASSERT_OK(AddPath("c1"));
    ASSERT_OK(mp_->SetDelayedRemoval(head, 30));
    const uint64_t rev = mp_->journal().current_revision();
    std::atomic<bool> go{false};
    std::thread a([&] {
      while (!go.load()) {
      }
      ASSERT_OK(mp_->RemoveController("c0"));
    });
    std::thread b([&] {
      while (!go.load()) {
      }
      ASSERT_OK(mp_->RemovePath("c1", 1));
    });
    go = true;
    a.join();
    b.join();
    std::vector<EventType> types = TypesSince(rev);
    ASSERT_EQ(std::count(types.begin(), types.end(), EventType::kRemovalScheduled), 1)
        << "round " << round;
    ASSERT_TRUE(mp_->GetHead(head)->removal_pending);
    mp_->Shutdown();
    Run();
  }
}

// Closed-loop I/O on started workers: each completion resubmits until told to stop.
struct IoLoop {
  static constexpr int kDepth = 16;
  IoRequest reqs[kDepth];
  Channel* channel = nullptr;
  std::atomic<bool> stop{false};
  std::atomic<int> outstanding{0};
  std::atomic<uint64_t> ok{0}, errors{0};
  Notification drained;

  static void Done(IoRequest* r, IoResult res) {
    auto* loop = static_cast<IoLoop*>(r->user);
    (res.ok() ? loop->ok : loop->errors).fetch_add(1, std::memory_order_relaxed);
    if (!loop->stop.load(std::memory_order_relaxed)) {
      loop->channel->Submit(r);
      return;
    }
    if (loop->outstanding.fetch_sub(1) == 1) loop->drained.Notify();
  }
  void Start(Worker* w, uint64_t head_uid) {
    w->Post([this, w, head_uid] {
      channel = w->FindChannel(head_uid);
      outstanding = kDepth;
      for (IoRequest& r : reqs) {
        r.opcode = nvme::IoOpcode::kRead;
        r.blocks = 8;
        r.data_len = 4096;
        r.user = this;
        r.on_complete = &IoLoop::Done;
        channel->Submit(&r);
      }
    });
  }
};

TEST_F(RaceTest, TopologyChurnUnderIoLosesNothing) {
  Build(2, {10, 20});
  AddController("c0", 0);
  AddController("c1", 1);
  ASSERT_OK_AND_ASSIGN(std::string head, AddPath("c0"));
  ASSERT_OK(AddPath("c1"));
  const uint64_t uid = mp_->GetHead(head)->uid;
  mp_->Start();  // fences advance on the core's timer, as in the agent
  for (auto& w : workers_) w->Start();
  IoLoop loops[2];
  for (int i = 0; i < 2; ++i) loops[i].Start(workers_[i].get(), uid);

  // c0 stays; c1 comes and goes; policies and ANA-free state flip underneath the I/O.
  const char* policies[] = {"numa", "round-robin", "queue-depth"};
  for (int round = 0; round < 60; ++round) {
    ASSERT_OK(mp_->SetPolicy(head, policies[round % 3]));
    ASSERT_OK(mp_->SetControllerState("c1", ControllerState::kResetting));
    ASSERT_OK(mp_->SetControllerState("c1", ControllerState::kLive));
    ASSERT_OK(mp_->FailPath(head, "c0", "maintenance"));
    ASSERT_OK(mp_->ReinstatePath(head, "c0"));
    if (round % 10 == 9) {
      ASSERT_OK(mp_->RemoveController("c1"));
      ControllerSpec spec;
      spec.name = "c1";
      spec.subsys_nqn = "nqn.2026-01.io.umpath:subsys0";
      spec.numa_node = 1;
      // The old queue pairs may still be in a worker's hands until it processes the
      // removal; new ones are made for the new controller.
      std::vector<QueuePair*> qps;
      for (size_t i = 0; i < workers_.size(); ++i) {
        qps_["c1-" + std::to_string(round)].push_back(
            std::make_unique<testing::FakeQueuePair>("c1"));
        qps.push_back(qps_["c1-" + std::to_string(round)].back().get());
      }
      auto backend = std::make_unique<testing::FakeBackend>(mp_.get(), "c1");
      ASSERT_OK(mp_->AddController(spec, backend.get(), qps));
      backends_["c1-" + std::to_string(round)] = std::move(backend);
      ASSERT_OK(AddPath("c1"));
    }
  }
  for (auto& l : loops) l.stop = true;
  for (auto& l : loops) ASSERT_TRUE(l.drained.WaitFor(std::chrono::seconds(60)));
  for (auto& w : workers_) w->Stop();
  uint64_t ok = 0;
  for (auto& l : loops) {
    EXPECT_EQ(l.errors.load(), 0u);
    ok += l.ok.load();
  }
  EXPECT_GT(ok, 0u);
  ASSERT_OK_AND_ASSIGN(HeadInfo info, mp_->GetHead(head));
  for (const PathInfo& p : info.paths) EXPECT_EQ(p.counters.in_flight, 0) << p.name;
}

TEST_F(RaceTest, ShutdownWithARemovalPendingAndStartedThreads) {
  Build(2, {});
  AddController("c0");
  ASSERT_OK_AND_ASSIGN(std::string head, AddPath("c0"));
  ASSERT_OK(mp_->SetDelayedRemoval(head, 3600));
  const uint64_t uid = mp_->GetHead(head)->uid;
  mp_->Start();
  for (auto& w : workers_) w->Start();
  ASSERT_OK(mp_->RemoveController("c0"));
  TestIo ios[2];
  std::atomic<int> done{0};
  for (int i = 0; i < 2; ++i) {
    ios[i].req.user = &done;
    ios[i].req.on_complete = [](IoRequest* r, IoResult res) {
      EXPECT_EQ(res.error, IoError::kShutdown);
      static_cast<std::atomic<int>*>(r->user)->fetch_add(1);
    };
    Worker* w = workers_[i].get();
    w->Post([w, uid, r = &ios[i].req] { w->FindChannel(uid)->Submit(r); });
  }
  mp_->Shutdown();
  for (auto& w : workers_) w->Stop();
  EXPECT_EQ(done.load(), 2);
}

}  // namespace
}  // namespace umpath
