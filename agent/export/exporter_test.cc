// The exporter's orchestration without a VM: the real core and control plane, a fake
// ublk driver beneath. Export, removal with the head, unexport of a device in use,
// export-all, the take-over of a device an earlier agent left (and its removal when
// the head never comes, or comes back as another disk), shutdown, the stops (hand-over,
// remove and forced remove, and the check that refuses to remove a device in use), and
// the rule that the control thread never waits on the kernel.

#include "agent/export/exporter.h"

#include <map>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/base/error_reason.h"
#include "agent/export/testing/exporter_fixture.h"

namespace umpath::ublk {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST_F(ExporterTest, ExportMakesOneDeviceRecordsItAndSaysSo) {
  Make();
  const std::string h = Head();
  auto dev = Export(h);
  ASSERT_OK(dev);
  EXPECT_EQ(*dev, "/dev/ublkb0");
  EXPECT_EQ(ublk_->Calls(), "add set-params 0 open-queues 0 start 0");
  EXPECT_EQ(Record(0), "head=" + h);
  // Recorded before the device existed: an agent killed at any step leaves a device
  // the next one finds.
  EXPECT_TRUE(ublk_->RecordedAtAdd());
  EXPECT_TRUE(ublk_->RecordedAtStart());
  EXPECT_TRUE(HasExportEvent(h, "head-exported /dev/ublkb0 exported"));
  // Again: the same device, nothing new asked of the kernel.
  auto again = Export(h);
  ASSERT_OK(again);
  EXPECT_EQ(*again, "/dev/ublkb0");
  EXPECT_EQ(ublk_->Calls(), "add set-params 0 open-queues 0 start 0");
}

TEST_F(ExporterTest, ExportOfAnUnknownHeadIsNotFound) {
  Make();
  auto dev = Export("no-such-head");
  EXPECT_TRUE(absl::IsNotFound(dev.status())) << dev.status();
  EXPECT_EQ(ublk_->Calls(), "");
}

TEST_F(ExporterTest, AFailedStartLeavesNothingBehind) {
  Make();
  ublk_->SetStartError(absl::InternalError("START_DEV: EIO"));
  const std::string h = Head();
  auto dev = Export(h);
  ASSERT_FALSE(dev.ok());
  EXPECT_THAT(dev.status().message(), HasSubstr("export " + h + ": START_DEV: EIO"));
  EXPECT_EQ(ublk_->Calls(), "add set-params 0 open-queues 0 start 0 close-queues 0 delete 0");
  EXPECT_FALSE(ublk_->Has(0));
  EXPECT_EQ(Record(0), "");
  EXPECT_TRUE(ExportEvents(h).empty());
  // The next try is a new device.
  ublk_->SetStartError(absl::OkStatus());
  auto retry = Export(h);
  ASSERT_OK(retry);
  EXPECT_EQ(*retry, "/dev/ublkb0");  // the lowest free number, as the kernel would pick
}

TEST_F(ExporterTest, ADeviceGoesWithItsHead) {
  Make();
  const std::string h = Head();
  ASSERT_OK(Export(h));
  ASSERT_OK(mp_->RemoveController("c0", "test"));
  ASSERT_TRUE(Await([&] { return ublk_->Called("delete 0"); })) << ublk_->Calls();
  EXPECT_EQ(ublk_->Calls(), "add set-params 0 open-queues 0 start 0 stop 0 close-queues 0 delete 0");
  ASSERT_TRUE(Await([&] { return HasExportEvent(h, "/dev/ublkb0 removed: the head was removed"); }));
  EXPECT_EQ(Record(0), "");
}

TEST_F(ExporterTest, UnexportRefusesADeviceInUseAndKeepsIt) {
  Make();
  const std::string h = Head();
  ASSERT_OK(Export(h));
  ublk_->SetUsers({"pid 812 (fio)", "mounted at /mnt"});
  absl::Status s = Unexport(h);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("is in use (pid 812 (fio), mounted at /mnt)"));
  // Who uses it, for a client to switch on (AIP-193's ErrorInfo, issue 19).
  EXPECT_TRUE(ReasonIs(s, reason::kDeviceInUse));
  EXPECT_EQ(ReasonMetadata(s, "device"), "/dev/ublkb0");
  EXPECT_EQ(ReasonMetadata(s, "pids"), "812");
  EXPECT_EQ(ReasonMetadata(s, "mounts"), "/mnt");
  EXPECT_FALSE(ublk_->Called("stop 0"));
  auto still = Export(h);  // still the same device
  ASSERT_OK(still);
  EXPECT_EQ(*still, "/dev/ublkb0");
  ublk_->SetUsers({});
  ASSERT_OK(Unexport(h));
  EXPECT_TRUE(ublk_->Called("delete 0"));
  EXPECT_TRUE(HasExportEvent(h, "removed: unexported"));
  EXPECT_OK(Unexport(h));  // not exported: nothing to do
  EXPECT_OK(Unexport("no-such-head"));  // gone: nothing to do either (CSI's unstage may come twice)
}

