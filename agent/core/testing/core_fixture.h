#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "agent/base/status_matchers.h"
#include "agent/core/multipath.h"
#include "agent/core/testing/fake_queue_pair.h"
#include "agent/core/worker.h"
#include "agent/nvme/ana_log.h"

namespace umpath::testing {

// Records what the core asked of a controller. A quiesced controller counts as fenced
// at once (as a kernel controller does), unless a test fences it by hand.
class FakeBackend final : public ControllerBackend {
 public:
  explicit FakeBackend(Multipath* mp = nullptr, std::string name = "")
      : mp_(mp), name_(std::move(name)) {}
  void RequestAnaLog() override { ++ana_requests; }
  void Reset() override { ++resets; }
  void OnQuiesced() override {
    ++quiesced;
    if (mp_ != nullptr && auto_fence.load()) {
      EXPECT_OK(mp_->ControllerFenced(name_));
    }
  }
  void OnHandedBack() override { ++handed_back; }
  void OnQueuePairsReleased() override { ++released; }
  std::atomic<int> ana_requests{0}, resets{0}, released{0}, quiesced{0}, handed_back{0};
  std::atomic<bool> auto_fence{true};

 private:
  Multipath* mp_;
  std::string name_;
};

// One request and what became of it.
struct TestIo {
  IoRequest req;
  bool done = false;
  IoResult result;
  int completions = 0;

  TestIo() {
    req.opcode = nvme::IoOpcode::kRead;
    req.blocks = 8;
    req.data_len = 4096;
    req.user = this;
    req.on_complete = [](IoRequest* r, IoResult res) {
      auto* io = static_cast<TestIo*>(r->user);
      io->done = true;
      io->result = res;
      ++io->completions;
    };
  }
};

inline int CountDone(const std::vector<TestIo>& ios) {
  int n = 0;
  for (const auto& io : ios) n += io.done;
  return n;
}

// A core with hand-driven workers and a manual clock: no test sleeps through a window.
class CoreFixture : public ::testing::Test {
 protected:
  static constexpr uint64_t kBlocks = 1 << 20;

  void SetUp() override { Build(1, {}); }

  void Build(int workers, std::vector<uint32_t> distances,
             uint32_t default_delayed_removal = 0) {
    mp_.reset();
    workers_.clear();
    for (int i = 0; i < workers; ++i) {
      Worker::Options o;
      o.index = i;
      o.numa_node = 0;
      o.distances = distances;
      o.clock = &clock_;
      o.ana_requester = &requester_;
      workers_.push_back(Worker::Create(o));
    }
    MultipathOptions mo;
    mo.clock = &clock_;
    for (auto& w : workers_) mo.workers.push_back(w.get());
    mo.default_delayed_removal_secs = default_delayed_removal;
    mo.first_head_uid = first_head_uid_;
    auto mp = Multipath::Create(mo);
    ASSERT_OK(mp);
    mp_ = std::move(*mp);
    requester_.target = mp_.get();
  }

  void TearDown() override {
    if (mp_) mp_->Shutdown();
    Run();
  }

  // Adds a controller with one fake queue pair per worker.
  void AddController(const std::string& name, int numa_node = -1, bool ana = false,
                     const std::string& nqn = "nqn.2026-01.io.umpath:subsys0",
                     uint16_t cqt_ms = 0) {
    ControllerSpec spec;
    spec.cqt_ms = cqt_ms;
    spec.name = name;
    spec.subsys_nqn = nqn;
    spec.transport = "fake";
    spec.numa_node = numa_node;
    spec.ana_supported = ana;
    spec.anagrpmax = ana ? 8 : 0;
    spec.anatt_secs = 10;
    std::vector<QueuePair*> qps;
    for (size_t i = 0; i < workers_.size(); ++i) {
      auto qp = std::make_unique<FakeQueuePair>(name);
      qps.push_back(qp.get());
      qps_[name].push_back(std::move(qp));
    }
    backends_[name] = std::make_unique<FakeBackend>(mp_.get(), name);
    ASSERT_OK(mp_->AddController(spec, backends_[name].get(), qps));
  }

  static nvme::NamespaceIds Nguid(uint8_t tag) {
    nvme::NamespaceIds ids;
    std::array<uint8_t, 16> g{};
    g[0] = 0xab;
    g[15] = tag;
    ids.nguid = g;
    return ids;
  }

  absl::StatusOr<std::string> AddPath(const std::string& controller, uint32_t nsid = 1,
                                      uint8_t tag = 1, uint32_t ana_group = 1) {
    NamespaceSpec ns;
    ns.controller = controller;
    ns.nsid = nsid;
    ns.ids = Nguid(tag);
    ns.ana_group_id = ana_group;
    ns.size_blocks = kBlocks;
    ns.block_size = 512;
    return mp_->AddPath(ns);
  }

  // Runs every worker until nothing moves.
  void Run() {
    for (int round = 0; round < 100; ++round) {
      // Timers first, so what they post to the workers runs in the same round.
      if (mp_) mp_->RunPending();
      uint32_t work = 0;
      for (auto& w : workers_) work += w->RunOnce();
      if (work == 0) return;
    }
  }

  Channel* ChannelOf(const std::string& head, int worker = 0) {
    auto info = mp_->GetHead(head);
    if (!info.ok()) return nullptr;
    return workers_[worker]->FindChannel(info->uid);
  }

  void Submit(const std::string& head, TestIo& io, int worker = 0) {
    Channel* ch = ChannelOf(head, worker);
    ASSERT_NE(ch, nullptr) << head;
    ch->Submit(&io.req);
    workers_[worker]->Flush();
  }

  FakeQueuePair& Qp(const std::string& controller, int worker = 0) {
    return *qps_.at(controller).at(worker);
  }

  // One ANA log for a controller: group g in state s holds the given NSIDs.
  absl::Status Ana(const std::string& controller,
                   std::vector<std::tuple<uint32_t, nvme::AnaState, std::vector<uint32_t>>> groups) {
    nvme::AnaLog log;
    log.change_count = ++ana_change_count_;
    for (auto& [g, s, nsids] : groups) {
      log.groups.push_back(nvme::AnaGroupDescriptor{g, s, log.change_count, nsids});
    }
    std::vector<uint8_t> bytes = nvme::BuildAnaLog(log);
    return mp_->OnAnaLog(controller, bytes);
  }

  std::vector<Event> EventsSince(uint64_t since) {
    auto ev = mp_->journal().ReadSince(since, 10000);
    EXPECT_OK(ev);
    return ev.ok() ? *ev : std::vector<Event>{};
  }
  std::vector<EventType> TypesSince(uint64_t since) {
    std::vector<EventType> out;
    for (const Event& e : EventsSince(since)) out.push_back(e.type);
    return out;
  }

  struct Requester final : AnaReadRequester {
    void RequestAnaRead(ControllerShared* c) override { target->RequestAnaRead(c); }
    Multipath* target = nullptr;
  };

  // Declared so that the core goes first, then the workers, then what they point at.
  ManualClock clock_;
  Requester requester_;
  std::map<std::string, std::vector<std::unique_ptr<FakeQueuePair>>> qps_;
  std::map<std::string, std::unique_ptr<FakeBackend>> backends_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<Multipath> mp_;
  uint64_t ana_change_count_ = 0;
  uint64_t first_head_uid_ = 1;  // set before Build
};

}  // namespace umpath::testing
