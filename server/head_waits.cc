#include "server/head_waits.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/base/error_reason.h"
#include "server/convert.h"

namespace umpath::server {

namespace {

absl::string_view ConditionName(v1::HeadCondition c) {
  switch (c) {
    case v1::HEAD_CONDITION_EXISTS: return "exists";
    case v1::HEAD_CONDITION_SELECTABLE: return "selectable";
    case v1::HEAD_CONDITION_EXPORTED: return "exported";
    case v1::HEAD_CONDITION_GONE: return "gone";
    default: return "?";
  }
}

bool Holds(v1::HeadCondition c, const v1::Head* h) {
  switch (c) {
    case v1::HEAD_CONDITION_EXISTS: return h != nullptr;
    case v1::HEAD_CONDITION_SELECTABLE: return h != nullptr && h->selectable_paths() > 0;
    case v1::HEAD_CONDITION_EXPORTED: return h != nullptr && !h->export_device().empty();
    case v1::HEAD_CONDITION_GONE: return h == nullptr;
    default: return false;
  }
}

std::string Where(const v1::Head& h) {
  std::string s = absl::StrCat(h.name(), " has ", h.selectable_paths(), " selectable of ", h.paths_size(),
                               " path(s), ", h.export_device().empty() ? "not exported" : h.export_device());
  if (h.removal_pending()) absl::StrAppend(&s, ", removal pending");
  return s;
}

}  // namespace

// One WaitHead call. Finished once: at Open, or by the waits' thread.
class WaitStream final : public grpc::ServerUnaryReactor {
 public:
  WaitStream(HeadWaits* waits, WaitTarget target, std::string caller_key, std::chrono::steady_clock::time_point deadline,
             v1::WaitHeadResponse* resp)
      : waits_(waits), target_(std::move(target)), caller_key_(std::move(caller_key)), deadline_(deadline), resp_(resp) {}

  const WaitTarget& target() const { return target_; }
  std::chrono::steady_clock::time_point deadline() const { return deadline_; }
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }

  // Answers with the head (none for GONE) or the error. Only the first answer counts:
  // the waits' thread and FinishAll may both try.
  void Answer(const absl::StatusOr<HeadWaits::Check>& c) {
    if (!c.ok()) return End(ToGrpc(c.status()));
    if (answered_.exchange(true)) return;
    if (target_.condition != v1::HEAD_CONDITION_GONE) *resp_->mutable_head() = c->head;
    Finish(grpc::Status::OK);
  }
  void End(const grpc::Status& s) {
    if (!answered_.exchange(true)) Finish(s);
  }

  void OnCancel() override {
    cancelled_.store(true, std::memory_order_release);
    waits_->Wake();
  }
  void OnDone() override {
    if (counted_) waits_->Release(caller_key_);
    self_.reset();  // may delete this
  }

  bool counted_ = false;
  std::shared_ptr<WaitStream> self_;  // until gRPC is done with it

 private:
  HeadWaits* const waits_;
  const WaitTarget target_;
  const std::string caller_key_;
  const std::chrono::steady_clock::time_point deadline_;
  v1::WaitHeadResponse* const resp_;
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> answered_{false};
};

HeadWaits::HeadWaits(Multipath* mp, WaitOptions options) : mp_(mp), options_(options) {
  thread_ = std::thread([this] { Loop(); });
}

HeadWaits::~HeadWaits() {
  FinishAll("the agent is shutting down");
  {
    MutexLock l(&mu_);
    stop_ = true;
    cv_.SignalAll();
  }
  thread_.join();
}

size_t HeadWaits::active() const {
  MutexLock l(&mu_);
  return waits_.size();
}

void HeadWaits::Wake() {
  MutexLock l(&mu_);
  dirty_ = true;
  cv_.SignalAll();
}

void HeadWaits::Release(const std::string& caller_key) {
  MutexLock l(&mu_);
  auto it = per_caller_.find(caller_key);
  if (it != per_caller_.end() && --it->second == 0) per_caller_.erase(it);
}

absl::StatusOr<HeadWaits::Check> HeadWaits::Evaluate(const WaitTarget& t) const {
  Check c;
  std::optional<v1::Head> found;
  if (!t.head.empty()) {
    absl::StatusOr<HeadInfo> h = mp_->GetHead(t.head);
    if (h.ok()) {
      found.emplace();
      ToProto(*h, &*found);
    } else if (!absl::IsNotFound(h.status())) {
      return h.status();
    }
  } else {
    std::vector<std::string> names;
    for (const HeadInfo& h : mp_->ListHeads()) {
      if (!t.filter.Matches(h)) continue;
      names.push_back(HeadName(h.name));
      if (!found) ToProto(h, &found.emplace());
    }
    if (names.size() > 1) {
      if (names.size() > 8) names.resize(8), names.push_back("...");
      return WithReason(absl::FailedPreconditionError(absl::StrCat(
                            "the filter matches more than one head (", absl::StrJoin(names, ", "),
                            "); a wait is for one")),
                        reason::kFilterAmbiguous, {{"heads", absl::StrJoin(names, ",")}});
    }
  }
  c.holds = Holds(t.condition, found ? &*found : nullptr);
  if (found) c.head = *found;
  const std::string what = t.head.empty() ? absl::StrCat("no head matches ", t.filter_text)
                                          : absl::StrCat("no head heads/", t.head);
  c.where = found ? Where(*found) : what;
  return c;
}