TEST_F(ExporterTest, ExportAllExportsEachHeadOnceAndRespectsAnUnexport) {
  Make(/*export_all=*/true);
  const std::string h1 = Head("c0", 1);
  ASSERT_TRUE(Await([&] { return HasExportEvent(h1, "head-exported /dev/ublkb0"); }));
  ASSERT_OK(Unexport(h1));
  // Another head appears: it is exported, the unexported one stays as the admin left it.
  const std::string h2 = Head("c0", 2);
  ASSERT_TRUE(Await([&] { return HasExportEvent(h2, "head-exported /dev/ublkb0"); }));
  auto dev = Export(h1);  // an explicit export still works
  ASSERT_OK(dev);
  EXPECT_EQ(*dev, "/dev/ublkb1");
  EXPECT_EQ(ExportEvents(h1).size(), 3u) << absl::StrJoin(ExportEvents(h1), "; ");
}

// UpdateHeadSettings export = true before the head's first path: the head is exported as
// it appears, and no other head is.
TEST_F(ExporterTest, AHeadWhoseExportWasAskedForAheadIsExportedAsItAppears) {
  Make();
  const std::string other = Head("c0", 1);
  const std::string h = Head("c1", 2);
  ASSERT_OK(mp_->RemoveController("c1", "not yet"));
  Run();
  ASSERT_FALSE(mp_->GetHead(h).ok());
  {
    MutexLock l(&log_mu_);
    wanted_ = {h};
  }
  backends_.erase("c1");
  EXPECT_EQ(Head("c1", 2), h);
  ASSERT_TRUE(Await([&] { return HasExportEvent(h, "head-exported /dev/ublkb0"); }))
      << absl::StrJoin(ExportEvents(h), "; ");
  EXPECT_TRUE(ExportEvents(other).empty()) << absl::StrJoin(ExportEvents(other), "; ");
}

TEST_F(ExporterTest, ALeftDeviceIsTakenOverWhenItsHeadAppears) {
  WriteRecord(5, "");  // filled below, once the head's name is known
  const std::string h = Head();
  ASSERT_OK(mp_->RemoveController("c0", "gone for now"));
  Run();
  WriteRecord(5, h);
  before_create_ = [](FakeUblk& u) { u.Leave(5, /*pid=*/4242, kSectors); };
  Make();
  EXPECT_TRUE(Logged("device 5 of head " + h + " left by pid 4242"));
  auto early = Export(h);  // the head is not back yet
  EXPECT_TRUE(absl::IsNotFound(early.status())) << early.status();
  backends_.erase("c0");
  Head();
  ASSERT_TRUE(Await([&] { return ublk_->Called("end-recovery 5"); })) << ublk_->Calls();
  EXPECT_EQ(ublk_->Calls(), "start-recovery 5 open-queues 5 end-recovery 5");
  ASSERT_TRUE(Await([&] { return HasExportEvent(h, "/dev/ublkb5 taken over from the agent's last run"); }));
  auto dev = Export(h);
  ASSERT_OK(dev);
  EXPECT_EQ(*dev, "/dev/ublkb5");
  EXPECT_FALSE(ublk_->Called("add"));
}

TEST_F(ExporterTest, ATakeOverNotYetPossibleIsTriedAgain) {
  const std::string h = Head();
  WriteRecord(3, h);
  // Its agent is gone but the kernel has not quiesced the device yet.
  before_create_ = [](FakeUblk& u) { u.Leave(3, 4242, kSectors, true, kStateLive); };
  Make();
  ASSERT_TRUE(Await([&] { return Logged("recovery: the device is in state 1, not yet quiesced"); }));
  EXPECT_FALSE(ublk_->Called("start-recovery 3"));
  ublk_->SetState(3, kStateQuiesced);
  AdvanceSeconds(1);
  ASSERT_TRUE(Await([&] { return ublk_->Called("end-recovery 3"); })) << ublk_->Calls();
}

