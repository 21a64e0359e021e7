// umpathctl's commands against the real server on a real socket.
#include "client/ctl.h"

#include <unistd.h>

#include <filesystem>
#include <sstream>
#include <thread>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "agent/base/mutex.h"
#include "agent/base/status_matchers.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/control_server.h"
#include "server/testing/test_topology.h"

namespace umpath::client {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;
using ::testing::StartsWith;

// An ostream another thread may read while it is written (the watcher's output).
class SharedOutput : public std::streambuf {
 public:
  std::string text() const {
    MutexLock lock(&mu_);
    return text_;
  }

 protected:
  int overflow(int c) override {
    if (c != EOF) {
      MutexLock lock(&mu_);
      text_.push_back(static_cast<char>(c));
    }
    return c;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    MutexLock lock(&mu_);
    text_.append(s, static_cast<size_t>(n));
    return n;
  }

 private:
  mutable Mutex mu_;
  std::string text_ ABSL_GUARDED_BY(mu_);
};

class CtlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/umpath-ctl-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    MultipathOptions mo;
    mo.incarnation = "00000000000000aa";
    ASSERT_OK_AND_ASSIGN(mp_, Multipath::Create(mo));
    ASSERT_OK(umpath::testing::AddTestTopology(mp_.get(), 2, 2));
    StartServer();
  }
  void TearDown() override {
    server_.reset();
    mp_.reset();
    std::filesystem::remove_all(dir_);
  }
  void StartServer(server::ExportOps* exports = nullptr) {
    server_.reset();
    server::ServerOptions o;
    o.socket_path = dir_ + "/umpathd.sock";
    o.access.admin_uids = {getuid()};
    o.service.exports = exports;
    ASSERT_OK_AND_ASSIGN(server_, server::ControlServer::Create(mp_.get(), o));
    stub_ = v1::MultipathControl::NewStub(
        grpc::CreateChannel("unix:" + o.socket_path, grpc::InsecureChannelCredentials()));
  }

  int Run(std::vector<std::string> args, CtlOptions o = {}) {
    out_.str("");
    err_.str("");
    return RunCommand(stub_.get(), args, o, out_, err_);
  }

  std::string dir_;
  std::unique_ptr<Multipath> mp_;
  std::unique_ptr<server::ControlServer> server_;
  std::unique_ptr<v1::MultipathControl::Stub> stub_;
  std::ostringstream out_, err_;
  const std::string head_ = "nguid-ab000000000000000000000000000001";

  // A watcher (below) that has its snapshot and has printed one change (delayed
  // removal 0 -> 5).
  template <typename W>
  void SeenByTheWatcher(W& w) {
    ASSERT_TRUE(w.Printed("# snapshot at revision"));
    ASSERT_OK(mp_->SetDelayedRemoval(head_, 5));
    ASSERT_TRUE(w.Printed(" 0 -> 5"));
  }
};

// Block devices whose buffers follow a budget (the numbers GetAgentInfo reports); an
// export answers one device.
class FakeExports final : public server::ExportOps {
 public:
  void Export(const std::string& head, server::OpDone<absl::StatusOr<ExportedDevice>> done) override {
    std::move(done)(ExportedDevice{"/dev/ublkb3", {259, 3, 17, "/dev/disk/by-id/umpath-" + head}});
  }
  void Unexport(const std::string&, server::OpDone<absl::Status> done) override {
    std::move(done)(absl::UnimplementedError("not in this test"));
  }
  std::optional<BufferBudgetInfo> Budget() override {
    return BufferBudgetInfo{uint64_t{48} << 20, uint64_t{64} << 20, 128 << 10, 192};
  }
};

TEST_F(CtlTest, InfoShowsTheIoBuffersBudget) {
  ASSERT_EQ(Run({"info"}), 0) << err_.str();
  EXPECT_THAT(out_.str(), Not(HasSubstr("I/O buffers")));  // no block devices
  FakeExports exports;
  StartServer(&exports);
  ASSERT_EQ(Run({"info"}), 0) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("I/O buffers 48 MiB pinned of a 64 MiB budget; 192 more heads can be exported"));
  CtlOptions json;
  json.format = Format::kJson;
  ASSERT_EQ(Run({"info"}, json), 0) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("\"exportable_heads\": 192"));
  server_.reset();  // before `exports` goes
}

