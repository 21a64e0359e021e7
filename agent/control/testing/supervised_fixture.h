#pragma once

#include <memory>
#include <string>
#include <vector>

#include "agent/control/control_plane.h"
#include "agent/control/supervisor.h"
#include "agent/core/testing/core_fixture.h"

namespace umpath::testing {

// The core's fixture with a control plane on its manual clock, driven by hand, and a
// supervisor on it: orchestration without a thread or a VM.
class SupervisedFixture : public CoreFixture {
 protected:
  void SetUp() override {
    CoreFixture::SetUp();
    auto plane = ControlPlane::Create(&clock_);
    ASSERT_OK(plane);
    plane_ = std::move(*plane);
    SupervisorOptions so;
    so.health_interval_ms = 1000;
    so.log = [this](const std::string& line) { log_.push_back(line); };
    sup_ = std::make_unique<ControllerSupervisor>(mp_.get(), plane_.get(), so);
  }
  // The supervisor goes once the core has (its controllers may still be named there).
  void TearDown() override {
    CoreFixture::TearDown();
    mp_.reset();
    sup_.reset();
  }
  // A controller below the supervisor, with one fake queue pair per worker.
  void Supervise(const std::string& name, std::unique_ptr<ControllerDriver> driver,
                 uint16_t cqt_ms = 0) {
    ControllerSpec spec;
    spec.name = name;
    spec.subsys_nqn = "nqn.2026-01.io.umpath:subsys0";
    spec.transport = "fake";
    spec.cqt_ms = cqt_ms;
    std::vector<QueuePair*> qps;
    for (size_t i = 0; i < workers_.size(); ++i) {
      qps_[name].push_back(std::make_unique<FakeQueuePair>(name));
      qps.push_back(qps_[name].back().get());
    }
    ASSERT_OK(sup_->Add(std::move(driver), spec, qps));
  }
  // The control thread's tasks and the workers, until nothing moves.
  void Pump() {
    for (int i = 0; i < 100; ++i) {
      Run();
      if (plane_->RunPending() == 0) {
        Run();
        if (plane_->RunPending() == 0) return;
      }
    }
  }
  SupervisedState State(const std::string& name) {
    return sup_->StateOf(name).value_or(SupervisedState::kGone);
  }
  bool Logged(const std::string& what) const {
    for (const auto& l : log_) {
      if (l.find(what) != std::string::npos) return true;
    }
    return false;
  }

  std::unique_ptr<ControlPlane> plane_;
  std::unique_ptr<ControllerSupervisor> sup_;
  std::vector<std::string> log_;
};

}  // namespace umpath::testing