TEST_F(ExporterTest, ALeftDeviceWhoseHeadNeverComesIsRemovedAfterTheWait) {
  WriteRecord(7, "nguid.gone");
  before_create_ = [](FakeUblk& u) { u.Leave(7, 4242, kSectors); };
  Make();
  AdvanceSeconds(29);
  // The control thread has looked (a task after the timer's) and kept it.
  plane_->Run([] {});
  plane_->Run([] {});
  EXPECT_TRUE(ublk_->Has(7));
  EXPECT_EQ(Record(7), "head=nguid.gone");
  AdvanceSeconds(2);
  // The record goes right after the device.
  ASSERT_TRUE(Await([&] { return !ublk_->Has(7) && Record(7).empty(); })) << ublk_->Calls();
  EXPECT_EQ(ublk_->Calls(), "stop 7 delete 7");
  ASSERT_TRUE(Await([&] {
    return HasExportEvent("nguid.gone",
                          "head-unexported  /dev/ublkb7 removed: its head did not come back within 30 s");
  })) << absl::StrJoin(ExportEvents("nguid.gone"), "; ");
}

TEST_F(ExporterTest, ALeftDeviceWithoutUserRecoveryIsRemovedAtOnce) {
  WriteRecord(2, "nguid.x");
  before_create_ = [](FakeUblk& u) { u.Leave(2, 4242, kSectors, /*recovery=*/false); };
  Make();
  EXPECT_EQ(ublk_->Calls(), "stop 2 delete 2");
  EXPECT_TRUE(HasExportEvent("nguid.x", "/dev/ublkb2 removed: it was made without user recovery"));
  EXPECT_EQ(Record(2), "");
}

TEST_F(ExporterTest, ADeviceServedByAnotherAgentIsLeftAlone) {
  WriteRecord(4, "nguid.y");
  before_create_ = [](FakeUblk& u) {
    u.Leave(4, 777, kSectors, true, kStateLive);
    u.another_agent = 777;
  };
  Make();
  EXPECT_TRUE(Logged("served by running pid 777; left alone"));
  AdvanceSeconds(60);
  plane_->Run([] {});
  EXPECT_EQ(ublk_->Calls(), "");
  EXPECT_EQ(Record(4), "head=nguid.y");
}

TEST_F(ExporterTest, AHeadThatCameBackAsAnotherDiskDoesNotGetTheOldDevice) {
  const std::string h = Head();
  WriteRecord(6, h);
  before_create_ = [](FakeUblk& u) { u.Leave(6, 4242, kSectors * 2); };
  Make();
  ASSERT_TRUE(Await([&] { return !ublk_->Has(6); })) << ublk_->Calls();
  EXPECT_FALSE(ublk_->Called("start-recovery 6"));
  ASSERT_TRUE(Await([&] { return HasExportEvent(h, "/dev/ublkb6 removed: its head came back as another disk"); }));
  auto dev = Export(h);  // and it can be exported anew
  ASSERT_OK(dev);
  EXPECT_EQ(*dev, "/dev/ublkb0");
}

TEST_F(ExporterTest, TheControlThreadNeverWaitsOnTheKernelAndCallsAreAnsweredInOrder) {
  Make();
  const std::string h1 = Head("c0", 1), h2 = Head("c0", 2);
  ublk_->block_start = true;
  std::vector<std::string> order;
  Mutex order_mu;
  auto note = [&](std::string what) {
    MutexLock l(&order_mu);
    order.push_back(std::move(what));
  };
  ex_->Export(h1, [&](absl::StatusOr<ExportedDevice> r) { note("export1 " + (r.ok() ? r->path : "error")); });
  ASSERT_TRUE(ublk_->start_entered.WaitFor(std::chrono::seconds(10)));
  ex_->Export(h2, [&](absl::StatusOr<ExportedDevice> r) { note("export2 " + (r.ok() ? r->path : "error")); });
  ex_->Unexport(h1, [&](absl::Status s) { note("unexport1 " + s.ToString()); });
  // START_DEV blocks in the kernel; the control thread still runs.
  Notification ran;
  plane_->Post([&ran] { ran.Notify(); });
  EXPECT_TRUE(ran.WaitFor(std::chrono::seconds(10)));
  {
    MutexLock l(&order_mu);
    EXPECT_TRUE(order.empty());
  }
  ublk_->block_start = false;
  ublk_->release_start.Notify();
  ASSERT_TRUE(Await([&] {
    MutexLock l(&order_mu);
    return order.size() == 3;
  }));
  MutexLock l(&order_mu);
  EXPECT_EQ(absl::StrJoin(order, ", "), "export1 /dev/ublkb0, export2 /dev/ublkb1, unexport1 OK");
}