grpc::ServerUnaryReactor* HeadWaits::Open(grpc::CallbackServerContext* ctx, const Caller& caller, WaitTarget target,
                                          std::chrono::steady_clock::time_point deadline,
                                          v1::WaitHeadResponse* resp) {
  (void)ctx;
  auto w = std::make_shared<WaitStream>(this, std::move(target), caller.key, deadline, resp);
  w->self_ = w;
  // At once when it already holds (or never can as asked).
  absl::StatusOr<Check> now = Evaluate(w->target());
  if (!now.ok() || now->holds) {
    w->Answer(now);
    return w.get();
  }
  grpc::Status refused;
  {
    MutexLock l(&mu_);
    if (closed_) {
      refused = ToGrpc(AgentStoppingError(closed_why_));
    } else if (waits_.size() >= options_.max_waits) {
      refused = ToGrpc(WithReason(absl::ResourceExhaustedError(absl::StrCat(
                                      "at most ", options_.max_waits, " waits at a time; try again later")),
                                  reason::kTooManyWaits, {{"limit", absl::StrCat(options_.max_waits)}}));
    } else if (auto it = per_caller_.find(caller.key);
               it != per_caller_.end() && it->second >= options_.max_waits_per_caller) {
      refused = ToGrpc(WithReason(absl::ResourceExhaustedError(absl::StrCat(
                                      "at most ", options_.max_waits_per_caller, " waits per caller (",
                                      caller.key, ") at a time")),
                                  reason::kTooManyWaits,
                                  {{"limit", absl::StrCat(options_.max_waits_per_caller)}, {"perCaller", "true"}}));
    } else {
      ++per_caller_[caller.key];
      w->counted_ = true;
      waits_.push_back(w);
      dirty_ = true;  // what changed between the check above and now is looked at again
      cv_.SignalAll();
    }
  }
  // Outside the lock: gRPC may run OnDone (which takes it) before Finish returns.
  if (!refused.ok()) w->End(refused);
  return w.get();
}

void HeadWaits::FinishAll(absl::string_view why) {
  std::vector<std::shared_ptr<WaitStream>> all;
  {
    MutexLock l(&mu_);
    closed_ = true;
    closed_why_ = std::string(why);
    all.swap(waits_);
  }
  for (auto& w : all) w->End(ToGrpc(AgentStoppingError(why)));
}

void HeadWaits::Loop() {
  std::shared_ptr<EventSubscription> sub;
  for (;;) {
    std::vector<std::shared_ptr<WaitStream>> waits;
    {
      MutexLock l(&mu_);
      for (;;) {
        if (stop_) return;
        if (dirty_) break;
        if (waits_.empty()) {
          sub.reset();  // nothing waits: the journal need not wake this thread
          cv_.Wait(&mu_);
          continue;
        }
        auto next = std::min_element(waits_.begin(), waits_.end(), [](const auto& a, const auto& b) {
                      return a->deadline() < b->deadline();
                    })->get()->deadline();
        const auto now = std::chrono::steady_clock::now();
        if (next <= now) break;
        cv_.WaitFor(&mu_, next - now);
      }
      dirty_ = false;
      waits = waits_;
    }
    // Outside the lock: the journal calls Wake under its own, and the core's comes first.
    if (!waits.empty()) {
      if (sub != nullptr && !sub->Take(1 << 16).ok()) sub.reset();  // fell behind: follow anew
      if (sub == nullptr) {
        auto s = mp_->journal().Subscribe(mp_->journal().current_revision(), 64, [this] { Wake(); });
        if (s.ok()) sub = std::move(*s);
      }
    }
    const auto now = std::chrono::steady_clock::now();
    std::vector<std::shared_ptr<WaitStream>> done;
    for (const auto& w : waits) {
      if (w->cancelled()) {
        w->End(ToGrpc(absl::CancelledError("cancelled")));
        done.push_back(w);
        continue;
      }
      absl::StatusOr<Check> c = Evaluate(w->target());
      if (!c.ok() || c->holds) {
        w->Answer(c);
        done.push_back(w);
      } else if (w->deadline() <= now) {
        w->End(ToGrpc(WithReason(absl::DeadlineExceededError(absl::StrCat(
                                     "not ", ConditionName(w->target().condition), " before the timeout: ",
                                     c->where)),
                                 reason::kWaitTimedOut,
                                 {{"head", !c->head.name().empty() ? c->head.name()
                                                                    : w->target().head.empty()
                                                                        ? std::string()
                                                                        : HeadName(w->target().head)},
                                  {"condition", v1::HeadCondition_Name(w->target().condition)}})));
        done.push_back(w);
      }
    }
    if (done.empty()) continue;
    MutexLock l(&mu_);
    waits_.erase(std::remove_if(waits_.begin(), waits_.end(),
                                [&](const auto& w) { return std::find(done.begin(), done.end(), w) != done.end(); }),
                 waits_.end());
  }
}

}  // namespace umpath::server
