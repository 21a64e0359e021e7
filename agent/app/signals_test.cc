// The signal thread: a signal ends the wait, and so does EndWait (StopAgent); either way
// the end takes the thread down without hanging.
#include "agent/app/signals.h"

#include <signal.h>
#include <unistd.h>

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

}  // namespace
}  // namespace umpath::app
