// ListHeads by an AIP-160 filter and WaitHead, through the real server on a real socket:
// a wait answered at once, one answered by a change, by a timeout, by a cancel and by
// the agent's stop, and the calls refused.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "server/testing/server_test.h"

namespace umpath::server {
namespace {

using ::testing::HasSubstr;

class WaitTest : public ServerTest {
 protected:
  grpc::Status List(const std::string& expr, std::vector<std::string>* names, int page_size = 0) {
    v1::ListHeadsRequest req;
    req.set_filter_expression(expr);
    req.set_page_size(page_size);
    names->clear();
    do {
      v1::ListHeadsResponse resp;
      grpc::Status s = Call(&v1::MultipathControl::Stub::ListHeads, req, &resp);
      if (!s.ok()) return s;
      for (const v1::Head& h : resp.heads()) names->push_back(h.name());
      req.set_page_token(resp.next_page_token());
    } while (!req.page_token().empty());
    return grpc::Status::OK;
  }

  struct Waiting {
    grpc::ClientContext ctx;
    v1::WaitHeadResponse resp;
    std::future<grpc::Status> status;
  };
  // A WaitHead call on a thread of its own; `call_deadline_secs` 0: none.
  std::unique_ptr<Waiting> StartWait(v1::WaitHeadRequest req, int call_deadline_secs = 60) {
    auto w = std::make_unique<Waiting>();
    if (call_deadline_secs > 0) {
      w->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(call_deadline_secs));
    }
    Waiting* raw = w.get();
    w->status = std::async(std::launch::async, [this, raw, req] { return stub_->WaitHead(&raw->ctx, req, &raw->resp); });
    return w;
  }
  static v1::WaitHeadRequest For(const std::string& name, v1::HeadCondition c, uint32_t timeout_secs = 0) {
    v1::WaitHeadRequest req;
    req.set_name(name);
    req.set_condition(c);
    req.set_timeout_secs(timeout_secs);
    return req;
  }
  // Until the server holds `n` waits (a state, with a deadline: not a sleep).
  bool ServerWaits(size_t n) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (server_->service().waits() != n) {
      if (std::chrono::steady_clock::now() > end) return false;
      std::this_thread::yield();
    }
    return true;
  }
  static std::string Head(int nsid) {
    return absl::StrCat("heads/nguid-ab0000000000000000000000000000", absl::Hex(nsid, absl::kZeroPad2));
  }
  absl::Status AddNamespace(uint32_t nsid) { return testing::AddTestNamespace(mp_.get(), 2, nsid); }
};

TEST_F(WaitTest, ListHeadsFindsAVolumesHeadByItsIdentity) {
  Start();
  std::vector<std::string> names;
  ASSERT_TRUE(List("nguid = \"AB000000000000000000000000000002\"", &names).ok());
  EXPECT_THAT(names, ::testing::ElementsAre(Head(2)));
  ASSERT_TRUE(List("subsystem_nqn = \"nqn.2026-01.io.umpath:test\" AND nsid = 3", &names).ok());
  EXPECT_THAT(names, ::testing::ElementsAre(Head(3)));
  ASSERT_TRUE(List("nsid >= 2 AND paths:c1", &names, 1).ok()) << "by pages of one";
  EXPECT_THAT(names, ::testing::ElementsAre(Head(2), Head(3)));
  ASSERT_TRUE(List("export_device:*", &names).ok());
  EXPECT_TRUE(names.empty());
  ASSERT_TRUE(mp_->FailPath(Head(1).substr(6), "c0", "test").ok());
  ASSERT_TRUE(mp_->FailPath(Head(1).substr(6), "c1", "test").ok());
  ASSERT_TRUE(List("selectable_paths = 0", &names).ok());
  EXPECT_THAT(names, ::testing::ElementsAre(Head(1)));
  v1::ListHeadsRequest both;
  both.set_filter(v1::HEAD_FILTER_NO_SELECTABLE_PATH);
  both.set_filter_expression("nsid = 2");
  v1::ListHeadsResponse resp;
  ASSERT_TRUE(Call(&v1::MultipathControl::Stub::ListHeads, both, &resp).ok());
  EXPECT_EQ(resp.heads_size(), 0) << "the state filter and the expression both hold";
  // Issue 20: the volume label its settings give it finds it too.
  ASSERT_TRUE(mp_->SetVolume(Head(1).substr(6), "pvc-1").ok());
  ASSERT_TRUE(List("volume = \"pvc-1\"", &names).ok());
  EXPECT_THAT(names, ::testing::ElementsAre(Head(1)));
  grpc::Status bad = List("volume_handle = \"pvc-1\"", &names);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(bad.error_message(), HasSubstr("no field \"volume_handle\""));
}

TEST_F(WaitTest, AWaitThatHoldsAlreadyAnswersAtOnce) {
  Start();
  v1::WaitHeadResponse resp;
  ASSERT_TRUE(Call(&v1::MultipathControl::Stub::WaitHead, For(head_, v1::HEAD_CONDITION_SELECTABLE, 5), &resp).ok());
  EXPECT_EQ(resp.head().name(), head_);
  EXPECT_EQ(resp.head().selectable_paths(), 2u);
  EXPECT_EQ(server_->service().waits(), 0u);
}