// issue 19 item 6: the device's path first (what scripts read), then what outlives its
// number; -o json has every field.
TEST_F(CtlTest, ExportPrintsTheDeviceAndItsStableHandles) {
  FakeExports exports;
  StartServer(&exports);
  ASSERT_EQ(Run({"export", head_}), 0) << err_.str();
  EXPECT_EQ(out_.str(), "/dev/ublkb3\n  dev 259:3, diskseq 17\n  link /dev/disk/by-id/umpath-" + head_ + "\n");
  CtlOptions bare;
  bare.no_headers = true;
  ASSERT_EQ(Run({"export", head_}, bare), 0) << err_.str();
  EXPECT_EQ(out_.str(), "/dev/ublkb3\n");
  CtlOptions json;
  json.format = Format::kJson;
  ASSERT_EQ(Run({"export", head_}, json), 0) << err_.str();
  v1::ExportHeadResponse parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(out_.str(), &parsed).ok()) << out_.str();
  EXPECT_EQ(parsed.major(), 259u);
  EXPECT_EQ(parsed.minor(), 3u);
  EXPECT_EQ(parsed.diskseq(), 17u);
  EXPECT_EQ(parsed.by_id_link(), "/dev/disk/by-id/umpath-" + head_);
  server_.reset();  // before `exports` goes
}

TEST_F(CtlTest, HeadsAndHeadPrintTables) {
  ASSERT_EQ(Run({"heads"}), 0) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("HEAD"));
  EXPECT_THAT(out_.str(), HasSubstr(head_));
  EXPECT_THAT(out_.str(), HasSubstr("nguid-ab000000000000000000000000000002"));
  ASSERT_EQ(Run({"head", head_}), 0) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("policy numa"));
  EXPECT_THAT(out_.str(), HasSubstr("c0"));
  EXPECT_THAT(out_.str(), HasSubstr("optimized"));
  ASSERT_EQ(Run({"heads", "removal-pending"}), 0);
  EXPECT_THAT(out_.str(), Not(HasSubstr(head_)));
  // An exported head shows its block device, in the table and in the detail.
  ASSERT_OK_AND_ASSIGN(HeadInfo info, mp_->GetHead(head_));
  ASSERT_OK(mp_->SetHeadExport(head_, info.uid, "/dev/ublkb3", "exported",
                               {259, 3, 17, "/dev/disk/by-id/umpath-" + head_}));
  ASSERT_EQ(Run({"heads"}), 0) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("EXPORT"));
  EXPECT_THAT(out_.str(), ::testing::ContainsRegex(head_ + " .* /dev/ublkb3"));
  ASSERT_EQ(Run({"head", head_}), 0) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("exported as /dev/ublkb3 (259:3, diskseq 17), linked as "
                                    "/dev/disk/by-id/umpath-" + head_));
  ASSERT_EQ(Run({"controllers"}), 0);
  EXPECT_THAT(out_.str(), HasSubstr("live"));
  ASSERT_EQ(Run({"info"}), 0);
  EXPECT_THAT(out_.str(), HasSubstr("your role admin"));
  EXPECT_THAT(out_.str(), HasSubstr("incarnation 00000000000000aa"));
}

TEST_F(CtlTest, JsonIsProtobufsMapping) {
  CtlOptions o;
  o.format = Format::kJson;
  ASSERT_EQ(Run({"head", "heads/" + head_}, o), 0) << err_.str();
  v1::GetHeadResponse parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(out_.str(), &parsed).ok()) << out_.str();
  EXPECT_EQ(parsed.head().name(), "heads/" + head_);
  EXPECT_EQ(parsed.head().paths_size(), 2);
}