TEST_F(ExporterTest, ShutdownRemovesWhatWasMadeAndWhatWasLeft) {
  WriteRecord(9, "nguid.z");
  before_create_ = [](FakeUblk& u) { u.Leave(9, 4242, kSectors); };
  Make();
  const std::string h = Head();
  ASSERT_OK(Export(h));  // device 0: the lowest number free
  plane_->Run([this] { ex_->StopFollowing(); });
  plane_->Stop();
  ex_->Shutdown();
  EXPECT_FALSE(ublk_->Has(9));
  EXPECT_FALSE(ublk_->Has(0));
  EXPECT_EQ(Record(9), "");
  EXPECT_EQ(Record(0), "");
  EXPECT_TRUE(Logged("/dev/ublkb0 of head " + h + " removed: the agent is shutting down"));
}

TEST_F(ExporterTest, AnExportCutShortByTheStopIsRemovedAndAnswered) {
  Make();
  const std::string h = Head();
  ublk_->block_start = true;
  Notification answered;
  absl::Status answer;
  ex_->Export(h, [&](absl::StatusOr<ExportedDevice> r) {
    answer = r.status();
    answered.Notify();
  });
  ASSERT_TRUE(ublk_->start_entered.WaitFor(std::chrono::seconds(10)));
  std::thread stopper([this] { plane_->Stop(); });
  // Once the plane refuses tasks it is stopping: the export's result will be dropped.
  ASSERT_TRUE(Await([&] { return !plane_->Post([] {}); }));
  ublk_->release_start.Notify();
  stopper.join();
  ex_->Shutdown();
  ASSERT_TRUE(answered.HasBeenNotified());
  EXPECT_TRUE(absl::IsUnavailable(answer)) << answer;
  EXPECT_FALSE(ublk_->Has(0)) << ublk_->Calls();
  EXPECT_EQ(Record(0), "");
}

TEST_F(ExporterTest, ADeviceThatCannotBeRecordedIsNotStarted) {
  Make();
  const std::string h = Head();
  // The state directory is gone and a file is in its place.
  std::filesystem::remove_all(state_dir_);
  std::ofstream(state_dir_) << "not a directory";
  auto dev = Export(h);
  ASSERT_FALSE(dev.ok());
  EXPECT_THAT(dev.status().message(), HasSubstr("export " + h + ": recording device 0 in"));
  EXPECT_EQ(ublk_->Calls(), "");  // the record comes before the device
  EXPECT_TRUE(ExportEvents(h).empty());
  std::filesystem::remove(state_dir_);
}

TEST_F(ExporterTest, ALeftDeviceThatWasNeverStartedIsRemovedAtOnce) {
  WriteRecord(8, "nguid.w");
  before_create_ = [](FakeUblk& u) { u.Leave(8, 4242, kSectors, true, kStateDead); };
  Make();
  EXPECT_EQ(ublk_->Calls(), "stop 8 delete 8");
  EXPECT_TRUE(HasExportEvent("nguid.w", "/dev/ublkb8 removed: it was never started"));
  EXPECT_EQ(Record(8), "");
}

// A stop hands the devices over: their queues hold what comes, then the agent lets go
// of them without stopping them; the records stay for the next agent.
TEST_F(ExporterTest, AHandOverLeavesEveryDeviceAndItsRecordForTheNextAgent) {
  WriteRecord(9, "nguid.later");
  before_create_ = [](FakeUblk& u) { u.Leave(9, 4242, kSectors); };
  Make();
  const std::string h = Head();
  ASSERT_OK(Export(h));  // device 0
  ASSERT_OK(BeginStop(StopMode::kHandOver));
  EXPECT_TRUE(ublk_->Called("hold 0"));
  // Nothing more is done through it meanwhile.
  EXPECT_TRUE(absl::IsUnavailable(Export(h).status()));
  plane_->Stop();
  ex_->Shutdown();
  EXPECT_EQ(ublk_->Calls(), "add set-params 0 open-queues 0 start 0 hold 0 release 0");
  EXPECT_TRUE(ublk_->Has(9));
  EXPECT_TRUE(ublk_->Has(0));
  EXPECT_EQ(Record(0), "head=" + h);
  EXPECT_EQ(Record(9), "head=nguid.later");
  EXPECT_TRUE(Logged("/dev/ublkb0 of head " + h + " handed over to the next agent (3 request(s) held"));
}

