// The signal thread: a signal ends the wait, and so does EndWait (StopAgent); either way
// the end takes the thread down without hanging.
#include "agent/app/signals.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "gtest/gtest.h"

namespace umpath::app {
namespace {

TEST(TerminationSignalsTest, EndWaitEndsTheWaitAsASignalWould) {
  TerminationSignals signals;
  std::thread api([&signals] { signals.EndWait(); });
  signals.Wait();
  api.join();
  EXPECT_EQ(signals.received(), 0);
  signals.EndWait();  // again: nothing more
}  // the signal thread still waits in sigwait: the end wakes it

TEST(TerminationSignalsTest, ASignalEndsTheWaitAndOneAfterEndWaitChangesNothing) {
  {
    TerminationSignals signals;
    ASSERT_EQ(kill(getpid(), SIGTERM), 0);  // blocked in every thread but taken by sigwait
    signals.Wait();
    EXPECT_EQ(signals.received(), SIGTERM);
    signals.EndWait();
    EXPECT_EQ(signals.received(), SIGTERM);
  }
  TerminationSignals signals;
  signals.EndWait();
  ASSERT_EQ(kill(getpid(), SIGINT), 0);
  signals.Wait();
  EXPECT_EQ(signals.received(), 0);
}

// --linger_after_handover: after a stop a successor asked for (EndWait), main waits for
// the signal that the process's own stop sends (a pod's deletion).
TEST(TerminationSignalsTest, WaitForSignalAfterEndWaitLastsUntilTheSignal) {
  TerminationSignals signals;
  signals.EndWait();
  signals.Wait();
  std::atomic<bool> returned{false};
  std::thread lingering([&] {
    signals.WaitForSignal();
    returned = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(returned.load()) << "the linger ended with no signal";
  ASSERT_EQ(kill(getpid(), SIGTERM), 0);
  lingering.join();
  EXPECT_TRUE(returned.load());
  EXPECT_EQ(signals.received(), 0);  // the stop was EndWait's
}

TEST(TerminationSignalsTest, WaitForSignalReturnsAtOnceWhenTheSignalCameFirst) {
  TerminationSignals signals;
  ASSERT_EQ(kill(getpid(), SIGTERM), 0);
  signals.Wait();
  signals.WaitForSignal();
  EXPECT_EQ(signals.received(), SIGTERM);
}

}  // namespace
}  // namespace umpath::app