TEST_F(CtlTest, SettingsAndMaintenance) {
  ASSERT_EQ(Run({"set-delayed-removal", head_, "30"}), 0) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("delayed_removal_secs 30"));
  ASSERT_EQ(Run({"set-policy", head_, "round-robin"}), 0);
  EXPECT_EQ(mp_->GetHead(head_)->policy, IoPolicy::kRoundRobin);
  ASSERT_EQ(Run({"set-default-delayed-removal", "12"}), 0);
  EXPECT_EQ(mp_->GetDefaults().delayed_removal_secs, 12u);
  ASSERT_EQ(Run({"set-default-policy", "queue-depth"}), 0);
  ASSERT_EQ(Run({"fail-path", head_, "c1", "firmware"}), 0);
  EXPECT_THAT(out_.str(), HasSubstr("failed"));
  ASSERT_EQ(Run({"reinstate-path", head_, "c1"}), 0);
  ASSERT_EQ(Run({"set-io-fail-timeout", head_, "8"}), 0) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("io_fail_timeout_secs 8"));
  EXPECT_EQ(mp_->GetHead(head_)->io_fail_timeout_secs, 8u);
  ASSERT_EQ(Run({"set-default-io-fail-timeout", "4"}), 0) << err_.str();
  EXPECT_EQ(mp_->GetDefaults().io_fail_timeout_secs, 4u);
  EXPECT_EQ(Run({"set-io-fail-timeout", head_, "soon"}), 2);
  EXPECT_EQ(Run({"set-io-fail-timeout", head_, "86401"}), 3);
  ASSERT_EQ(Run({"defaults"}), 0);
  EXPECT_THAT(out_.str(), HasSubstr("io_policy queue-depth"));
  EXPECT_THAT(out_.str(), HasSubstr("io_fail_timeout_secs 4"));
}

TEST_F(CtlTest, ErrorsPrintTheGrpcMessageAndExitNonZero) {
  EXPECT_EQ(Run({"set-delayed-removal", head_, "86401"}), 3);  // INVALID_ARGUMENT
  EXPECT_THAT(err_.str(), HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(err_.str(), HasSubstr("0..86400"));
  EXPECT_EQ(Run({"head", "missing"}), 5);  // NOT_FOUND
  EXPECT_THAT(err_.str(), HasSubstr("NOT_FOUND: head missing not found"));
  EXPECT_EQ(Run({"export", head_}), 9);  // FAILED_PRECONDITION
  EXPECT_EQ(Run({"set-policy", head_, "fastest"}), 2);
  EXPECT_THAT(err_.str(), HasSubstr("unknown policy"));
  EXPECT_EQ(Run({"frobnicate"}), 2);
  EXPECT_EQ(Run({"set-delayed-removal", head_, "ten"}), 2);
  EXPECT_EQ(Run({}), 2);
}

// umpathctl asks for several events to a message; one resuming with six waiting gets
// them so, and prints each as if it came alone (text and JSON), stopping inside a batch.
TEST_F(CtlTest, WatchPrintsABatchAsTheEventsItCarries) {
  const uint64_t from = mp_->journal().current_revision();
  for (int i = 0; i < 6; ++i) ASSERT_OK(mp_->SetDelayedRemoval(head_, 1 + i));
  CtlOptions o;
  o.watch_max_events = 4;
  const std::string since = "--since=" + std::to_string(from);
  ASSERT_EQ(Run({"watch", since}, o), 0) << err_.str();
  const std::vector<std::string> lines = absl::StrSplit(out_.str(), '\n', absl::SkipEmpty());
  ASSERT_THAT(lines, SizeIs(4));
  EXPECT_THAT(lines[0], StartsWith(std::to_string(from + 1) + " "));
  EXPECT_THAT(lines[3], HasSubstr(" 3 -> 4"));
  o.format = Format::kJson;
  ASSERT_EQ(Run({"watch", since}, o), 0) << err_.str();
  // Pretty-printed, one message after the other: four events, each with the
  // incarnation, and no batch.
  const std::string json = out_.str();
  auto count = [&](const std::string& what) {
    size_t n = 0;
    for (size_t at = json.find(what); at != std::string::npos; at = json.find(what, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("\"event\": {"), 4u) << json;
  EXPECT_EQ(count("\"incarnation\": \"00000000000000aa\""), 4u) << json;
  EXPECT_THAT(json, Not(HasSubstr("batch")));
}

// `umpathctl watch --head=HEAD` on a thread, with its own channel as umpathctl has (it
// outlives the server it first talked to), until it has printed two events.
class Watcher {
 public:
  Watcher(const std::string& socket, const std::string& head)
      : stub_(v1::MultipathControl::NewStub(
            grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials()))),
        thread_([this, head, socket] {
          CtlOptions o;
          o.watch_max_events = 2;
          // As umpathctl does: a new connection for each reconnect.
          o.reconnect = [socket]() -> std::unique_ptr<v1::MultipathControl::StubInterface> {
            return v1::MultipathControl::NewStub(
                grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials()));
          };
          EXPECT_EQ(RunCommand(stub_.get(), {"watch", "--head=" + head}, o, out_, err_), 0)
              << err_buf_.text();
        }) {}
  ~Watcher() { Join(); }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }
  // Waits (on the output, up to 20 s) until `what` was printed.
  static bool WaitFor(const SharedOutput& buf, const std::string& what) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (buf.text().find(what) == std::string::npos &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return buf.text().find(what) != std::string::npos;
  }
  bool Printed(const std::string& what) { return WaitFor(out_buf_, what); }
  bool Said(const std::string& what) { return WaitFor(err_buf_, what); }
  std::string out() const { return out_buf_.text(); }
  std::string err() const { return err_buf_.text(); }

 private:
  SharedOutput out_buf_, err_buf_;
  std::ostream out_{&out_buf_}, err_{&err_buf_};
  std::unique_ptr<v1::MultipathControl::Stub> stub_;
  std::thread thread_;
};