// Where the kernel offers QUIESCE_DEV the devices are made with it, and a hand-over
// quiesces each (the kernel keeps new requests for the next agent), waits until its
// queues have answered what they had, and only then holds what may still fail: the
// next agent gets no request this one had taken.
TEST_F(ExporterTest, AHandOverQuiescesADeviceMadeWithQuiesceAndWaitsForItsRequests) {
  before_create_ = [](FakeUblk& u) { u.features |= kFlagQuiesce; };
  Make();
  const std::string h = Head();
  ASSERT_OK(Export(h));
  const uint64_t flags = ublk_->Info(0).value().flags;
  EXPECT_TRUE(flags & kFlagQuiesce);
  EXPECT_TRUE(flags & kFlagUserRecovery);  // the kernel refuses the one without the other
  ublk_->SetUnanswered({3, 1, 0});
  ASSERT_OK(BeginStop(StopMode::kHandOver));
  const int quiesce = ublk_->Position("quiesce 0"), hold = ublk_->Position("hold 0");
  ASSERT_GE(quiesce, 0) << ublk_->Calls();
  EXPECT_GT(hold, quiesce) << ublk_->Calls();
  // Asked until nothing was left, and held only then.
  EXPECT_THAT(ublk_->Calls(),
              HasSubstr("quiesce 0 unanswered 0 unanswered 0 unanswered 0 hold 0"));
  ASSERT_EQ(ublk_->QuiesceTimeouts().size(), 1u);
  EXPECT_GT(ublk_->QuiesceTimeouts()[0], 0u);  // 0 would wait for ever
  EXPECT_LE(ublk_->QuiesceTimeouts()[0], 2000u);
  EXPECT_TRUE(Logged("/dev/ublkb0 of head " + h + " quiesced for the hand-over in "));
  EXPECT_TRUE(Logged("every request it had is answered"));
  plane_->Stop();
  ex_->Shutdown();
  EXPECT_TRUE(ublk_->Called("release 0"));
  EXPECT_TRUE(ublk_->Has(0));
  EXPECT_EQ(Record(0), "head=" + h);
}

// The kernel without it (6.12): the devices are made without the flag and handed over
// by holding, as before.
TEST_F(ExporterTest, WithoutQuiesceFromTheKernelAHandOverHolds) {
  Make();
  ASSERT_OK(Export(Head()));
  EXPECT_FALSE(ublk_->Info(0).value().flags & kFlagQuiesce);
  ASSERT_OK(BeginStop(StopMode::kHandOver));
  EXPECT_EQ(ublk_->Calls(), "add set-params 0 open-queues 0 start 0 hold 0");
}

// A device an earlier agent made without the flag cannot be quiesced (the kernel would
// refuse): it is held; one made with it is quiesced like this agent's own.
TEST_F(ExporterTest, ATakenOverDeviceIsQuiescedOnlyIfItWasMadeWithQuiesce) {
  const std::string h1 = Head("c0", 1), h2 = Head("c0", 2);
  WriteRecord(8, h1);
  WriteRecord(9, h2);
  before_create_ = [](FakeUblk& u) {
    u.features |= kFlagQuiesce;
    u.Leave(8, 4242, kSectors);
    u.Leave(9, 4242, kSectors, true, kStateQuiesced, kFlagQuiesce);
  };
  Make();
  ASSERT_TRUE(Await([&] {
    return HasExportEvent(h1, "taken over") && HasExportEvent(h2, "taken over");
  })) << ublk_->Calls();
  ASSERT_OK(BeginStop(StopMode::kHandOver));
  EXPECT_FALSE(ublk_->Called("quiesce 8"));
  EXPECT_TRUE(ublk_->Called("hold 8"));
  EXPECT_TRUE(ublk_->Called("quiesce 9"));
  EXPECT_GT(ublk_->Position("hold 9"), ublk_->Position("quiesce 9"));
}

// QUIESCE_DEV that fails (EBUSY: a queue had every tag in service for the whole wait;
// or any other error) leaves the device as holding expects: it is held at once, and
// still handed over.
class QuiesceFailsTest : public ExporterTest {
 protected:
  void Check(const absl::Status& error) {
    before_create_ = [](FakeUblk& u) { u.features |= kFlagQuiesce; };
    Make();
    const std::string h = Head();
    ASSERT_OK(Export(h));
    ublk_->SetQuiesceError(error);
    ublk_->SetUnanswered({5});
    ASSERT_OK(BeginStop(StopMode::kHandOver));
    EXPECT_TRUE(ublk_->Called("quiesce 0"));
    EXPECT_TRUE(ublk_->Called("hold 0"));
    // Not waited for: the kernel may still hand requests over, which only holding keeps.
    EXPECT_FALSE(ublk_->Called("unanswered 0")) << ublk_->Calls();
    EXPECT_TRUE(Logged("/dev/ublkb0 of head " + h + ": no quiesce for the hand-over (" +
                       std::string(error.message()) +
                       "); its queues hold what comes instead"));
    EXPECT_FALSE(Logged("quiesced for the hand-over"));
    plane_->Stop();
    ex_->Shutdown();
    EXPECT_TRUE(ublk_->Called("release 0"));
    EXPECT_TRUE(ublk_->Has(0));
  }
};

