#pragma once

#include <deque>
#include <string>
#include <vector>

#include "agent/core/queue_pair.h"
#include "agent/nvme/wire.h"

namespace umpath::testing {

// A queue pair that completes commands with scripted statuses: the seam every core
// test drives I/O through. Commands become visible to Poll only after Ring(), as on a
// real controller.
class FakeQueuePair final : public QueuePair {
 public:
  explicit FakeQueuePair(std::string name = "") : name_(std::move(name)) {}

  // Statuses for the next completions, in order; success once the script runs out.
  void Script(std::vector<nvme::Status> statuses) {
    script_.insert(script_.end(), statuses.begin(), statuses.end());
  }
  // While held, commands stay outstanding (a slow or silent controller).
  void set_hold(bool hold) { hold_ = hold; }
  void set_capacity(uint32_t capacity) { capacity_ = capacity; }
  void set_gone(bool gone) { gone_ = gone; }
  // As io_uring passthrough: a command given to the layer below is never completed by
  // AbortAll; it stays outstanding until Poll reaps it.
  void set_lower_layer_owns(bool owns) { lower_layer_owns_ = owns; }
  // As io_uring passthrough too: a request whose data is a fixed buffer is taken as it
  // is (the fake records whether it still was one when it came).
  void set_takes_fixed_buffers(bool takes) { takes_fixed_ = takes; }
  bool TakesFixedBuffers() const override { return takes_fixed_; }
  int fixed_submits() const { return fixed_submits_; }

  SubmitResult Submit(IoRequest* req) override {
    if (gone_) return SubmitResult::kGone;
    if (pending_.size() + rung_.size() >= capacity_) return SubmitResult::kBusy;
    pending_.push_back(req);
    ++submits_;
    if (req->fixed != nullptr && !req->fixed->staged) ++fixed_submits_;
    return SubmitResult::kOk;
  }
  void Ring() override {
    ++rings_;
    rung_.insert(rung_.end(), pending_.begin(), pending_.end());
    pending_.clear();
  }
  uint32_t Poll(CompletionSink& sink, uint32_t max) override {
    if (hold_) return 0;
    uint32_t n = 0;
    while (n < max && !rung_.empty()) {
      IoRequest* r = rung_.front();
      rung_.pop_front();
      nvme::Status s;
      if (!script_.empty()) {
        s = script_.front();
        script_.pop_front();
      }
      ++n;
      ++completions_;
      sink.OnCompletion(r, s);
    }
    return n;
  }
  void AbortAll(CompletionSink& sink) override {
    gone_ = true;
    Ring();
    ++abort_calls_;
    if (lower_layer_owns_) return;
    while (!rung_.empty()) {
      IoRequest* r = rung_.front();
      rung_.pop_front();
      ++aborted_;
      sink.OnCompletion(r, nvme::Status::Make(nvme::status_code::kHostAbortedCommand));
    }
  }
  uint32_t outstanding() const override {
    return static_cast<uint32_t>(pending_.size() + rung_.size());
  }

  const std::string& name() const { return name_; }
  uint64_t submits() const { return submits_; }
  uint64_t completions() const { return completions_; }
  uint64_t rings() const { return rings_; }
  uint64_t aborted() const { return aborted_; }
  uint64_t abort_calls() const { return abort_calls_; }

 private:
  std::string name_;
  std::deque<nvme::Status> script_;
  std::vector<IoRequest*> pending_;
  std::deque<IoRequest*> rung_;
  bool hold_ = false;
  bool gone_ = false;
  bool lower_layer_owns_ = false;
  bool takes_fixed_ = false;
  int fixed_submits_ = 0;
  uint32_t capacity_ = 1024;
  uint64_t submits_ = 0, completions_ = 0, rings_ = 0, aborted_ = 0, abort_calls_ = 0;
};

}  // namespace umpath::testing
