#include "agent/handover/channel.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace umpath::handover {
namespace {

using ::testing::HasSubstr;

struct Pair {
  UniqueFd a, b;
};
Pair SocketPair() {
  int sv[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

// How many descriptors this process has open.
size_t OpenFds() {
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) n += !e.path().empty();
  return n;
}

// The memory behind a received memfd is the sender's memory: what one side writes,
// the other reads (what the successor's queues need of the predecessor's).
TEST(HandoverChannelTest, PassesMemoryAndText) {
  Pair p = SocketPair();
  UniqueFd mem(memfd_create("umpath-test", MFD_CLOEXEC));
  ASSERT_TRUE(mem.valid());
  ASSERT_EQ(ftruncate(mem.get(), 4096), 0);
  auto* mine = static_cast<char*>(mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mem.get(), 0));
  ASSERT_NE(mine, MAP_FAILED);
  std::strcpy(mine, "queue entries");
  ASSERT_TRUE(Send(p.a.get(), "state container=0", {mem.get()}).ok());
  absl::StatusOr<Message> m = Receive(p.b.get(), 1000);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->text, "state container=0");
  ASSERT_EQ(m->fds.size(), 1u);
  EXPECT_NE(m->fds[0].get(), mem.get());
  auto* theirs = static_cast<char*>(mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, m->fds[0].get(), 0));
  ASSERT_NE(theirs, MAP_FAILED);
  EXPECT_STREQ(theirs, "queue entries");
  std::strcpy(theirs, "completions");
  EXPECT_STREQ(mine, "completions");
  munmap(mine, 4096);
  munmap(theirs, 4096);
}

// More text than a packet and more descriptors than one takes: several packets, one
// message, in order.
TEST(HandoverChannelTest, ALargeMessageGoesWhole) {
  Pair p = SocketPair();
  std::string text;
  for (int i = 0; text.size() < 100'000; ++i) text += "mapping iova=" + std::to_string(i) + "\n";
  std::vector<UniqueFd> mine;
  std::vector<int> raw;
  for (int i = 0; i < 300; ++i) {
    int sv[2];
    ASSERT_EQ(pipe2(sv, O_CLOEXEC), 0);
    close(sv[1]);
    mine.emplace_back(sv[0]);
    raw.push_back(sv[0]);
  }
  std::thread sender([&] { EXPECT_TRUE(Send(p.a.get(), text, raw).ok()); });
  absl::StatusOr<Message> m = Receive(p.b.get(), 5000);
  sender.join();
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->text, text);
  ASSERT_EQ(m->fds.size(), 300u);
  // In order: each received descriptor is the pipe sent in its place.
  for (size_t i = 0; i < 300; i += 37) {
    struct stat a, b;
    ASSERT_EQ(fstat(mine[i].get(), &a), 0);
    ASSERT_EQ(fstat(m->fds[i].get(), &b), 0);
    EXPECT_EQ(a.st_ino, b.st_ino) << i;
  }
}

TEST(HandoverChannelTest, APeerThatGoesIsSaidSo) {
  {
    Pair p = SocketPair();
    p.a = UniqueFd();
    absl::StatusOr<Message> m = Receive(p.b.get(), 1000);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kUnavailable) << m.status();
  }
  {
    // Gone in the middle of a message: its first packet came, the last never will.
    Pair p = SocketPair();
    std::string text(40'000, 'x');
    ASSERT_TRUE(Send(p.a.get(), text.substr(0, 10), {}).ok());  // a whole one first
    ASSERT_TRUE(Receive(p.b.get(), 1000).ok());
    // The first packet of a two-packet message, by hand: 8-byte header without the last flag.
    char packet[8 + 16] = {'U', 'M', 'H', 'O', 0, 0, 0, 0};
    ASSERT_EQ(send(p.a.get(), packet, sizeof packet, 0), static_cast<ssize_t>(sizeof packet));
    p.a = UniqueFd();
    absl::StatusOr<Message> m = Receive(p.b.get(), 1000);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kDataLoss) << m.status();
    EXPECT_THAT(m.status().message(), HasSubstr("in the middle of a message"));
  }
  {
    Pair p = SocketPair();
    absl::StatusOr<Message> m = Receive(p.b.get(), 50);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kDeadlineExceeded) << m.status();
  }
}

// A packet that is not ours is refused, and the descriptors it brought are closed.
TEST(HandoverChannelTest, AForeignPacketIsRefusedAndItsDescriptorsClosed) {
  Pair p = SocketPair();
  const size_t before = OpenFds();
  UniqueFd mem(memfd_create("umpath-test", MFD_CLOEXEC));
  const int fd = mem.get();
  char junk[16] = "GET / HTTP/1.1";
  iovec iov{junk, sizeof junk};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  ASSERT_EQ(sendmsg(p.a.get(), &msg, 0), static_cast<ssize_t>(sizeof junk));
  mem = UniqueFd();
  absl::StatusOr<Message> m = Receive(p.b.get(), 1000);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kDataLoss) << m.status();
  EXPECT_THAT(m.status().message(), HasSubstr("not ours"));
  EXPECT_EQ(OpenFds(), before);
}

TEST(HandoverChannelTest, ListenConnectAndPeer) {
  const std::string dir = ::testing::TempDir() + "/handover-" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/umpathd.handover";
  EXPECT_EQ(Connect(path).status().code(), absl::StatusCode::kNotFound);
  {
    absl::StatusOr<UniqueFd> l = Listen(path);
    ASSERT_TRUE(l.ok()) << l.status();
    struct stat st;
    ASSERT_EQ(stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    absl::StatusOr<UniqueFd> c = Connect(path);
    ASSERT_TRUE(c.ok()) << c.status();
    UniqueFd s(accept4(l->get(), nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_TRUE(s.valid());
    absl::StatusOr<Peer> peer = PeerOf(s.get());
    ASSERT_TRUE(peer.ok()) << peer.status();
    EXPECT_EQ(peer->pid, getpid());
    EXPECT_EQ(peer->uid, getuid());
  }
  // The listener went and left its file: nothing answers there.
  EXPECT_EQ(Connect(path).status().code(), absl::StatusCode::kUnavailable);
  // A new listener replaces a socket file, never another file.
  EXPECT_TRUE(Listen(path).ok());
  const std::string file = dir + "/not-a-socket";
  { std::FILE* f = std::fopen(file.c_str(), "w"); std::fclose(f); }
  EXPECT_EQ(Listen(file).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(std::filesystem::exists(file));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace umpath::handover