TEST_F(QuiesceFailsTest, TimedOut) {
  Check(absl::DeadlineExceededError(
      "ublk quiesce (device 0): a queue had every request in service for 2000 ms"));
}

TEST_F(QuiesceFailsTest, OtherError) {
  Check(absl::InternalError("ublk quiesce (device 0): Input/output error"));
}

// Requests that stay in service (a head waiting out an outage) do not hold the stop
// past handover_quiesce_ms: they are held for the next agent, and the log says how many.
TEST_F(ExporterTest, AQuiescedDeviceWhoseRequestsStayInServiceIsHeldInTime) {
  before_create_ = [](FakeUblk& u) { u.features |= kFlagQuiesce; };
  handover_quiesce_ms_ = 50;
  Make();
  const std::string h = Head();
  ASSERT_OK(Export(h));
  ublk_->SetUnanswered({4});
  // A stop that waited for them would never return: the test's timeout says so, not a
  // bound on the time taken.
  ASSERT_OK(BeginStop(StopMode::kHandOver));
  EXPECT_GT(ublk_->Position("hold 0"), ublk_->Position("quiesce 0"));
  EXPECT_TRUE(Logged("/dev/ublkb0 of head " + h + " quiesced for the hand-over in "));
  EXPECT_TRUE(Logged("4 request(s) still in service, held for the next agent"));
}

TEST_F(ExporterTest, WithoutUserRecoveryAStopRemovesTheDevices) {
  before_create_ = [](FakeUblk& u) { u.features = 0; };
  Make();
  const std::string h = Head();
  ASSERT_OK(Export(h));
  absl::Status s = BeginStop(StopMode::kHandOver);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("no user recovery"));
  plane_->Run([this] { ex_->StopFollowing(); });
  plane_->Stop();
  ex_->Shutdown();
  EXPECT_FALSE(ublk_->Has(0));
  EXPECT_FALSE(ublk_->Called("hold 0"));
}

// StopAgent's check: a stop that would remove a device in use is refused, naming each
// such device and its users, and nothing changes; one that removes nothing in use, or
// is forced, or hands over, passes.
TEST_F(ExporterTest, ARemovingStopIsRefusedWhileADeviceIsInUseAndNothingChanges) {
  const auto [h1, h2] = SomeDevicesInUse();
  const std::string calls = ublk_->Calls();
  absl::Status s = CheckStop(StopMode::kRemove);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("block devices in use: /dev/ublkb0 of head " + h1 +
                                     " (mounted at /mnt), /dev/ublkb9 of head nguid.mounted (held "
                                     "by dm-0); a removing stop would pull them from under their "
                                     "users: unmount or close them first, or force it"));
  EXPECT_THAT(s.message(), Not(HasSubstr("ublkb1")));
  EXPECT_THAT(s.message(), Not(HasSubstr("ublkb8")));
  EXPECT_EQ(ublk_->Calls(), calls);
  EXPECT_OK(CheckStop(StopMode::kHandOver));
  EXPECT_OK(CheckStop(StopMode::kForceRemove));
  // The exporter goes on as before.
  ASSERT_OK(Unexport(h2));
  EXPECT_TRUE(ublk_->Has(0));
  EXPECT_EQ(Record(0), "head=" + h1);
  ublk_->SetUsers(0, {});
  ublk_->SetUsers(9, {});
  EXPECT_OK(CheckStop(StopMode::kRemove));
}

// Without user recovery every stop removes the devices: a hand-over is checked too.
TEST_F(ExporterTest, WithoutUserRecoveryEveryStopIsCheckedForDevicesInUse) {
  before_create_ = [](FakeUblk& u) { u.features = 0; };
  Make();
  const std::string h = Head();
  ASSERT_OK(Export(h));
  ublk_->SetUsers(0, {"pid 812 (fio)"});
  absl::Status s = CheckStop(StopMode::kHandOver);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("/dev/ublkb0 of head " + h + " (pid 812 (fio)); this kernel's "
                                     "ublk has no user recovery, so a stop removes them"));
  // A signal's stop cannot be refused: the device cannot be handed over, and goes.
  ASSERT_OK(BeginStop(StopMode::kRemove));
  EXPECT_FALSE(ublk_->Called("hold 0"));
  plane_->Stop();
  ex_->Shutdown();
  EXPECT_FALSE(ublk_->Has(0));
  EXPECT_TRUE(Logged("/dev/ublkb0 of head " + h + " is in use (pid 812 (fio)) and is removed all "
                     "the same (this kernel's ublk has no user recovery)"));
}

