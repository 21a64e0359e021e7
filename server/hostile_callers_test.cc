// Callers that mean harm, against the real servers on a real Unix socket and a real
// TCP health port (issue 17): arbitrary method paths, bodies that are not protobuf,
// oversized names, streams held open, a client that never goes away.
#include <dirent.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <fstream>
#include <random>
#include <string>
#include <thread>

#include "agent/base/status_matchers.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel_posix.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/impl/client_unary_call.h"
#include "gtest/gtest.h"
#include "server/control_server.h"
#include "server/metrics.h"
#include "server/protobuf_log.h"
#include "server/testing/server_test.h"
#include "server/testing/test_topology.h"
#include "umpath/v1/control.grpc.pb.h"

namespace umpath::server {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

constexpr char kReflection[] = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

size_t Threads() {
  size_t n = 0;
  DIR* d = opendir("/proc/self/task");
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

long RssKib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

// A connection to `path` made by another process, as uid `uid` with primary group `gid`
// and supplementary `groups` (root only: the test runs as root), handed back over
// SCM_RIGHTS. The server reads a peer's credentials when it accepts, so the channel made
// on it is that process's, whatever this one is. The child makes only system calls.
sockaddr_un UnixAddress(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

// A socket bound at `path` that no one listens on (a crashed agent's, or another's).
int BoundSocket(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const sockaddr_un addr = UnixAddress(path);
  EXPECT_EQ(bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0) << path;
  return fd;
}

// One byte and room for one descriptor, for sendmsg and recvmsg.
struct FdMessage {
  FdMessage() {
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
  }
  FdMessage(const FdMessage&) = delete;
  char byte = 0;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
};

int ConnectAs(const std::string& path, uid_t uid, gid_t gid, const std::vector<gid_t>& groups) {
  const sockaddr_un addr = UnixAddress(path);
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return -1;
  const pid_t pid = fork();
  if (pid == 0) {
    if (setgroups(groups.size(), groups.data()) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
      _exit(1);
    }
    const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) _exit(2);
    FdMessage m;
    cmsghdr* c = CMSG_FIRSTHDR(&m.msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
    _exit(sendmsg(pair[1], &m.msg, 0) == 1 ? 0 : 3);
  }
  close(pair[1]);
  int fd = -1;
  FdMessage m;
  if (recvmsg(pair[0], &m.msg, MSG_CMSG_CLOEXEC) == 1 && CMSG_FIRSTHDR(&m.msg) != nullptr) {
    std::memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m.msg)), sizeof fd);
  }
  close(pair[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return fd;
}

std::unique_ptr<v1::MultipathControl::Stub> StubAs(const std::string& path, uid_t uid, gid_t gid,
                                                   const std::vector<gid_t>& groups = {}) {
  const int fd = ConnectAs(path, uid, gid, groups);
  EXPECT_GE(fd, 0);
  return v1::MultipathControl::NewStub(
      grpc::CreateInsecureChannelFromFd("umpathd", fd));
}

std::string RoleOf(v1::MultipathControl::Stub* stub, grpc::Status* status) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  v1::GetAgentInfoResponse resp;
  *status = stub->GetAgentInfo(&ctx, {}, &resp);
  return resp.agent_info().caller_role();
}

class HostileCallerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/umpath-hostile-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    MultipathOptions mo;
    mo.incarnation = "00000000000000bb";
    ASSERT_OK_AND_ASSIGN(mp_, Multipath::Create(mo));
    ASSERT_OK(testing::AddTestTopology(mp_.get(), 2, 1));
  }
  void TearDown() override {
    server_.reset();
    mp_.reset();
    std::filesystem::remove_all(dir_);
  }

  void Start(int max_sync_threads = 8,
             std::chrono::milliseconds shutdown_grace = std::chrono::milliseconds(5000),
             std::function<void(ServerOptions&)> tweak = nullptr) {
    ServerOptions o;
    o.shutdown_grace = shutdown_grace;
    o.socket_path = dir_ + "/umpathd.sock";
    o.access.admin_uids = {getuid()};
    o.health_address = "127.0.0.1:0";
    o.rpc_stats = &stats_;
    o.max_sync_threads = max_sync_threads;
    if (tweak) tweak(o);
    ASSERT_OK_AND_ASSIGN(server_, ControlServer::Create(mp_.get(), std::move(o)));
    socket_ = grpc::CreateChannel("unix:" + server_->socket_path(),
                                  grpc::InsecureChannelCredentials());
    health_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->health_port()),
                                  grpc::InsecureChannelCredentials());
    stub_ = v1::MultipathControl::NewStub(socket_);
  }

  template <typename Req, typename Resp>
  grpc::Status Call(grpc::Status (v1::MultipathControl::Stub::*m)(grpc::ClientContext*,
                                                                   const Req&, Resp*),
                    const Req& req) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    Resp resp;
    return (stub_.get()->*m)(&ctx, req, &resp);
  }

  size_t Series() const { return stats_.Rows().size(); }

  std::string dir_;
  std::unique_ptr<Multipath> mp_;
  std::vector<std::string> log_;
  RpcStats stats_{[this](const std::string& l) { log_.push_back(l); }};
  std::unique_ptr<ControlServer> server_;
  std::shared_ptr<grpc::Channel> socket_;
  std::shared_ptr<grpc::Channel> health_;
  std::unique_ptr<v1::MultipathControl::Stub> stub_;
};