TEST_F(WaitTest, AWaitIsAnsweredWhenTheHeadAppearsAndWhenItIsGone) {
  Start();
  auto appears = StartWait(For(Head(4), v1::HEAD_CONDITION_EXISTS, 60));
  v1::WaitHeadRequest by_filter;
  by_filter.set_filter_expression("nguid = ab000000000000000000000000000004 AND selectable_paths >= 2");
  by_filter.set_condition(v1::HEAD_CONDITION_SELECTABLE);
  by_filter.set_timeout_secs(60);
  auto by_identity = StartWait(by_filter);
  ASSERT_TRUE(ServerWaits(2));
  ASSERT_OK(AddNamespace(4));
  ASSERT_TRUE(appears->status.get().ok());
  EXPECT_EQ(appears->resp.head().name(), Head(4));
  grpc::Status s = by_identity->status.get();
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(by_identity->resp.head().name(), Head(4));
  EXPECT_EQ(by_identity->resp.head().selectable_paths(), 2u) << "answered once both paths were in";

  auto gone = StartWait(For(Head(4), v1::HEAD_CONDITION_GONE, 60));
  ASSERT_TRUE(ServerWaits(1));
  ASSERT_OK(mp_->RemovePath("c0", 4));
  ASSERT_OK(mp_->RemovePath("c1", 4));
  ASSERT_TRUE(gone->status.get().ok());
  EXPECT_FALSE(gone->resp.has_head());
}

TEST_F(WaitTest, AWaitForAPathIsAnsweredWhenOneIsReinstated) {
  Start();
  const std::string id = head_.substr(6);
  ASSERT_OK(mp_->FailPath(id, "c0", "maintenance"));
  ASSERT_OK(mp_->FailPath(id, "c1", "maintenance"));
  auto w = StartWait(For(head_, v1::HEAD_CONDITION_SELECTABLE), /*call_deadline_secs=*/60);
  ASSERT_TRUE(ServerWaits(1));
  ASSERT_OK(mp_->ReinstatePath(id, "c1"));
  ASSERT_TRUE(w->status.get().ok());
  EXPECT_EQ(w->resp.head().selectable_paths(), 1u);
}

TEST_F(WaitTest, ATimeoutSaysWhereTheHeadWas) {
  Start();
  auto w = StartWait(For(head_, v1::HEAD_CONDITION_EXPORTED, 1));
  grpc::Status s = w->status.get();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_THAT(s.error_message(), HasSubstr("not exported before the timeout: " + head_ + " has 2 selectable of 2"));
  auto never = StartWait(For(Head(9), v1::HEAD_CONDITION_EXISTS, 0), /*call_deadline_secs=*/2);
  s = never->status.get();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_THAT(s.error_message(), HasSubstr("no head " + Head(9))) << "answered before the call's own deadline";
  EXPECT_TRUE(ServerWaits(0));
}

TEST_F(WaitTest, ACancelledWaitAndTheAgentsStopLeaveNothingBehind) {
  Start();
  auto cancelled = StartWait(For(Head(7), v1::HEAD_CONDITION_EXISTS, 600));
  auto stopped = StartWait(For(Head(8), v1::HEAD_CONDITION_EXISTS, 600));
  ASSERT_TRUE(ServerWaits(2));
  cancelled->ctx.TryCancel();
  EXPECT_EQ(cancelled->status.get().error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(ServerWaits(1));
  server_->Shutdown();
  grpc::Status s = stopped->status.get();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(WaitTest, BadWaitsAreRefused) {
  Start(Self(Role::kAdmin), std::chrono::milliseconds(10000), 4096,
        [](ServerOptions& o) { o.service.waits.max_waits_per_caller = 1; });
  v1::WaitHeadResponse resp;
  auto code = [&](const v1::WaitHeadRequest& r) { return Call(&v1::MultipathControl::Stub::WaitHead, r, &resp); };
  EXPECT_EQ(code(For(head_, v1::HEAD_CONDITION_UNSPECIFIED, 5)).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code(For(head_, static_cast<v1::HeadCondition>(17), 5)).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(code(For(head_, v1::HEAD_CONDITION_EXISTS, 3601)).error_message(), HasSubstr("at most 3600"));
  EXPECT_EQ(code(For("nodes/x", v1::HEAD_CONDITION_EXISTS, 5)).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::WaitHeadRequest both = For(head_, v1::HEAD_CONDITION_EXISTS, 5);
  both.set_filter_expression("nsid = 1");
  EXPECT_THAT(code(both).error_message(), HasSubstr("not both"));
  v1::WaitHeadRequest several;
  several.set_filter_expression("nsid >= 1");
  several.set_condition(v1::HEAD_CONDITION_EXISTS);
  several.set_timeout_secs(5);
  grpc::Status s = code(several);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("matches more than one head"));
  // Without a timeout or a deadline a wait would never end.
  auto endless = StartWait(For(Head(9), v1::HEAD_CONDITION_EXISTS, 0), /*call_deadline_secs=*/0);
  s = endless->status.get();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("a wait has an end"));
  // One caller may hold one wait here; the second is refused, not queued.
  auto first = StartWait(For(Head(9), v1::HEAD_CONDITION_EXISTS, 600));
  ASSERT_TRUE(ServerWaits(1));
  s = code(For(Head(8), v1::HEAD_CONDITION_EXISTS, 600));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("waits per caller"));
  first->ctx.TryCancel();
  EXPECT_EQ(first->status.get().error_code(), grpc::StatusCode::CANCELLED);
}

}  // namespace
}  // namespace umpath::server