TEST_F(ExporterTest, AForcedStopRemovesEveryDeviceInUseOrNot) {
  Make();
  const std::string h = Head();
  ASSERT_OK(Export(h));
  ublk_->SetUsers(0, {"mounted at /mnt"});
  ASSERT_OK(BeginStop(StopMode::kForceRemove));
  EXPECT_FALSE(ublk_->Called("hold 0"));
  EXPECT_TRUE(absl::IsUnavailable(Export(h).status()));  // nothing more is done meanwhile
  plane_->Stop();
  ex_->Shutdown();
  // Not waiting for the mount to let go: the agent is going (the kernel's DEL_DEV would
  // not return while the file system is mounted).
  EXPECT_EQ(ublk_->Calls(),
            "add set-params 0 open-queues 0 start 0 stop 0 close-queues 0 delete-nowait 0");
  EXPECT_EQ(Record(0), "");
  EXPECT_TRUE(Logged("/dev/ublkb0 of head " + h + " is in use (mounted at /mnt) and is removed all "
                     "the same (a forced stop)"));
}

// SIGTERM under --stop=remove: a signal cannot be refused, so each device in use is
// handed over instead (it stays, with its record, for the next agent; an event says
// why), and the rest are removed.
TEST_F(ExporterTest, ARemovingStopHandsOverTheDevicesInUseAndRemovesTheRest) {
  const auto [h1, h2] = SomeDevicesInUse();
  ASSERT_OK(BeginStop(StopMode::kRemove));
  EXPECT_TRUE(ublk_->Called("hold 0"));
  EXPECT_FALSE(ublk_->Called("hold 1"));
  EXPECT_TRUE(HasExportEvent(h1, "head-unexported  /dev/ublkb0 handed over to the next agent "
                                 "instead of removed: in use (mounted at /mnt)"))
      << absl::StrJoin(ExportEvents(h1), "; ");
  EXPECT_TRUE(HasExportEvent("nguid.mounted", "/dev/ublkb9 left for the next agent "
                                              "instead of removed: in use (held by dm-0)"));
  plane_->Stop();
  ex_->Shutdown();
  EXPECT_TRUE(ublk_->Has(0));
  EXPECT_EQ(Record(0), "head=" + h1);
  EXPECT_TRUE(ublk_->Called("release 0"));
  EXPECT_FALSE(ublk_->Called("stop 0"));
  EXPECT_TRUE(ublk_->Has(9));
  EXPECT_EQ(Record(9), "head=nguid.mounted");
  EXPECT_FALSE(ublk_->Has(1));
  EXPECT_EQ(Record(1), "");
  EXPECT_FALSE(ublk_->Has(8));
  EXPECT_EQ(Record(8), "");
  EXPECT_TRUE(Logged("/dev/ublkb0 handed over to the next agent instead of removed: in use "
                     "(mounted at /mnt) (head " + h1 + ")"));
}

// A device left during an outage its head was set to ride out (120 s) waits that long
// for its head, not only --ublk_recover_wait_secs (30 s).
TEST_F(ExporterTest, ALeftDeviceWaitsForItsHeadsOwnDelayedRemoval) {
  WriteRecord(7, "nguid.slow");
  before_create_ = [](FakeUblk& u) { u.Leave(7, 4242, kSectors); };
  head_delay_ = [](const std::string& head) -> int64_t { return head == "nguid.slow" ? 120 : 0; };
  Make();
  EXPECT_TRUE(Logged("or removed in 120 s"));
  AdvanceSeconds(100);
  plane_->Run([] {});
  plane_->Run([] {});
  EXPECT_TRUE(ublk_->Has(7));
  AdvanceSeconds(21);
  ASSERT_TRUE(Await([&] { return !ublk_->Has(7); })) << ublk_->Calls();
  ASSERT_TRUE(Await([&] { return HasExportEvent("nguid.slow", "did not come back within 120 s"); }));
}

// ---- The I/O buffers' budget. ----

