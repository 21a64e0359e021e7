#pragma once

// The exporter's test fixture: the real core and control plane, a fake ublk driver
// beneath (FakeUblk), and helpers that wait on state, not on time.

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/base/mutex.h"
#include "agent/core/testing/core_fixture.h"
#include "agent/export/exporter.h"
#include "agent/export/testing/fake_ublk.h"

namespace umpath::ublk {

// The sectors of a fixture head (kBlocks of 512 bytes).
inline constexpr uint64_t kSectors = uint64_t{1} << 20;  // CoreFixture::kBlocks of 512 bytes

class ExporterTest : public umpath::testing::CoreFixture {
 protected:
  void SetUp() override {
    CoreFixture::SetUp();
    state_dir_ = ::testing::TempDir() + "/exporter_test." + std::to_string(getpid()) + "." +
                 ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(state_dir_);
    auto plane = ControlPlane::Create(&clock_);
    ASSERT_OK(plane);
    plane_ = std::move(*plane);
    plane_->Start();
  }
  void TearDown() override {
    plane_->Stop();
    if (ex_) ex_->Shutdown();
    ex_.reset();
    CoreFixture::TearDown();
    std::filesystem::remove_all(state_dir_);
  }

  void Make(bool export_all = false) {
    ExporterOptions o;
    for (auto& w : workers_) o.workers.push_back(w.get());
    o.queue_depth = 8;
    o.max_io_bytes = 65536;
    o.export_all = export_all;
    o.state_dir = state_dir_;
    o.by_id_dir = by_id_dir_;
    o.recover_wait_secs = 30;
    o.head_delayed_removal_secs = head_delay_;
    o.handover_quiesce_ms = handover_quiesce_ms_;
    o.exports_wanted = [this] {
      MutexLock l(&log_mu_);
      return wanted_;
    };
    o.log = [this](const std::string& line) {
      MutexLock l(&log_mu_);
      log_.push_back(line);
    };
    auto driver = std::make_unique<FakeUblk>();
    ublk_ = driver.get();
    ublk_->record_dir = state_dir_;
    if (before_create_) before_create_(*ublk_);
    auto ex = Exporter::CreateWithDriver(mp_.get(), plane_.get(), o, std::move(driver));
    ASSERT_OK(ex);
    ex_ = std::move(*ex);
    ex_->Start();
  }

  // Waits (on the state, not on time) until `pred` holds, driving the workers.
  template <typename Pred>
  bool Await(Pred pred) {
    for (int i = 0; i < 10'000; ++i) {
      Run();
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return pred();
  }

  // Asks the exporter (`ask` gets the `done` to pass on) and waits for its answer.
  template <typename T, typename Ask>
  T Answered(Ask ask) {
    Notification done;
    T out;
    ask([&](T r) {
      out = std::move(r);
      done.Notify();
    });
    EXPECT_TRUE(Await([&] { return done.HasBeenNotified(); }));
    return out;
  }
  // The device's path; ExportDevice: all of it.
  absl::StatusOr<std::string> Export(const std::string& head) {
    absl::StatusOr<ExportedDevice> d = ExportDevice(head);
    if (!d.ok()) return d.status();
    return d->path;
  }
  absl::StatusOr<ExportedDevice> ExportDevice(const std::string& head) {
    using R = absl::StatusOr<ExportedDevice>;
    return Answered<R>([&](Exporter::Done<R> d) { ex_->Export(head, std::move(d)); });
  }
  absl::Status Unexport(const std::string& head) {
    return Answered<absl::Status>(
        [&](Exporter::Done<absl::Status> d) { ex_->Unexport(head, std::move(d)); });
  }
  absl::Status BeginStop(StopMode mode) {
    return Answered<absl::Status>(
        [&](Exporter::Done<absl::Status> d) { ex_->BeginStop(mode, std::move(d)); });
  }
  absl::Status CheckStop(StopMode mode) {
    return Answered<absl::Status>(
        [&](Exporter::Done<absl::Status> d) { ex_->CheckStop(mode, std::move(d)); });
  }

  // Two devices an earlier run left (8 idle, 9 held by dm-0) and two of this run's (0
  // of the first head, mounted; 1 of the second, idle). The two heads.
  std::pair<std::string, std::string> SomeDevicesInUse() {
    WriteRecord(8, "nguid.idle");
    WriteRecord(9, "nguid.mounted");
    before_create_ = [](FakeUblk& u) {
      u.Leave(8, 4242, kSectors);
      u.Leave(9, 4242, kSectors);
    };
    Make();
    const std::string h1 = Head("c0", 1), h2 = Head("c0", 2);
    EXPECT_EQ(Export(h1).value_or(""), "/dev/ublkb0");
    EXPECT_EQ(Export(h2).value_or(""), "/dev/ublkb1");
    ublk_->SetUsers(0, {"mounted at /mnt"});
    ublk_->SetUsers(9, {"held by dm-0"});
    return {h1, h2};
  }

  std::string Head(const std::string& controller = "c0", uint8_t tag = 1) {
    if (!backends_.contains(controller)) AddController(controller);
    auto head = AddPath(controller, tag, tag);
    EXPECT_OK(head);
    return head.ok() ? *head : "";
  }

  // Export events (exported or unexported) on `head`, as "type to reason".
  std::vector<std::string> ExportEvents(const std::string& head) {
    std::vector<std::string> out;
    for (const Event& e : EventsSince(0)) {
      if ((e.type == EventType::kHeadExported || e.type == EventType::kHeadUnexported) &&
          e.head == head) {
        out.push_back(absl::StrCat(EventTypeName(e.type), " ", e.to, " ", e.reason));
      }
    }
    return out;
  }
  bool HasExportEvent(const std::string& head, const std::string& part) {
    for (const std::string& e : ExportEvents(head)) {
      if (e.find(part) != std::string::npos) return true;
    }
    return false;
  }
  std::string Record(uint32_t id) {
    std::ifstream in(state_dir_ + "/" + std::to_string(id));
    std::string line;
    std::getline(in, line);
    return line;
  }
  void WriteRecord(uint32_t id, const std::string& head) {
    std::filesystem::create_directories(state_dir_);
    std::ofstream(state_dir_ + "/" + std::to_string(id)) << "head=" << head << "\n";
  }
  bool Logged(const std::string& what) {
    MutexLock l(&log_mu_);
    for (const auto& line : log_) {
      if (line.find(what) != std::string::npos) return true;
    }
    return false;
  }
  // Moves the clock and lets the control thread see it.
  void AdvanceSeconds(int s) {
    clock_.AdvanceSeconds(s);
    plane_->Wake();
  }

  std::string state_dir_;
  std::string by_id_dir_;  // empty: no links (set before Make)
  std::unique_ptr<ControlPlane> plane_;
  std::unique_ptr<Exporter> ex_;
  FakeUblk* ublk_ = nullptr;
  std::function<void(FakeUblk&)> before_create_;
  std::function<int64_t(const std::string&)> head_delay_;
  int64_t handover_quiesce_ms_ = 2000;
  Mutex log_mu_;
  std::vector<std::string> log_ ABSL_GUARDED_BY(log_mu_);
  std::vector<std::string> wanted_ ABSL_GUARDED_BY(log_mu_);  // kept settings: export = true
};

}  // namespace umpath::ublk
