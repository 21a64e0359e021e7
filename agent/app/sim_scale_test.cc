// The scale test (issue 18 item 2): umpathd with 4,096 heads of 4 paths from the
// simulator (--sim=64:64:4), driven through its real gRPC socket: every head listed by
// pages of 1,000, GetHead of each, a WatchEvents snapshot, a metrics scrape, then 1,000
// ANA transitions and 1,000 path losses and returns while 100 watchers stream; every
// watcher gets every event, in revision order, and no call fails. The figures (start,
// each phase, resident memory) are printed, not asserted: timings belong to bench/.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/app/agent.h"
#include "agent/base/status_matchers.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace umpath::app {
namespace {

namespace v1alpha = ::umpath::v1alpha;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kSubsystems = 64, kNamespaces = 64, kControllers = 4;
constexpr int kHeads = kSubsystems * kNamespaces;
constexpr int kWatchers = 100;
constexpr int kAnaChanges = 1000, kPathLosses = 1000;

double Secs(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

std::string Rss() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (absl::StartsWith(line, "VmRSS:")) return line;
  }
  return "VmRSS: ?";
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    close(fd);
    return -1;
  }
  close(fd);
  return ntohs(a.sin_port);
}

// GET /metrics; the whole answer.
std::string Scrape(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    const std::string req = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      char buf[65536];
      for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
    }
  }
  close(fd);
  return out;
}

// One WatchEvents stream from `since`, on a thread of its own, until it has every event
// up to the target revision (or fails).
class Watcher {
 public:
  // `expected`: how many of each event type the faults make; `reached` is notified once
  // they have all come.
  Watcher(std::shared_ptr<grpc::Channel> channel, uint64_t since, const std::atomic<uint64_t>* target,
          std::map<int, int> expected)
      : stub_(v1::MultipathControl::NewStub(std::move(channel))), last_(since), target_(target),
        expected_(std::move(expected)) {
    ctx_.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
    v1::WatchEventsRequest req;
    req.set_since_revision(since);
    stream_ = stub_->WatchEvents(&ctx_, req);
    thread_ = std::thread([this] { Run(); });
  }
  ~Watcher() {
    ctx_.TryCancel();
    if (thread_.joinable()) thread_.join();
  }
  void Join() { thread_.join(); }
  const std::string& error() const { return error_; }
  uint64_t last() const { return last_; }
  const std::map<int, int>& types() const { return types_; }
  uint64_t events() const { return events_; }
  Notification reached;

 private:
  bool Done() const {
    const uint64_t t = target_->load(std::memory_order_acquire);
    return t != 0 && last_ >= t;
  }
  void Run() {
    v1::WatchEventsResponse r;
    while (!Done() && stream_->Read(&r)) {
      if (r.has_event()) {
        if (r.event().revision() != last_ + 1) {
          error_ = absl::StrCat("after revision ", last_, " came ", r.event().revision());
          return;
        }
        last_ = r.event().revision();
        ++events_;
        ++types_[r.event().type()];
        if (!reached.HasBeenNotified() && std::all_of(expected_.begin(), expected_.end(), [this](const auto& e) {
              return types_[e.first] >= e.second;
            })) {
          reached.Notify();
        }
      } else if (r.has_progress() && Done() == false) {
        const uint64_t t = target_->load(std::memory_order_acquire);
        if (t != 0 && r.progress().revision() >= t && last_ < t) {
          error_ = absl::StrCat("progress to ", r.progress().revision(), " with events only to ", last_);
          return;
        }
      }
    }
    if (!Done()) {
      grpc::Status s = stream_->Finish();
      error_ = absl::StrCat("the stream ended at revision ", last_, ": ", s.error_code(), " ", s.error_message());
    }
  }

  std::unique_ptr<v1::MultipathControl::Stub> stub_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReader<v1::WatchEventsResponse>> stream_;
  uint64_t last_;
  uint64_t events_ = 0;
  std::map<int, int> types_;
  std::string error_;
  const std::atomic<uint64_t>* target_;
  const std::map<int, int> expected_;
  std::thread thread_;
};

class SimScaleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/umpath-sim-scale-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    agent_.reset();
    std::filesystem::remove_all(dir_);
  }
  grpc::Status Inject(v1alpha::InjectFaultRequest req) {
    grpc::ClientContext ctx;
    v1alpha::InjectFaultResponse resp;
    return sim_->InjectFault(&ctx, req, &resp);
  }
  // The i-th of 1,000 distinct (controller, namespace) pairs, none on a subsystem's last
  // controller: every head keeps a path that no fault touches.
  static std::string Controller(int i) {
    return sim::SimBackend::ControllerName(static_cast<uint32_t>(i) % kSubsystems,
                                           static_cast<uint32_t>(i) / kSubsystems % (kControllers - 1));
  }
  static uint32_t Namespace(int i, uint32_t first) {
    return first + static_cast<uint32_t>(i) / (kSubsystems * (kControllers - 1));
  }

  std::string dir_;
  std::unique_ptr<Agent> agent_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::MultipathControl::Stub> stub_;
  std::unique_ptr<v1alpha::SimulatorControl::Stub> sim_;
};

TEST_F(SimScaleTest, FourThousandHeadsOfFourPathsAndAHundredWatchers) {
  const auto t_all = Clock::now();
  AgentConfig c;
  c.server.socket_path = dir_ + "/umpathd.sock";
  c.server.access.admin_uids = {getuid()};
  c.server.service.watch.progress_interval = std::chrono::milliseconds(200);
  c.state_file = dir_ + "/heads";
  c.handover_socket = "";
  const int port = FreePort();
  ASSERT_GT(port, 0);
  c.metrics_address = absl::StrCat("127.0.0.1:", port);
  sim::SimOptions so;
  ASSERT_OK(sim::ParseSimTopology(absl::StrCat(kSubsystems, ":", kNamespaces, ":", kControllers), &so));
  so.namespace_bytes = 1 << 20;
  so.log = [](const std::string&) {};
  c.sim = so;
  auto t = Clock::now();
  ASSERT_OK_AND_ASSIGN(agent_, Agent::Create(std::move(c)));
  std::printf("figure: start (4096 heads x 4 paths, serving): %.2f s, %s\n", Secs(t), Rss().c_str());
  channel_ = grpc::CreateChannel("unix:" + dir_ + "/umpathd.sock", grpc::InsecureChannelCredentials());
  stub_ = v1::MultipathControl::NewStub(channel_);
  sim_ = v1alpha::SimulatorControl::NewStub(channel_);

  // Every head, by pages of 1,000: each with 4 live, selectable paths.
  t = Clock::now();
  std::vector<std::string> heads;
  v1::ListHeadsRequest list;
  list.set_page_size(1000);
  int pages = 0;
  do {
    grpc::ClientContext ctx;
    v1::ListHeadsResponse page;
    ASSERT_TRUE(stub_->ListHeads(&ctx, list, &page).ok());
    ++pages;
    for (const v1::Head& h : page.heads()) {
      heads.push_back(h.name());
      ASSERT_EQ(h.paths_size(), 4) << h.name();
      for (const v1::Path& p : h.paths()) ASSERT_TRUE(p.selectable()) << p.name();
    }
    list.set_page_token(page.next_page_token());
  } while (!list.page_token().empty());
  ASSERT_EQ(heads.size(), static_cast<size_t>(kHeads));
  EXPECT_EQ(pages, 5);
  std::printf("figure: ListHeads, %d pages of 1000: %.2f s\n", pages, Secs(t));
  t = Clock::now();
  for (const std::string& name : heads) {
    grpc::ClientContext ctx;
    v1::GetHeadRequest req;
    req.set_name(name);
    v1::GetHeadResponse resp;
    ASSERT_TRUE(stub_->GetHead(&ctx, req, &resp).ok()) << name;
  }
  std::printf("figure: GetHead of each of %d heads: %.2f s\n", kHeads, Secs(t));

  // A snapshot, then 100 watchers from it.
  t = Clock::now();
  uint64_t since = 0;
  {
    grpc::ClientContext ctx;
    auto stream = stub_->WatchEvents(&ctx, v1::WatchEventsRequest());
    v1::WatchEventsResponse r;
    ASSERT_TRUE(stream->Read(&r)) << stream->Finish().error_message();
    ASSERT_TRUE(r.has_snapshot());
    EXPECT_EQ(r.snapshot().heads_size(), kHeads);
    since = r.snapshot().revision();
    std::printf("figure: WatchEvents snapshot: %zu B, %.2f s\n", r.ByteSizeLong(), Secs(t));
    ctx.TryCancel();
  }
  t = Clock::now();
  const std::string metrics = Scrape(port);
  EXPECT_TRUE(absl::StartsWith(metrics, "HTTP/1.1 200") || absl::StartsWith(metrics, "HTTP/1.0 200"))
      << metrics.substr(0, 200);
  EXPECT_TRUE(absl::StrContains(metrics, "umpath_head_selectable_paths{head=\"nguid-756d7073"));
  std::printf("figure: metrics scrape: %zu B, %.2f s\n", metrics.size(), Secs(t));

  std::atomic<uint64_t> target{0};
  const std::map<int, int> expected = {{v1::EVENT_TYPE_PATH_STATE_CHANGED, kAnaChanges},
                                        {v1::EVENT_TYPE_PATH_REMOVED, kPathLosses},
                                        {v1::EVENT_TYPE_PATH_ADDED, kPathLosses}};
  std::vector<std::unique_ptr<Watcher>> watchers;
  std::shared_ptr<grpc::Channel> ch;
  for (int i = 0; i < kWatchers; ++i) {
    // Ten connections, ten streams each.
    if (i % 10 == 0) ch = grpc::CreateChannel("unix:" + dir_ + "/umpathd.sock", grpc::InsecureChannelCredentials());
    watchers.push_back(std::make_unique<Watcher>(ch, since, &target, expected));
  }

  // 1,000 ANA transitions, each of a different (controller, group): one path each.
  static_assert(kAnaChanges <= kSubsystems * (kControllers - 1) * 32 && kPathLosses <= kSubsystems * (kControllers - 1) * 32);
  t = Clock::now();
  for (int i = 0; i < kAnaChanges; ++i) {
    v1alpha::InjectFaultRequest req;
    req.set_controller(Controller(i));
    req.mutable_ana_change()->set_group(Namespace(i, 1));
    req.mutable_ana_change()->set_state(v1::ANA_STATE_INACCESSIBLE);
    grpc::Status s = Inject(req);
    ASSERT_TRUE(s.ok()) << i << ": " << s.error_message();
  }
  std::printf("figure: %d ANA transitions injected: %.2f s\n", kAnaChanges, Secs(t));
  // 1,000 paths lost (a namespace detached from a controller), then returned.
  t = Clock::now();
  for (bool lose : {true, false}) {
    for (int i = 0; i < kPathLosses; ++i) {
      v1alpha::InjectFaultRequest req;
      req.set_controller(Controller(i));
      const uint32_t nsid = Namespace(i, 33);
      (lose ? req.mutable_namespace_loss()->set_nsid(nsid) : req.mutable_namespace_return()->set_nsid(nsid));
      grpc::Status s = Inject(req);
      ASSERT_TRUE(s.ok()) << i << ": " << s.error_message();
    }
  }
  std::printf("figure: %d path losses and returns injected: %.2f s\n", kPathLosses, Secs(t));

  // Every event the faults make has reached the first watcher (the ANA changes are read
  // on the control thread after their calls return); then every watcher gets every
  // event up to the journal's revision.
  t = Clock::now();
  ASSERT_TRUE(watchers[0]->reached.WaitFor(std::chrono::minutes(5))) << watchers[0]->error();
  const uint64_t end = agent_->core().journal().current_revision();
  target.store(end, std::memory_order_release);
  for (auto& w : watchers) w->Join();
  std::printf("figure: %d watchers drained to revision %llu: %.2f s after the last injection\n", kWatchers,
              static_cast<unsigned long long>(end), Secs(t));
  for (const auto& w : watchers) {
    ASSERT_EQ(w->error(), "");
    ASSERT_EQ(w->last(), end);
    ASSERT_EQ(w->events(), end - since);
    EXPECT_EQ(w->types(), watchers[0]->types());
  }
  const std::map<int, int>& types = watchers[0]->types();
  for (const auto& [type, n] : types) {
    std::printf("figure: %d events of type %s\n", n, v1::EventType_Name(static_cast<v1::EventType>(type)).c_str());
  }
  EXPECT_EQ(types, expected) << "one event per fault, and no other";
  std::printf("figure: %llu events x %d watchers delivered; total %.1f s, %s\n",
              static_cast<unsigned long long>(end - since), kWatchers, Secs(t_all), Rss().c_str());
}

}  // namespace
}  // namespace umpath::app
