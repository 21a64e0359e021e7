#include "agent/handover/state.h"

#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace umpath::handover {
namespace {

using ::testing::HasSubstr;

// Two controllers of two queues each, as an agent with two workers hands them over;
// one mapping (an I/O buffer pool) whose memory is not passed.
State TwoControllers() {
  State s;
  s.container_fd = 0;
  int fd = 1;
  auto mapping = [&](uint64_t iova, uint64_t len, bool passed) {
    s.mappings.push_back({iova, len, passed ? fd++ : -1});
    return static_cast<int>(s.mappings.size() - 1);
  };
  mapping(uint64_t{1} << 32, uint64_t{64} << 20, false);
  uint64_t iova = 0x10000;
  for (const char* bdf : {"0000:01:00.0", "0000:02:00.0"}) {
    ControllerState c;
    c.bdf = bdf;
    c.group_fd = fd++;
    c.device_fd = fd++;
    c.admin_sq = mapping(iova, 4096, true);
    c.admin_cq = mapping(iova += 4096, 4096, true);
    c.admin_data = mapping(iova += 4096, 4096, true);
    c.admin_log = mapping(iova += 4096, 8192, true);
    iova += 8192;
    c.admin_depth = 32;
    c.admin = {7, 6, false};
    c.next_cid = 301;
    c.aers = 1;
    c.aer_seq = 5;
    c.max_transfer = 512 * 1024;
    for (uint16_t q = 1; q <= 2; ++q) {
      c.queues.push_back({q, 256, mapping(iova, 40 * 4096, true), q, {200, 200, q == 1}});
      iova += 40 * 4096;
    }
    s.controllers.push_back(c);
  }
  return s;
}

size_t Fds(const State& s) {
  size_t n = 1 + 2 * s.controllers.size();
  for (const MappingState& m : s.mappings) n += m.fd >= 0;
  return n;
}

TEST(HandoverStateTest, RoundTrips) {
  const State s = TwoControllers();
  const std::string text = Encode(s);
  absl::StatusOr<State> back = DecodeState(text, Fds(s));
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << text;
  EXPECT_EQ(Encode(*back), text);
  ASSERT_EQ(back->controllers.size(), 2u);
  const ControllerState& c = back->controllers[1];
  EXPECT_EQ(c.bdf, "0000:02:00.0");
  EXPECT_EQ(c.admin.sq_tail, 7);
  EXPECT_EQ(c.admin.cq_head, 6);
  EXPECT_FALSE(c.admin.cq_phase);
  EXPECT_EQ(c.next_cid, 301);
  EXPECT_EQ(c.aers, 1);
  EXPECT_EQ(c.aer_seq, 5);
  ASSERT_EQ(c.queues.size(), 2u);
  EXPECT_EQ(c.queues[0].vector, 1);
  EXPECT_TRUE(c.queues[0].ring.cq_phase);
  EXPECT_EQ(back->mappings[0].fd, -1);  // the pool: unmapped by the successor
}

TEST(HandoverStateTest, HelloAndAnswerRoundTrip) {
  Hello h;
  h.version = "0.1.0";
  h.workers = 2;
  h.queue_depth = 256;
  absl::StatusOr<Hello> hb = DecodeHello(Encode(h));
  ASSERT_TRUE(hb.ok()) << hb.status();
  EXPECT_EQ(hb->protocol, kProtocol);
  EXPECT_EQ(hb->version, "0.1.0");
  EXPECT_EQ(hb->workers, 2u);
  EXPECT_EQ(hb->queue_depth, 256u);
  Answer a{false, "the successor has 4 workers and this agent 2: its queues would not fit"};
  absl::StatusOr<Answer> ab = DecodeAnswer(Encode(a));
  ASSERT_TRUE(ab.ok()) << ab.status();
  EXPECT_FALSE(ab->adopt);
  EXPECT_EQ(ab->why, a.why);
}

// A successor of another protocol is understood only that far: its other fields are
// never read (a later version may change them), and the running agent answers with
// the simple path.
TEST(HandoverStateTest, AnotherProtocolIsReadNoFurther) {
  absl::StatusOr<Hello> h = DecodeHello("umpath-handover\nhello protocol=2 shape=something-new\n");
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->protocol, 2);
}

