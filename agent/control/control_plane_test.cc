#include "agent/control/control_plane.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <vector>

#include "agent/base/mutex.h"
#include "agent/base/status_matchers.h"

namespace umpath {
namespace {

using ::testing::ElementsAre;

TEST(ControlPlaneTest, TasksRunInOrderOnOneThread) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ControlPlane> plane, ControlPlane::Create());
  plane->Start();
  std::vector<int> order;  // only the control thread touches it
  std::atomic<int> off_thread{0};
  for (int i = 0; i < 100; ++i) {
    plane->Post([&, i] {
      if (!plane->OnControlThread()) ++off_thread;
      order.push_back(i);
    });
  }
  std::vector<int> seen;
  plane->Run([&] { seen = order; });
  ASSERT_EQ(seen.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(seen[i], i);
  EXPECT_EQ(off_thread.load(), 0);
  EXPECT_FALSE(plane->OnControlThread());
}

TEST(ControlPlaneTest, TimersFireInDeadlineOrderOnTheInjectedClock) {
  ManualClock clock;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ControlPlane> plane, ControlPlane::Create(&clock));
  std::vector<std::string> fired;
  plane->After(2'000'000'000, [&] { fired.push_back("2s"); });
  plane->After(1'000'000'000, [&] { fired.push_back("1s"); });
  const ControlPlane::TimerId cancelled = plane->After(1'500'000'000, [&] { fired.push_back("x"); });
  plane->After(1'000'000'000, [&] { fired.push_back("1s-second"); });
  plane->Cancel(cancelled);
  plane->RunPending();
  EXPECT_TRUE(fired.empty()) << "a timer fired before its time";
  clock.Advance(1'000'000'000);
  plane->RunPending();
  EXPECT_THAT(fired, ElementsAre("1s", "1s-second"));
  clock.Advance(5'000'000'000);
  plane->RunPending();
  EXPECT_THAT(fired, ElementsAre("1s", "1s-second", "2s"));
}

TEST(ControlPlaneTest, AWatchedFileCallsBackWhileReadable) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ControlPlane> plane, ControlPlane::Create());
  const int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  int calls = 0;
  ASSERT_OK(plane->Watch(fd, [&] {
    uint64_t v;
    if (read(fd, &v, sizeof v) == sizeof v) ++calls;
  }));
  plane->RunPending();
  EXPECT_EQ(calls, 0);
  const uint64_t one = 1;
  ASSERT_EQ(write(fd, &one, sizeof one), 8);
  plane->RunPending();
  EXPECT_EQ(calls, 1);
  plane->Unwatch(fd);
  ASSERT_EQ(write(fd, &one, sizeof one), 8);
  plane->RunPending();
  EXPECT_EQ(calls, 1) << "an unwatched file still called back";
  EXPECT_FALSE(plane->Watch(-1, [] {}).ok());
  close(fd);
}

// A blocking call does not hold the control thread: tasks posted meanwhile run, and
// its result comes back as a task.
TEST(ControlPlaneTest, OffloadedCallsDoNotBlockTheControlThread) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ControlPlane> plane, ControlPlane::Create());
  plane->Start();
  Notification release, result;
  std::atomic<bool> result_on_control{false};
  plane->Offload([&]() -> ControlPlane::Task {
    release.WaitFor(std::chrono::seconds(30));
    return [&] {
      result_on_control = plane->OnControlThread();
      result.Notify();
    };
  });
  bool ran = false;
  plane->Run([&] { ran = true; });  // would hang if the call held the thread
  EXPECT_TRUE(ran);
  EXPECT_FALSE(result.HasBeenNotified());
  release.Notify();
  ASSERT_TRUE(result.WaitFor(std::chrono::seconds(30)));
  EXPECT_TRUE(result_on_control.load());
}

TEST(ControlPlaneTest, StopRunsWhatIsQueuedAndDropsLaterPosts) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ControlPlane> plane, ControlPlane::Create());
  plane->Start();
  std::atomic<int> ran{0};
  Notification gate;
  plane->Post([&] {
    gate.WaitFor(std::chrono::seconds(30));
    ++ran;
  });
  plane->Post([&] { ++ran; });
  gate.Notify();
  plane->Stop();
  EXPECT_EQ(ran.load(), 2);
  plane->Post([&] { ++ran; });
  plane->Stop();
  EXPECT_EQ(ran.load(), 2);
  // Run on a stopped plane runs on the caller: nothing else runs there any more.
  plane->Run([&] { ++ran; });
  EXPECT_EQ(ran.load(), 3);
}

}  // namespace
}  // namespace umpath
