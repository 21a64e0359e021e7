#include "agent/app/ops.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "agent/base/error_reason.h"

namespace umpath::app {

namespace {

constexpr absl::string_view kStopping = "the agent is stopping";

// `done` is called exactly once: by the task, or here when the plane no longer runs
// tasks.
template <typename T, typename Fn>
void OnPlane(ControlPlane* plane, server::OpDone<T> done, Fn fn) {
  auto shared = std::make_shared<server::OpDone<T>>(std::move(done));
  if (!plane->Post([shared, fn = std::move(fn)]() mutable { fn(std::move(*shared)); })) {
    std::move (*shared)(AgentStoppingError(kStopping));
  }
}

// How long an attach (or a simulated return) waits for a controller of the same name
// that is still being let go: its removal event comes before the workers have let go of
// its queue pairs, and a caller that acts on the event should not have to retry.
constexpr int64_t kLetGoWaitNs = 10'000'000'000;

// On the control thread: `then` now, or once the controller of that name that is
// leaving has gone (on the control thread too); UNAVAILABLE if it takes too long.
template <typename T, typename Fn>
void OnceLetGo(ControllerSupervisor* sup, const std::string& name, server::OpDone<T> done, Fn then) {
  if (!sup->Known(name) || sup->Find(name) != nullptr) return then(std::move(done));
  sup->WhenGone(name, kLetGoWaitNs,
                [name, done = std::move(done), then = std::move(then)](bool gone) mutable {
                  if (!gone) {
                    return std::move(done)(WithReason(
                        absl::UnavailableError(absl::StrCat(name, " is still being let go after ",
                                                            kLetGoWaitNs / 1'000'000'000, " s; try again")),
                        reason::kControllerRetiring, {{"controller", name}}));
                  }
                  then(std::move(done));
                });
}

}  // namespace

void BackendControllerOps::Attach(const AttachSpec& spec,
                                  server::OpDone<absl::StatusOr<std::string>> done) {
  auto remembering = [this, spec, done = std::move(done)](absl::StatusOr<std::string> r) mutable {
    if (r.ok()) Remember(*r, spec);
    std::move(done)(std::move(r));
  };
  OnPlane(plane_, server::OpDone<absl::StatusOr<std::string>>(std::move(remembering)),
          [this, spec](server::OpDone<absl::StatusOr<std::string>> d) { AttachOnPlane(spec, std::move(d)); });
}

void BackendControllerOps::Remember(const std::string& name, const AttachSpec& spec) {
  if (remembered_ == nullptr || spec.transport == "kernel") return;
  if (absl::Status s = remembered_->Remember(name, spec); !s.ok()) {
    Log(absl::StrCat("controller ", name, " is attached but not remembered for the next agent: ", s.message()));
  }
}

void BackendControllerOps::ReattachRemembered(absl::AnyInvocable<void(int, int) &&> done) {
  struct Tally {
    int left = 0, attached = 0, failed = 0;
    Mutex mu;
    absl::AnyInvocable<void(int, int) &&> done;
  };
  std::vector<server::AttachmentStore::Entry> all =
      remembered_ != nullptr ? remembered_->List() : std::vector<server::AttachmentStore::Entry>{};
  if (all.empty()) return std::move(done)(0, 0);
  auto tally = std::make_shared<Tally>();
  tally->left = static_cast<int>(all.size());
  tally->done = std::move(done);
  for (const server::AttachmentStore::Entry& e : all) {
    OnPlane(plane_, server::OpDone<absl::StatusOr<std::string>>([this, e, tally](absl::StatusOr<std::string> r) {
              bool ok = r.ok() || absl::IsAlreadyExists(r.status());
              if (r.ok() && *r != e.name) {
                // Named anew (a fabrics controller's nvmeN): the entry follows.
                (void)remembered_->Forget(e.name);
                Remember(*r, e.spec);
              }
              Log(ok ? absl::StrCat("controller ", r.ok() ? *r : e.name, " (", e.spec.transport, " ",
                                    e.spec.address, ") attached again, as the last agent had it")
                     : absl::StrCat("controller ", e.name, " (", e.spec.transport, " ", e.spec.address,
                                    ") not attached again: ", r.status().message(),
                                    "; kept for the next start (detach it to forget it)"));
              int left, attached, failed;
              {
                MutexLock l(&tally->mu);
                (ok ? tally->attached : tally->failed)++;
                left = --tally->left;
                attached = tally->attached;
                failed = tally->failed;
              }
              if (left == 0) std::move(tally->done)(attached, failed);
            }),
            [this, spec = e.spec](server::OpDone<absl::StatusOr<std::string>> d) { AttachOnPlane(spec, std::move(d)); });
  }
}

void BackendControllerOps::AttachOnPlane(const AttachSpec& spec,
                                         server::OpDone<absl::StatusOr<std::string>> done) {
  if (spec.transport == "pcie") {
    if (!spec.fabrics.empty()) {
      return std::move(done)(absl::InvalidArgumentError(absl::StrCat(
          "fabrics options (", spec.fabrics.Names(), ") are for tcp, rdma, fc or loop, not pcie")));
    }
    if (vm_ == nullptr) {
      return std::move(done)(WithReason(
          absl::FailedPreconditionError("this agent has no vfio backend (start it with --vfio_devices)"),
          reason::kBackendMissing, {{"backend", "vfio"}}));
    }
    return OnceLetGo(sup_, spec.address, std::move(done),
                     [this, address = spec.address](server::OpDone<absl::StatusOr<std::string>> d) {
                       if (absl::Status s = vm_->Attach(address); !s.ok()) return std::move(d)(s);
                       std::move(d)(address);
                     });
  }
  if (kb_ == nullptr) {
    return std::move(done)(WithReason(absl::FailedPreconditionError(absl::StrCat(
                                          "transport \"", spec.transport,
                                          "\" needs the kernel backend, off here (--kernel=false)")),
                                      reason::kBackendMissing, {{"backend", "kernel"}}));
  }
  if (spec.transport == "kernel") {
    // Claimed by name: a controller of that name detached a moment ago goes first.
    const std::string name(absl::StripPrefix(spec.address, "/dev/"));
    return OnceLetGo(sup_, name, std::move(done), [this, spec](server::OpDone<absl::StatusOr<std::string>> d) {
      kb_->Attach(spec.transport, spec.address, spec.service, spec.subsystem_nqn, spec.fabrics, std::move(d));
    });
  }
  kb_->Attach(spec.transport, spec.address, spec.service, spec.subsystem_nqn, spec.fabrics, std::move(done));
}

void BackendControllerOps::Detach(const std::string& controller, server::OpDone<absl::Status> done) {
  // Detached, or not attached but remembered (the last start could not attach it): it
  // is forgotten, and that is a success.
  auto forgetting = [this, controller, done = std::move(done)](absl::Status s) mutable {
    if (remembered_ != nullptr && (s.ok() || absl::IsNotFound(s)) && remembered_->Has(controller)) {
      if (absl::Status f = remembered_->Forget(controller); !f.ok()) {
        Log(absl::StrCat("controller ", controller, " detached, but still remembered: ", f.message()));
      }
      s = absl::OkStatus();
    }
    std::move(done)(std::move(s));
  };
  OnPlane(plane_, server::OpDone<absl::Status>(std::move(forgetting)), [this, controller](server::OpDone<absl::Status> d) {
    if (kb_ != nullptr && kb_->Owns(controller)) {
      return kb_->Detach(controller, "detached through the API", std::move(d));
    }
    std::move(d)(sup_->Detach(controller, "detached through the API"));
  });
}

void BackendControllerOps::Reset(const std::string& controller, server::OpDone<absl::Status> done) {
  OnPlane(plane_, std::move(done), [this, controller](server::OpDone<absl::Status> d) {
    std::move(d)(sup_->Reset(controller, "reset requested through the API"));
  });
}

void SimFaultOps::Inject(const std::string& controller, const sim::SimFault& fault,
                         server::OpDone<absl::StatusOr<sim::SimControllerInfo>> done) {
  OnPlane(plane_, std::move(done),
          [this, controller, fault](server::OpDone<absl::StatusOr<sim::SimControllerInfo>> d) {
            auto inject = [this, controller, fault](server::OpDone<absl::StatusOr<sim::SimControllerInfo>> d) {
              if (absl::Status s = sim_->Inject(controller, fault); !s.ok()) return std::move(d)(s);
              std::move(d)(sim_->Describe(controller));
            };
            // A return just after a loss or a detach: the old one goes first.
            if (fault.kind != sim::SimFault::Kind::kReturn) return inject(std::move(d));
            OnceLetGo(sup_, controller, std::move(d), std::move(inject));
          });
}

void SimFaultOps::Clear(const std::string& controller,
                        server::OpDone<absl::StatusOr<sim::SimControllerInfo>> done) {
  OnPlane(plane_, std::move(done), [this, controller](server::OpDone<absl::StatusOr<sim::SimControllerInfo>> d) {
    if (absl::Status s = sim_->ClearFaults(controller); !s.ok()) return std::move(d)(s);
    std::move(d)(sim_->Describe(controller));
  });
}

void SimFaultOps::List(server::OpDone<absl::StatusOr<std::vector<sim::SimControllerInfo>>> done) {
  OnPlane(plane_, std::move(done), [this](server::OpDone<absl::StatusOr<std::vector<sim::SimControllerInfo>>> d) {
    std::move(d)(sim_->DescribeAll());
  });
}

void UblkExportOps::Set(ublk::Exporter* e) {
  MutexLock l(&mu_);
  e_ = e;
}

void UblkExportOps::Unavailable(std::string why) {
  MutexLock l(&mu_);
  why_not_ = std::move(why);
}

ublk::Exporter* UblkExportOps::exporter() {
  MutexLock l(&mu_);
  return e_;
}

ublk::Exporter* UblkExportOps::Get(std::string* why_not) {
  MutexLock l(&mu_);
  *why_not = why_not_;
  return e_;
}

void UblkExportOps::Export(const std::string& head,
                           server::OpDone<absl::StatusOr<ExportedDevice>> done) {
  std::string why_not;
  ublk::Exporter* e = Get(&why_not);
  if (e == nullptr) {
    return std::move(done)(WithReason(absl::FailedPreconditionError(why_not), reason::kBackendMissing,
                                      {{"backend", "ublk"}, {"why", why_not}}));
  }
  e->Export(head, std::move(done));
}

std::optional<BufferBudgetInfo> UblkExportOps::Budget() {
  MutexLock l(&mu_);
  if (e_ == nullptr || !e_->pooled()) return std::nullopt;
  const ublk::PinnedMemory m = e_->Pinned();
  return BufferBudgetInfo{m.bytes, m.budget_bytes, m.buffer_bytes, m.heads_left};
}

void UblkExportOps::Unexport(const std::string& head, server::OpDone<absl::Status> done) {
  std::string why_not;
  ublk::Exporter* e = Get(&why_not);
  if (e == nullptr) {
    return std::move(done)(WithReason(absl::FailedPreconditionError(why_not), reason::kBackendMissing,
                                      {{"backend", "ublk"}, {"why", why_not}}));
  }
  e->Unexport(head, std::move(done));
}

bool StopChoice::Request(ublk::StopMode mode, std::string by, bool for_successor) {
  MutexLock l(&mu_);
  if (decided_) return false;
  decided_ = Decided{mode, true, std::move(by), for_successor};
  return true;
}

StopChoice::Decided StopChoice::Decide(std::string by) {
  MutexLock l(&mu_);
  if (!decided_) decided_ = Decided{configured_, false, std::move(by)};
  return *decided_;
}

bool StopChoice::decided() const {
  MutexLock l(&mu_);
  return decided_.has_value();
}

void AgentStopOps::Stop(const Request& request, server::OpDone<absl::Status> done) {
  const ublk::StopMode mode = !request.remove ? ublk::StopMode::kHandOver
                              : request.force ? ublk::StopMode::kForceRemove
                                              : ublk::StopMode::kRemove;
  if (choice_->decided()) return std::move(done)(AgentStoppingError(kStopping));
  ublk::Exporter* e = exports_ != nullptr ? exports_->exporter() : nullptr;
  if (e == nullptr || request.force) return Decide(mode, request.caller, std::move(done));
  // The exporter checks again as the stop begins, and hands over a device in use by then.
  e->CheckStop(mode, [this, mode, caller = request.caller,
                      done = std::move(done)](absl::Status s) mutable {
    if (!s.ok()) return std::move(done)(s);
    Decide(mode, caller, std::move(done));
  });
}

void AgentStopOps::Decide(ublk::StopMode mode, const std::string& caller,
                          server::OpDone<absl::Status> done) {
  if (!choice_->Request(mode, absl::StrCat("StopAgent from ", caller))) {
    return std::move(done)(AgentStoppingError(kStopping));
  }
  std::move(done)(absl::OkStatus());
  wake_();
}

}  // namespace umpath::app