TEST_F(CtlTest, WatchPrintsEventsAndResumesAfterTheServerRestarts) {
  Watcher w(server_->socket_path(), head_);
  SeenByTheWatcher(w);
  if (HasFatalFailure()) return;
  // The agent restarts (same core, new server): the stream drops, and the watcher
  // resumes after the last revision it saw, so the change made meanwhile is not lost.
  server_->Shutdown();
  server_.reset();
  ASSERT_OK(mp_->SetDelayedRemoval(head_, 6));
  StartServer();
  w.Join();
  EXPECT_THAT(w.out(), HasSubstr("delayed-removal-changed head=" + head_ + " 0 -> 5"));
  EXPECT_THAT(w.out(), HasSubstr("delayed-removal-changed head=" + head_ + " 5 -> 6"));
  EXPECT_THAT(w.err(), HasSubstr("resuming after revision"));
}

// A real restart: a new core (a new incarnation, its revisions past the old ones). The
// watcher that held the old run's revision is told and starts from a fresh snapshot:
// what the new agent has is printed, nothing is skipped silently.
TEST_F(CtlTest, WatchAcrossAnAgentRestartStartsAgainFromASnapshotAndSaysSo) {
  Watcher w(server_->socket_path(), head_);
  SeenByTheWatcher(w);
  if (HasFatalFailure()) return;
  // The agent goes; another starts, on the same socket, with its own journal.
  server_->Shutdown();
  server_.reset();
  mp_.reset();
  MultipathOptions mo;
  mo.incarnation = "00000000000000bb";
  mo.first_revision = 1'000'000;
  mo.first_head_uid = 1'000'000;
  ASSERT_OK_AND_ASSIGN(mp_, Multipath::Create(mo));
  ASSERT_OK(umpath::testing::AddTestTopology(mp_.get(), 2, 2));
  StartServer();
  ASSERT_TRUE(w.Said("starting again from a snapshot"));
  ASSERT_TRUE(w.Printed("# snapshot at revision 1000"));  // the new run's
  ASSERT_OK(mp_->SetDelayedRemoval(head_, 7));
  w.Join();
  EXPECT_THAT(w.err(), HasSubstr("incarnation 00000000000000bb"));
  EXPECT_THAT(w.out(), HasSubstr("delayed-removal-changed head=" + head_ + " 0 -> 7"));
}

}  // namespace
}  // namespace umpath::client
