#include "agent/core/path_selector.h"

#include <algorithm>
#include <deque>
#include <ostream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace umpath {
namespace {

using nvme::AnaState;

constexpr AnaState kOpt = AnaState::kOptimized;
constexpr AnaState kNonOpt = AnaState::kNonOptimized;

// A head's paths as a worker sees them, built by hand (SPDK's test_find_io_path style).
class Paths {
 public:
  Paths& Add(AnaState ana, uint32_t distance = 10,
             ControllerState ctrl = ControllerState::kLive) {
    PathStateWord w;
    w.controller = ctrl;
    w.ana = ana;
    w.ready = true;
    shared_.emplace_back();
    shared_.back().Store(w);
    distances_.push_back(distance);
    return *this;
  }
  void Set(int i, PathStateWord w) { shared_[i].Store(w); }
  PathStateWord Get(int i) const { return shared_[i].Load(); }
  PathShared& shared(int i) { return shared_[i]; }
  std::vector<PathCandidate> candidates() {
    std::vector<PathCandidate> out;
    for (size_t i = 0; i < shared_.size(); ++i) {
      out.push_back(PathCandidate{&shared_[i], distances_[i]});
    }
    return out;
  }

 private:
  std::deque<PathShared> shared_;  // stable addresses
  std::vector<uint32_t> distances_;
};

std::string Pick(PathSelector& sel, IoPolicy policy, Paths& paths, int n) {
  std::string out;
  auto c = paths.candidates();
  for (int i = 0; i < n; ++i) {
    const int idx = sel.Select(policy, c);
    out += idx == PathSelector::kNone ? '-' : char('A' + idx);
  }
  return out;
}

// Acceptance 1.
TEST(NumaPolicyTest, AllIoGoesToTheNearestOptimizedPath) {
  Paths p;
  p.Add(kOpt, 20).Add(kOpt, 10);
  PathSelector sel;
  EXPECT_EQ(Pick(sel, IoPolicy::kNuma, p, 8), "BBBBBBBB");
}

TEST(NumaPolicyTest, TiesGoToTheFirstInListOrder) {
  Paths p;
  p.Add(kNonOpt, 10).Add(kOpt, 20).Add(kOpt, 20);
  PathSelector sel;
  EXPECT_EQ(Pick(sel, IoPolicy::kNuma, p, 3), "BBB");
}

// Acceptance 2 (selection side; end to end with an ANA log in multipath_test).
TEST(NumaPolicyTest, FallsBackToNearestNonOptimizedAndFailsBackAtOnce) {
  Paths p;
  p.Add(kOpt, 10).Add(kNonOpt, 30).Add(kNonOpt, 20);
  PathSelector sel;
  EXPECT_EQ(Pick(sel, IoPolicy::kNuma, p, 2), "AA");
  PathStateWord a = p.Get(0);
  a.ana = AnaState::kInaccessible;
  p.Set(0, a);
  EXPECT_EQ(Pick(sel, IoPolicy::kNuma, p, 2), "CC");
  a.ana = kOpt;
  p.Set(0, a);
  // The very next I/O, with no other event in between.
  EXPECT_EQ(Pick(sel, IoPolicy::kNuma, p, 1), "A");
}

TEST(NumaPolicyTest, CacheIsDroppedWhenItsControllerIsNotLive) {
  Paths p;
  p.Add(kOpt, 10).Add(kOpt, 20);
  PathSelector sel;
  EXPECT_EQ(Pick(sel, IoPolicy::kNuma, p, 1), "A");
  PathStateWord a = p.Get(0);
  a.controller = ControllerState::kDeleting;  // usable for in-flight I/O, not cacheable
  p.Set(0, a);
  EXPECT_EQ(Pick(sel, IoPolicy::kNuma, p, 1), "A");  // still nearest and selectable
  a.controller = ControllerState::kResetting;
  p.Set(0, a);
  EXPECT_EQ(Pick(sel, IoPolicy::kNuma, p, 1), "B");
}

// Acceptance 3.
TEST(RoundRobinPolicyTest, RotatesOverOptimizedOnly) {
  Paths p;
  p.Add(kOpt).Add(kNonOpt).Add(kOpt);
  PathSelector sel;
  EXPECT_EQ(Pick(sel, IoPolicy::kRoundRobin, p, 6), "ACACAC");
}

TEST(RoundRobinPolicyTest, UsesNonOptimizedOnlyWhenNoOptimizedIsUsable) {
  Paths p;
  p.Add(kOpt).Add(kNonOpt).Add(kOpt);
  PathSelector sel;
  for (int i : {0, 2}) {
    PathStateWord w = p.Get(i);
    w.controller = ControllerState::kResetting;
    p.Set(i, w);
  }
  EXPECT_EQ(Pick(sel, IoPolicy::kRoundRobin, p, 3), "BBB");
  PathStateWord c = p.Get(2);
  c.controller = ControllerState::kLive;
  p.Set(2, c);
  EXPECT_EQ(Pick(sel, IoPolicy::kRoundRobin, p, 3), "CCC");
}

// Acceptance 4.
TEST(QueueDepthPolicyTest, PicksTheLeastLoadedOptimizedPath) {
  Paths p;
  p.Add(kOpt).Add(kNonOpt).Add(kOpt).Add(kOpt);
  p.shared(0).in_flight = 5;
  p.shared(1).in_flight = 0;  // idle but NON-OPTIMIZED
  p.shared(2).in_flight = 3;
  p.shared(3).in_flight = 4;
  PathSelector sel;
  EXPECT_EQ(Pick(sel, IoPolicy::kQueueDepth, p, 1), "C");
  p.shared(3).in_flight = 0;
  EXPECT_EQ(Pick(sel, IoPolicy::kQueueDepth, p, 1), "D");
  for (int i : {0, 2, 3}) {
    PathStateWord w = p.Get(i);
    w.ana = AnaState::kInaccessible;
    p.Set(i, w);
  }
  EXPECT_EQ(Pick(sel, IoPolicy::kQueueDepth, p, 1), "B");
}

TEST(QueueDepthPolicyTest, InFlightCounterNeverGoesNegative) {
  PathShared s;
  s.in_flight = 1;
  s.DecrementInFlight();
  s.DecrementInFlight();
  s.DecrementInFlight();
  EXPECT_EQ(s.in_flight.load(), 0);
}

// Acceptance 5: every unusable or unselectable condition, under every policy.
struct Unusable {
  const char* name;
  void (*apply)(PathStateWord&);
};
void PrintTo(const Unusable& u, std::ostream* os) { *os << u.name; }

class NeverChosenTest
    : public ::testing::TestWithParam<std::tuple<Unusable, IoPolicy>> {};

TEST_P(NeverChosenTest, PathIsNeverChosen) {
  const auto& [cond, policy] = GetParam();
  Paths p;
  p.Add(kOpt, 10).Add(kNonOpt, 40);  // A is nearest and OPTIMIZED: the natural choice
  PathStateWord a = p.Get(0);
  cond.apply(a);
  p.Set(0, a);
  PathSelector sel;
  EXPECT_EQ(Pick(sel, policy, p, 6), "BBBBBB") << cond.name;
  // And with no other path, nothing at all.
  Paths only;
  only.Add(kOpt);
  only.Set(0, a);
  PathSelector sel2;
  EXPECT_EQ(Pick(sel2, policy, only, 2), "--") << cond.name;
}

const Unusable kUnusable[] = {
    {"resetting", [](PathStateWord& w) { w.controller = ControllerState::kResetting; }},
    {"connecting", [](PathStateWord& w) { w.controller = ControllerState::kConnecting; }},
    {"new", [](PathStateWord& w) { w.controller = ControllerState::kNew; }},
    {"dead", [](PathStateWord& w) { w.controller = ControllerState::kDead; }},
    {"ana_pending", [](PathStateWord& w) { w.ana_pending = true; }},
    {"not_ready", [](PathStateWord& w) { w.ready = false; }},
    {"admin_failed", [](PathStateWord& w) { w.admin_failed = true; }},
    {"inaccessible", [](PathStateWord& w) { w.ana = AnaState::kInaccessible; }},
    {"persistent_loss", [](PathStateWord& w) { w.ana = AnaState::kPersistentLoss; }},
    {"change", [](PathStateWord& w) { w.ana = AnaState::kChange; }},
};

INSTANTIATE_TEST_SUITE_P(
    AllConditions, NeverChosenTest,
    ::testing::Combine(::testing::ValuesIn(kUnusable),
                       ::testing::Values(IoPolicy::kNuma, IoPolicy::kRoundRobin,
                                         IoPolicy::kQueueDepth)),
    [](const auto& info) {
      std::string policy(IoPolicyName(std::get<1>(info.param)));
      std::replace(policy.begin(), policy.end(), '-', '_');
      return std::string(std::get<0>(info.param).name) + "_" + policy;
    });

TEST(PathSelectorTest, DeletingControllerStillServesInFlightSelection) {
  Paths p;
  p.Add(kOpt, 10, ControllerState::kDeleting);
  PathSelector sel;
  EXPECT_EQ(Pick(sel, IoPolicy::kRoundRobin, p, 2), "AA");
}

TEST(PathSelectorTest, EmptyHeadSelectsNothing) {
  Paths p;
  PathSelector sel;
  for (IoPolicy policy : {IoPolicy::kNuma, IoPolicy::kRoundRobin, IoPolicy::kQueueDepth}) {
    EXPECT_EQ(Pick(sel, policy, p, 1), "-");
  }
}

TEST(PathSelectorTest, QueueGoneOnThisWorkerHidesThePath) {
  Paths p;
  p.Add(kOpt, 10).Add(kOpt, 20);
  auto c = p.candidates();
  bool gone = true;
  c[0].queue_gone = &gone;
  PathSelector sel;
  EXPECT_EQ(sel.Select(IoPolicy::kNuma, c), 1);
  // The numa cache holds the path it fell back to while that one stays OPTIMIZED ...
  gone = false;
  EXPECT_EQ(sel.Select(IoPolicy::kNuma, c), 1);
  // ... until the new snapshot that brings the queue back resets the selector.
  sel.Reset();
  EXPECT_EQ(sel.Select(IoPolicy::kNuma, c), 0);
}

}  // namespace
}  // namespace umpath