// Before the fix the health port answered reflection (OK here) and each distinct path
// below made a series of umpath_rpcs_total and a log line: 20,000+ of each.
TEST_F(HostileCallerTest, TenThousandRandomMethodNamesMakeOneSeriesAndNoReflectionOnHealth) {
  Start();
  grpc::health::v1::HealthCheckRequest check;
  EXPECT_TRUE(RawCall(health_.get(), "/grpc.health.v1.Health/Check", check.SerializeAsString()).ok());
  EXPECT_EQ(RawCall(health_.get(), kReflection, "").error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(RawCall(health_.get(), "/umpath.v1.MultipathControl/GetAgentInfo", "").error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  // Reflection stays where it belongs.
  EXPECT_TRUE(RawCall(socket_.get(), kReflection, "").ok());
  const size_t series_before = Series();
  const long rss_before = RssKib();
  const auto started = std::chrono::steady_clock::now();

  std::mt19937 rng(17);
  const std::string alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._";
  auto random_name = [&](size_t n) {
    std::string s;
    for (size_t i = 0; i < n; ++i) s += alphabet[rng() % alphabet.size()];
    return s;
  };
  for (int i = 0; i < 10000; ++i) {
    const std::string path = "/" + random_name(1 + rng() % 60) + "/" + random_name(1 + rng() % 60);
    grpc::Channel* ch = (i % 2 == 0) ? health_.get() : socket_.get();
    grpc::Status s = RawCall(ch, path, random_name(rng() % 32));
    ASSERT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED) << path;
    ASSERT_EQ(s.error_message(), "unknown method");
  }
  // One series for every unknown path (and its one code), whatever was tried.
  EXPECT_LE(Series(), series_before + 1);
  int unknown = 0;
  for (const RpcStats::Row& r : stats_.Rows()) {
    if (r.method == "unknown") {
      EXPECT_EQ(r.code, "UNIMPLEMENTED");
      unknown += static_cast<int>(r.count);
    }
  }
  EXPECT_EQ(unknown, 10000 + 2);
  // One line, the first; the rest within 10 s are counted into the next (a slow,
  // sanitized run may span more than one 10 s window).
  const auto windows = (std::chrono::steady_clock::now() - started) / std::chrono::seconds(10);
  EXPECT_LE(log_.size(), 2u + windows);
  for (const std::string& l : log_) EXPECT_LE(l.size(), 512u) << l;
  std::printf("series %zu -> %zu, log lines %zu, RSS %ld -> %ld KiB\n", series_before, Series(),
              log_.size(), rss_before, RssKib());
}

// Reflection is a sync bidi stream: each open one holds an OS thread. Before the quota,
// 2,000 streams held open made 2,000 threads.
TEST_F(HostileCallerTest, ReflectionStreamsHeldOpenDoNotGrowThreadsWithoutBound) {
  constexpr int kMaxSyncThreads = 8;
  constexpr int kStreams = 2000;
  Start(kMaxSyncThreads);
  EXPECT_TRUE(RawCall(socket_.get(), kReflection, "").ok());  // the pollers exist
  const size_t threads_before = Threads();
  grpc::GenericStub stub(socket_);
  grpc::CompletionQueue cq;
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
  std::vector<std::unique_ptr<grpc::GenericClientAsyncReaderWriter>> streams;
  for (int i = 0; i < kStreams; ++i) {
    ctxs.push_back(std::make_unique<grpc::ClientContext>());
    streams.push_back(stub.PrepareCall(ctxs.back().get(), kReflection, &cq));
    streams.back()->StartCall(reinterpret_cast<void*>(static_cast<intptr_t>(i)));
  }
  void* tag;
  bool ok;
  for (int i = 0; i < kStreams; ++i) ASSERT_TRUE(cq.Next(&tag, &ok));
  // Give the server time to take up what it will (threads only grow on work).
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const size_t threads_held = Threads();
  EXPECT_LE(threads_held, threads_before + kMaxSyncThreads + 32)
      << "threads " << threads_before << " -> " << threads_held;

  // Every stream ends: those past the quota were refused, the rest end when we do.
  std::vector<grpc::Status> statuses(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    streams[i]->WritesDone(reinterpret_cast<void*>(static_cast<intptr_t>(i)));
    ASSERT_TRUE(cq.Next(&tag, &ok));
    streams[i]->Finish(&statuses[i], reinterpret_cast<void*>(static_cast<intptr_t>(i)));
    ASSERT_TRUE(cq.Next(&tag, &ok));
  }
  // Refused, or served once a held stream let its thread go (a slow, sanitized run sees
  // some of those): the bound is on threads, not on how many were refused.
  int exhausted = 0;
  for (const grpc::Status& s : statuses) {
    exhausted += s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
    EXPECT_TRUE(s.ok() || s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED)
        << s.error_code() << " " << s.error_message();
  }
  EXPECT_GE(exhausted, kStreams / 2);
  std::printf("threads %zu -> %zu with %d streams; %d RESOURCE_EXHAUSTED\n", threads_before,
              threads_held, kStreams, exhausted);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

// Before the fix an 8 KB name came back RESOURCE_EXHAUSTED (the error repeated it whole,
// over the client's 8 KiB metadata limit), and each failed mutation logged it whole.
TEST_F(HostileCallerTest, HugeNamesAreInvalidArgumentWithABoundedMessageAndShutdownStillEnds) {
  Start(8, std::chrono::milliseconds(2000));
  using Stub = v1::MultipathControl::Stub;
  for (const size_t n : {size_t{8} << 10, size_t{100} << 10, size_t{1} << 20}) {
    const std::string id(n, 'x');
    std::vector<grpc::Status> answers;
    v1::GetHeadRequest get;
    get.set_name("heads/" + id);
    answers.push_back(Call(&Stub::GetHead, get));
    v1::SetDelayedRemovalRequest set;
    set.set_name("heads/" + id);
    set.set_delayed_removal_secs(5);
    answers.push_back(Call(&Stub::SetDelayedRemoval, set));
    v1::FailPathRequest fail;
    fail.set_name("heads/h/paths/" + id);
    answers.push_back(Call(&Stub::FailPath, fail));
    v1::DetachControllerRequest detach;
    detach.set_name("controllers/" + id);
    answers.push_back(Call(&Stub::DetachController, detach));
    v1::AttachControllerRequest attach;
    attach.set_transport("tcp");
    attach.set_address(id);
    answers.push_back(Call(&Stub::AttachController, attach));
    for (const grpc::Status& s : answers) {
      EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << n << ": " << s.error_message().substr(0, 200);
      EXPECT_LE(s.error_message().size(), 256u) << n;
      EXPECT_THAT(s.error_message(), HasSubstr("over the limit of")) << n;
    }
    v1::WatchEventsRequest watch;
    watch.add_heads("heads/" + id);
    grpc::ClientContext ctx;
    auto reader = stub_->WatchEvents(&ctx, watch);
    v1::WatchEventsResponse msg;
    EXPECT_FALSE(reader->Read(&msg));
    grpc::Status s = reader->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << n;
    EXPECT_LE(s.error_message().size(), 256u) << n;
  }
  ASSERT_FALSE(log_.empty());  // the failed mutations, rate-limited
  for (const std::string& l : log_) EXPECT_LE(l.size(), 512u) << l.substr(0, 200);

  // The client stays: its channel, a reflection stream its server thread waits on, and
  // a health watch. Shutdown cancels them at its deadline and returns.
  grpc::GenericStub generic(socket_);
  grpc::CompletionQueue cq;
  grpc::ClientContext held;
  auto stream = generic.PrepareCall(&held, kReflection, &cq);
  stream->StartCall(nullptr);
  void* tag;
  bool ok;
  ASSERT_TRUE(cq.Next(&tag, &ok));
  grpc::ClientContext health_ctx;
  auto health = grpc::health::v1::Health::NewStub(socket_);
  auto watch = health->Watch(&health_ctx, grpc::health::v1::HealthCheckRequest());
  grpc::health::v1::HealthCheckResponse serving;
  ASSERT_TRUE(watch->Read(&serving));

  auto returned = std::make_shared<std::promise<void>>();
  std::future<void> done = returned->get_future();
  std::thread stopper([this, returned] {
    server_->Shutdown();
    returned->set_value();
  });
  // Not a timing: far past the 2 s deadline, only so that a hang fails instead of
  // waiting for ctest's timeout.
  if (done.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
    ADD_FAILURE() << "Shutdown did not return with the client connected";
    std::fflush(nullptr);
    std::_Exit(1);
  }
  stopper.join();
  held.TryCancel();
  grpc::Status ended;
  stream->Finish(&ended, nullptr);
  ASSERT_TRUE(cq.Next(&tag, &ok));
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  while (watch->Read(&serving)) {
  }
  watch->Finish();
}

// Before the fix both were UNIMPLEMENTED with no message, and each non-UTF-8 string
// logged a libprotobuf ERROR line: 1,000 lines here.
TEST_F(HostileCallerTest, BodiesThatAreNotProtobufAreInvalidArgumentAndTheirLogIsBounded) {
  Mutex mu;
  std::vector<std::string> lines;
  // One window of an hour: the count does not depend on how fast this run is.
  LimitProtobufLog(
      [&](const std::string& l) {
        MutexLock lock(&mu);
        lines.push_back(l);
      },
      int64_t{3600} * 1'000'000'000);
  Start();
  const std::string not_utf8("\x0a\x04\xff\xfe\xfd\xfc", 6);  // GetHeadRequest.name = ff fe fd fc
  const std::string not_protobuf("\xff\xff\xff\xff\xff\xff", 6);  // a tag that never ends
  for (int i = 0; i < 1000; ++i) {
    grpc::Status s = RawCall(socket_.get(), "/umpath.v1.MultipathControl/GetHead",
                             i % 2 ? not_utf8 : not_protobuf);
    ASSERT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << i << " " << s.error_message();
    ASSERT_THAT(s.error_message(), HasSubstr("not a valid GetHead request"));
  }
  // WatchEvents parses its own request (a raw method): the same answer.
  for (const std::string& body : {std::string("\x12\x04\xff\xfe\xfd\xfc", 6), not_protobuf}) {
    grpc::Status s = RawCall(socket_.get(), "/umpath.v1.MultipathControl/WatchEvents", body);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("not a valid WatchEvents request"));
  }
  grpc::Status s = RawCall(health_.get(), "/grpc.health.v1.Health/Check", not_utf8);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  LimitProtobufLog([](const std::string& l) { std::fprintf(stderr, "%s\n", l.c_str()); });
  MutexLock lock(&mu);
  EXPECT_THAT(lines, SizeIs(1));  // the first; the rest are counted into the next line
  for (const std::string& l : lines) {
    EXPECT_LE(l.size(), 400u);
    EXPECT_THAT(l, HasSubstr("UTF-8"));
  }
}

// Health's Check repeats the service it does not know: at most a prefix of it. Before,
// a 100 KB name came back RESOURCE_EXHAUSTED (over the client's metadata limit).
TEST_F(HostileCallerTest, HealthCheckOfAHugeUnknownServiceHasABoundedMessage) {
  Start();
  auto health = grpc::health::v1::Health::NewStub(socket_);
  grpc::ClientContext ctx;
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(std::string(100 << 10, 's'));
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status s = health->Check(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_LE(s.error_message().size(), 256u);
  EXPECT_THAT(s.error_message(), HasSubstr("102400 bytes"));
}

// AIP-193: the arguments first. Before the fix a malformed transport on an agent
// without a backend was FAILED_PRECONDITION.
TEST_F(HostileCallerTest, AttachWithAMalformedTransportIsInvalidArgumentWithoutABackend) {
  Start();
  using Stub = v1::MultipathControl::Stub;
  v1::AttachControllerRequest req;
  req.set_address("0000:00:04.0");
  for (const std::string& transport : {std::string("bogus"), std::string("PCIE"),
                                       std::string("pcie\n"), std::string(8 << 10, 't')}) {
    req.set_transport(transport);
    grpc::Status s = Call(&Stub::AttachController, req);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << transport.substr(0, 20);
    EXPECT_LE(s.error_message().size(), 256u);
  }
  req.set_transport("bogus");
  EXPECT_THAT(Call(&Stub::AttachController, req).error_message(),
              HasSubstr("is not one of pcie, tcp, rdma, fc, loop, kernel"));
  req.set_transport("pcie");  // well-formed: then the missing backend
  EXPECT_EQ(Call(&Stub::AttachController, req).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

// Item 4: the per-caller watcher limit is per uid. Before, it was keyed by uid, gid and
// pid: the second process below was admitted (each new process a fresh allowance).
TEST_F(HostileCallerTest, TwoProcessesOfOneUidShareTheWatcherLimitAndAnotherUidIsNotLockedOut) {
  ASSERT_EQ(geteuid(), 0u) << "makes processes of other uids";
  constexpr uid_t kSidecar = 4242;
  ASSERT_EQ(chmod(dir_.c_str(), 0755), 0);
  Start(8, std::chrono::milliseconds(5000), [&](ServerOptions& o) {
    o.socket_mode = 0666;
    o.access.viewer_uids = {kSidecar};
    o.service.watch.max_watchers_per_caller = 1;
  });
  auto first = StubAs(server_->socket_path(), getuid(), getgid());
  auto second = StubAs(server_->socket_path(), getuid(), getgid());
  auto sidecar = StubAs(server_->socket_path(), kSidecar, kSidecar);
  v1::WatchEventsResponse msg;
  grpc::ClientContext c1, c2, c3;
  auto held = first->WatchEvents(&c1, v1::WatchEventsRequest());
  ASSERT_TRUE(held->Read(&msg));
  auto refused = second->WatchEvents(&c2, v1::WatchEventsRequest());
  const bool admitted = refused->Read(&msg);
  EXPECT_FALSE(admitted) << "a second process of the uid got a watcher past its limit";
  if (admitted) c2.TryCancel();
  while (refused->Read(&msg)) {
  }
  grpc::Status s = refused->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("at most 1 watchers per caller"));
  // The uid at its limit does not take another uid's room.
  auto other = sidecar->WatchEvents(&c3, v1::WatchEventsRequest());
  EXPECT_TRUE(other->Read(&msg));
  c1.TryCancel();
  c3.TryCancel();
  while (held->Read(&msg)) {
  }
  while (other->Read(&msg)) {
  }
  held->Finish();
  other->Finish();
}

// Item 5: roles from the supplementary groups the caller had when it connected. Before,
// from the primary gid only: this caller was a viewer.
TEST_F(HostileCallerTest, ASupplementaryGroupGrantsItsRole) {
  ASSERT_EQ(geteuid(), 0u) << "makes processes of other uids and groups";
  constexpr gid_t kViewers = 4242, kAdmins = 4343;
  ASSERT_EQ(chmod(dir_.c_str(), 0755), 0);
  Start(8, std::chrono::milliseconds(5000), [&](ServerOptions& o) {
    o.socket_mode = 0666;
    o.access.admin_uids.clear();
    o.access.viewer_gids = {kViewers};
    o.access.admin_gids = {kAdmins};
  });
  grpc::Status s;
  auto admin = StubAs(server_->socket_path(), 5000, kViewers, {kAdmins});
  EXPECT_EQ(RoleOf(admin.get(), &s), "admin");
  EXPECT_TRUE(s.ok()) << s.error_message();
  auto viewer = StubAs(server_->socket_path(), 5001, kViewers, {kViewers});
  EXPECT_EQ(RoleOf(viewer.get(), &s), "viewer");
  auto nobody = StubAs(server_->socket_path(), 5002, 5002, {5003});
  RoleOf(nobody.get(), &s);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("uid 5002"));
}

// Item 6: a second agent on a live socket. Before, it unlinked the first one's socket,
// bound its own, and removed that on its way out: the live agent was unreachable.
TEST_F(HostileCallerTest, ASecondAgentOnALiveSocketIsRefusedAndTheFirstKeepsIt) {
  Start();
  ServerOptions o;
  o.socket_path = server_->socket_path();
  o.access.admin_uids = {getuid()};
  {
    absl::StatusOr<std::unique_ptr<ControlServer>> second = ControlServer::Create(mp_.get(), o);
    EXPECT_THAT(second.status(), testing::StatusIs(absl::StatusCode::kFailedPrecondition,
                                                   HasSubstr("an agent answers on")));
  }
  // A new connection by the path still reaches the first agent.
  auto fresh = v1::MultipathControl::NewStub(grpc::CreateChannel(
      "unix:" + server_->socket_path(), grpc::InsecureChannelCredentials()));
  grpc::Status s;
  EXPECT_EQ(RoleOf(fresh.get(), &s), "admin");
  EXPECT_TRUE(s.ok()) << s.error_message();
  // A stale socket (no one listens) is replaced.
  server_.reset();
  close(BoundSocket(o.socket_path));
  ASSERT_OK_AND_ASSIGN(server_, ControlServer::Create(mp_.get(), o));
}

// Item 6: Stop removes only its own socket. Before, whatever was at the path went.
TEST_F(HostileCallerTest, StopLeavesASocketThatIsNotItsOwn) {
  Start();
  const std::string path = server_->socket_path();
  const std::string other = dir_ + "/other.sock";
  const int fd = BoundSocket(other);
  ASSERT_EQ(rename(other.c_str(), path.c_str()), 0);  // another agent took the path
  struct stat before;
  ASSERT_EQ(lstat(path.c_str(), &before), 0);
  server_->Shutdown();
  struct stat after;
  ASSERT_EQ(lstat(path.c_str(), &after), 0) << "the other socket was removed";
  EXPECT_EQ(after.st_ino, before.st_ino);
  close(fd);
}

// Item 6: the socket gets exactly its mode and group, set inside a private directory and
// renamed into place: nothing is left beside it, and a symlink at the path is refused.
TEST_F(HostileCallerTest, TheSocketIsMadeBesideThePathAndNeverThroughASymlink) {
  const std::string target = dir_ + "/target";
  { std::ofstream(target) << "x"; }
  ASSERT_EQ(chmod(target.c_str(), 0600), 0);
  ASSERT_EQ(symlink(target.c_str(), (dir_ + "/umpathd.sock").c_str()), 0);
  ServerOptions o;
  o.socket_path = dir_ + "/umpathd.sock";
  o.socket_mode = 0666;
  EXPECT_THAT(ControlServer::Create(mp_.get(), o).status(),
              testing::StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not a socket")));
  struct stat st;
  ASSERT_EQ(stat(target.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(unlink(o.socket_path.c_str()), 0);
  Start(8, std::chrono::milliseconds(5000), [](ServerOptions& o) {
    o.socket_mode = 0640;
    o.socket_gid = 4242;
  });
  ASSERT_EQ(lstat(server_->socket_path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  EXPECT_EQ(st.st_gid, 4242u);
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    entries += e.path().filename() != "target";
  }
  EXPECT_EQ(entries, 1);  // the socket alone: the private directory is gone
}

}  // namespace
}  // namespace umpath::server
