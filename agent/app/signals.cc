#include "agent/app/signals.h"

#include <pthread.h>
#include <signal.h>

namespace umpath::app {

namespace {
sigset_t Terminating() {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGINT);
  sigaddset(&s, SIGTERM);
  return s;
}
}  // namespace

TerminationSignals::TerminationSignals(std::function<void()> on_signal)
    : on_signal_(std::move(on_signal)) {
  ::signal(SIGPIPE, SIG_IGN);
  const sigset_t s = Terminating();
  pthread_sigmask(SIG_BLOCK, &s, nullptr);
  thread_ = std::thread([this] {
    const sigset_t s = Terminating();
    int sig = 0;
    sigwait(&s, &sig);
    if (!ended_.exchange(true)) {
      signal_ = sig;
      if (on_signal_) on_signal_();
      signalled_.Notify();
    }
    done_.Notify();
  });
}

void TerminationSignals::EndWait() {
  if (!ended_.exchange(true)) signalled_.Notify();
}

TerminationSignals::~TerminationSignals() {
  EndWait();
  if (!done_.HasBeenNotified()) {
    // To the waiting thread alone: the signal is blocked there, so sigwait takes it (and
    // one sent before it waits stays pending for it).
    pthread_kill(thread_.native_handle(), SIGTERM);
  }
  thread_.join();
}

}  // namespace umpath::app
