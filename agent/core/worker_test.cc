#include "agent/core/worker.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "agent/base/mutex.h"
#include "agent/base/status_matchers.h"
#include "agent/core/multipath.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace umpath {
namespace {

using ::umpath::testing::StatusIs;

// Waits (really: this is about a started thread) until `pred` holds; false after 10 s.
template <typename Pred>
bool Eventually(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// True once the worker's loop makes no pass at all over a 100 ms window: it is asleep.
// A worker that keeps spinning never gets there (false after 10 s). Waiting for the
// window, rather than checking one, leaves room for the passes a worker legitimately
// makes after its last work (kIdleSpins, then the sleep) on a loaded machine.
bool FallsAsleep(const Worker& w) {
  return Eventually([&] {
    const uint64_t before = w.loop_passes();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    return w.loop_passes() == before;
  });
}

TEST(WorkerTest, IdleWorkerSleepsAndWakesForPostedWork) {
  std::unique_ptr<Worker> w = Worker::Create(Worker::Options{});
  w->Start();
  ASSERT_TRUE(Eventually([&] { return w->sleeps() >= 1; }));
  EXPECT_TRUE(FallsAsleep(*w));

  Notification ran;
  const uint64_t sleeps = w->sleeps();
  w->Post([&ran] { ran.Notify(); });
  ASSERT_TRUE(ran.WaitFor(std::chrono::seconds(10)));
  ASSERT_TRUE(Eventually([&] { return w->sleeps() > sleeps; }));
  EXPECT_TRUE(FallsAsleep(*w));
  w->Stop();
}

// A queue pair whose "device" completes when the test says so and signals an eventfd,
// as an MSI-X vector would. Poll resets the eventfd.
class EventFdQueuePair final : public QueuePair {
 public:
  EventFdQueuePair() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~EventFdQueuePair() override { close(fd_); }

  void CompleteFromDevice() {
    done_.store(true, std::memory_order_release);
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(fd_, &one, sizeof one);
  }

  SubmitResult Submit(IoRequest* req) override {
    held_ = req;
    return SubmitResult::kOk;
  }
  void Ring() override {}
  uint32_t Poll(CompletionSink& sink, uint32_t) override {
    uint64_t v;
    [[maybe_unused]] ssize_t n = read(fd_, &v, sizeof v);
    if (!held_ || !done_.load(std::memory_order_acquire)) return 0;
    IoRequest* r = held_.exchange(nullptr);
    sink.OnCompletion(r, nvme::Status{});
    return 1;
  }
  void AbortAll(CompletionSink& sink) override {
    if (IoRequest* r = held_.exchange(nullptr)) {
      sink.OnCompletion(r, nvme::Status::Make(nvme::status_code::kHostAbortedCommand));
    }
  }
  uint32_t outstanding() const override { return held_ ? 1 : 0; }
  int wake_fd() const override { return fd_; }

 private:
  const int fd_;
  std::atomic<bool> done_{false};
  std::atomic<IoRequest*> held_{nullptr};  // the test reads outstanding()
};

TEST(WorkerTest, SleepsWithIoOutstandingOnAWakeableQueueAndWakesOnItsCompletion) {
  std::unique_ptr<Worker> w = Worker::Create(Worker::Options{});
  MultipathOptions mo;
  mo.workers = {w.get()};
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Multipath> mp, Multipath::Create(mo));
  EventFdQueuePair qp;
  ControllerSpec spec;
  spec.name = "c0";
  spec.subsys_nqn = "nqn.2026-01.io.umpath:idle";
  ASSERT_OK(mp->AddController(spec, nullptr, {&qp}));
  NamespaceSpec ns;
  ns.controller = "c0";
  ns.nsid = 1;
  ns.size_blocks = 1024;
  ASSERT_OK_AND_ASSIGN(std::string head, mp->AddPath(ns));
  const uint64_t uid = mp->GetHead(head)->uid;
  w->Start();

  struct Io {
    IoRequest req;
    Notification done;
    std::atomic<bool> ok{false};
  } io;
  io.req.data_len = 4096;
  io.req.user = &io;
  io.req.on_complete = [](IoRequest* r, IoResult res) {
    auto* me = static_cast<Io*>(r->user);
    me->ok = res.ok();
    me->done.Notify();
  };
  w->Post([&] { w->FindChannel(uid)->Submit(&io.req); });
  ASSERT_TRUE(Eventually([&] { return qp.outstanding() == 1 && w->sleeps() >= 1; }))
      << "outstanding " << qp.outstanding() << ", sleeps " << w->sleeps() << ", done "
      << io.done.HasBeenNotified();
  // A command is outstanding, but the queue can wake the worker: it sleeps.
  EXPECT_TRUE(FallsAsleep(*w));
  EXPECT_FALSE(io.done.HasBeenNotified());

  const uint64_t sleeps = w->sleeps();  // before the wake-up, so the next sleep counts
  qp.CompleteFromDevice();
  ASSERT_TRUE(io.done.WaitFor(std::chrono::seconds(10)));
  EXPECT_TRUE(io.ok);
  ASSERT_TRUE(Eventually([&] { return w->sleeps() > sleeps; }))
      << "sleeps " << w->sleeps() << " passes " << w->loop_passes();
  EXPECT_TRUE(FallsAsleep(*w));
  mp->Shutdown();
  w->Stop();
}

}  // namespace
}  // namespace umpath