// Each way a state can lie is refused, naming the line and what is wrong.
TEST(HandoverStateTest, RefusesWhatDoesNotAddUp) {
  const State good = TwoControllers();
  const std::string text = Encode(good);
  const size_t fds = Fds(good);
  struct Case {
    std::string name, text;
    size_t fds;
    std::string error;
  };
  const std::vector<Case> cases = {
      {"not ours", "hello\n", fds, "not a hand-over message"},
      {"cut short", text.substr(0, text.rfind("end")), fds, "no end line"},
      {"more descriptors than named", text, fds + 1, "descriptors came and"},
      {"a descriptor out of range", text, fds - 1, "is not a number in 0.."},
      {"a descriptor named twice", absl::StrReplaceAll(text, {{"group=9 ", "group=1 "}}), fds,
       "descriptor 1 named twice"},
      {"overlapping mappings",
       absl::StrReplaceAll(text, {{"mapping iova=65536 len=4096", "mapping iova=4294967296 len=4096"}}), fds,
       "mappings overlap"},
      {"an unaligned mapping", absl::StrReplaceAll(text, {{"len=8192", "len=8193"}}), fds, "whole pages"},
      {"a position past its queue", absl::StrReplaceAll(text, {{"sq_tail=200", "sq_tail=256"}}), fds,
       "sq_tail=256 is not a number in 0..255"},
      {"a queue named twice", absl::StrReplaceAll(text, {{"qid=2", "qid=1"}}), fds, "queue 1 given twice"},
      {"memory not passed", absl::StrReplaceAll(text, {{"admin_sq=1 ", "admin_sq=0 "}}), fds,
       "names a mapping whose memory was not passed"},
      {"a mapping used twice", absl::StrReplaceAll(text, {{"admin_cq=2 ", "admin_cq=1 "}}), fds,
       "mapping 1 named twice"},
      {"not a PCI address", absl::StrReplaceAll(text, {{"bdf=0000:01:00.0", "bdf=../../../x"}}), fds,
       "bdf is not a PCI address"},
      {"a key given twice", absl::StrReplaceAll(text, {{"aers=1", "aers=1 aers=2"}}), fds, "aers given twice"},
      {"a field without a value", absl::StrReplaceAll(text, {{" aers=1", " aers"}}), fds, "without key=value"},
      {"a queue first", "umpath-handover\nstate container=0\nqueue qid=1\nend\n", 1,
       "a queue before any controller"},
      {"a stray line", absl::StrReplaceAll(text, {{"end\n", "reboot now=1\nend\n"}}), fds,
       "not a controller or queue line"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<State> s = DecodeState(c.text, c.fds);
    ASSERT_FALSE(s.ok()) << c.name;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(s.status().message(), HasSubstr(c.error)) << c.name;
  }
}

TEST(HandoverStateTest, RefusesAHelloOutOfShape) {
  EXPECT_THAT(DecodeHello("umpath-handover\nhello protocol=1 version=x workers=0 queue_depth=256\n")
                  .status()
                  .message(),
              HasSubstr("workers=0 is not a number in 1..64"));
  EXPECT_THAT(DecodeHello("umpath-handover\nanswer adopt=1 why=x\n").status().message(),
              HasSubstr("not a hello message"));
}

// The fuzzer's seed (its first byte the descriptor count) is a state that decodes.
TEST(HandoverStateTest, TheFuzzSeedDecodes) {
  std::ifstream f(UMPATH_HANDOVER_SEED, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string seed = ss.str();
  ASSERT_GT(seed.size(), 1u);
  absl::StatusOr<State> s = DecodeState(seed.substr(1), static_cast<unsigned char>(seed[0]));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->controllers.size(), 1u);
  EXPECT_EQ(s->mappings.size(), 6u);
}

}  // namespace
}  // namespace umpath::handover