TEST_F(ExporterTest, DevicesTakeTheirBuffersFromThePoolsWhereTheKernelCan) {
  Make();
  const std::string h = Head();
  ASSERT_OK(Export(h));
  auto info = ublk_->Info(0);
  ASSERT_OK(info);
  EXPECT_TRUE(info->flags & kFlagNeedGetData);
  ASSERT_EQ(ublk_->Setups().size(), 1u);
  EXPECT_TRUE(ublk_->Setups()[0].pooled);
  EXPECT_FALSE(ublk_->Setups()[0].beyond_budget);
}

TEST_F(ExporterTest, WithoutNeedGetDataEachTagHasItsOwnBuffer) {
  before_create_ = [](FakeUblk& u) { u.features = kFlagUserRecovery | kFlagUserRecoveryReissue; };
  Make();
  ASSERT_OK(Export(Head()));
  auto info = ublk_->Info(0);
  ASSERT_OK(info);
  EXPECT_FALSE(info->flags & kFlagNeedGetData);
  ASSERT_EQ(ublk_->Setups().size(), 1u);
  EXPECT_FALSE(ublk_->Setups()[0].pooled);
  // And the budget does not apply to it.
  ublk_->heads_left = 0;
  ASSERT_OK(Export(Head("c1", 2)));
}

TEST_F(ExporterTest, AnExportPastTheBudgetIsResourceExhaustedAndAsksNothingOfTheKernel) {
  Make();
  ublk_->heads_left = 0;
  const std::string h = Head();
  auto dev = Export(h);
  ASSERT_TRUE(absl::IsResourceExhausted(dev.status())) << dev.status();
  EXPECT_THAT(std::string(dev.status().message()),
              ::testing::AllOf(::testing::HasSubstr(h), ::testing::HasSubstr("--max_pinned_mib=8"),
                               ::testing::HasSubstr("unexport one or raise --max_pinned_mib")));
  EXPECT_EQ(ublk_->Calls(), "");
  ublk_->heads_left = 1;
  ASSERT_OK(Export(h));
}

TEST_F(ExporterTest, ATakeOverIsNeverRefusedForTheBudget) {
  WriteRecord(5, "");
  const std::string h = Head();
  ASSERT_OK(mp_->RemoveController("c0", "gone for now"));
  Run();
  WriteRecord(5, h);
  before_create_ = [](FakeUblk& u) {
    u.Leave(5, 4242, kSectors);
    u.heads_left = 0;
  };
  Make();
  backends_.erase("c0");
  Head();
  ASSERT_TRUE(Await([&] { return ublk_->Called("end-recovery 5"); })) << ublk_->Calls();
  ASSERT_EQ(ublk_->Setups().size(), 1u);
  EXPECT_TRUE(ublk_->Setups()[0].beyond_budget);
  EXPECT_FALSE(ublk_->Setups()[0].pooled);  // left without NEED_GET_DATA: buffers of its own
}

TEST_F(ExporterTest, ABudgetThatHoldsNoDeviceIsInvalid) {
  ExporterOptions o;
  for (auto& w : workers_) o.workers.push_back(w.get());
  o.max_io_bytes = 128 * 1024;
  o.max_pinned_bytes = 128 * 1024 * o.workers.size() - 1;
  o.state_dir = state_dir_;
  auto ex = Exporter::CreateWithDriver(mp_.get(), plane_.get(), o, std::make_unique<FakeUblk>());
  ASSERT_TRUE(absl::IsInvalidArgument(ex.status())) << ex.status();
  EXPECT_THAT(std::string(ex.status().message()), ::testing::HasSubstr("--max_pinned_mib must be at least"));
}

TEST_F(ExporterTest, ANumberAnotherServerTookMeanwhileIsPassedOverAndItsRecordGoes) {
  Make();
  ublk_->TakeId(0);  // free when looked at, taken at ADD_DEV
  auto dev = Export(Head());
  ASSERT_OK(dev);
  EXPECT_EQ(*dev, "/dev/ublkb1");
  EXPECT_FALSE(std::filesystem::exists(state_dir_ + "/0"));
  EXPECT_TRUE(std::filesystem::exists(state_dir_ + "/1"));
}

TEST_F(ExporterTest, ARecordWhoseDeviceNeverCameIsForgotten) {
  WriteRecord(4, "nguid-whatever");  // the agent went between the record and ADD_DEV
  Make();
  EXPECT_FALSE(std::filesystem::exists(state_dir_ + "/4"));
  auto dev = Export(Head());
  ASSERT_OK(dev);
  EXPECT_EQ(*dev, "/dev/ublkb0");
}

}  // namespace
}  // namespace umpath::ublk
