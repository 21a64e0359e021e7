// AIP-193 errors (issue 19 item 5): every error the real server sends on a real socket
// carries a google.rpc.ErrorInfo of domain umpath.io whose reason says why, with the
// metadata a client needs; the reasons are those control.proto documents; removing
// what is gone succeeds.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <sstream>

#include "agent/base/error_reason.h"
#include "grpc/health/v1/health.pb.h"
#include "server/errors.h"
#include "server/testing/server_test.h"

namespace umpath::server {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Pair;

using Stub = v1::MultipathControl::Stub;

TEST(ErrorsTest, EveryReasonIsDocumentedInTheProto) {
  std::ifstream in(std::string(UMPATH_SOURCE_DIR) + "/proto/umpath/v1/control.proto");
  ASSERT_TRUE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  for (absl::string_view r : reason::kAll) {
    EXPECT_THAT(text.str(), HasSubstr(absl::StrCat("//     ", r, " "))) << r << " is not in control.proto's list";
  }
}

TEST(ErrorsTest, TheReasonAndItsMetadataReachTheWire) {
  const absl::Status s = WithReason(absl::NotFoundError("head x not found"), reason::kHeadNotFound,
                                    {{"head", "x"}, {"odd", std::string("a\0:b", 4)}});
  const grpc::Status g = ToGrpc(s);
  EXPECT_EQ(g.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(g.error_message(), "head x not found");
  std::string domain;
  std::optional<ErrorReason> r = ErrorInfoOf(g, &domain);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(domain, "umpath.io");
  EXPECT_EQ(r->reason, "HEAD_NOT_FOUND");
  EXPECT_THAT(r->metadata, Contains(Pair("head", "x")));
  EXPECT_THAT(r->metadata, Contains(Pair("odd", std::string("a\0:b", 4)))) << "any byte survives";

  // A prefix added on the way keeps the reason; a status made without one gets its
  // code's name; OK has no details.
  EXPECT_EQ(ErrorInfoOf(ToGrpc(Prefixed("ublk", s)))->reason, "HEAD_NOT_FOUND");
  EXPECT_EQ(ToGrpc(Prefixed("ublk", s)).error_message(), "ublk: head x not found");
  EXPECT_EQ(ErrorInfoOf(ToGrpc(absl::InternalError("ioctl")))->reason, "INTERNAL");
  EXPECT_TRUE(ToGrpc(absl::OkStatus()).error_details().empty());
  EXPECT_EQ(ErrorInfoOf(WithErrorInfo(grpc::Status(grpc::StatusCode::NOT_FOUND, "x")))->reason, "NOT_FOUND");
}

class ErrorsServerTest : public ServerTest {
 protected:
  // The call's code and its ErrorInfo; fails the test when an error has none.
  struct Got {
    grpc::StatusCode code;
    std::string reason;
    std::map<std::string, std::string> metadata;
  };
  static Got Of(const grpc::Status& s) {
    Got g{s.error_code(), "", {}};
    if (s.ok()) return g;
    std::string domain;
    std::optional<ErrorReason> r = ErrorInfoOf(s, &domain);
    EXPECT_TRUE(r.has_value()) << "no ErrorInfo on " << s.error_message();
    if (!r) return g;
    EXPECT_EQ(domain, "umpath.io");
    g.reason = r->reason;
    g.metadata.insert(r->metadata.begin(), r->metadata.end());
    return g;
  }
  template <typename Req, typename Resp>
  Got Try(grpc::Status (Stub::*m)(grpc::ClientContext*, const Req&, Resp*), const Req& req) {
    Resp resp;
    return Of(Call(m, req, &resp));
  }
};

template <typename Req>
Req Named(const std::string& name) {
  Req r;
  r.set_name(name);
  return r;
}

TEST_F(ErrorsServerTest, EachErrorSaysWhyAsAReasonWithItsMetadata) {
  Start();
  using M = std::map<std::string, std::string>;
  Got g = Try(&Stub::GetHead, Named<v1::GetHeadRequest>("nope"));
  EXPECT_EQ(g.code, grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(g.reason, "INVALID_NAME");
  EXPECT_EQ(g.metadata, (M{{"field", "name"}, {"expected", "heads/{head}"}}));

  g = Try(&Stub::GetHead, Named<v1::GetHeadRequest>("heads/nguid-0bad"));
  EXPECT_EQ(g.code, grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(g.reason, "HEAD_NOT_FOUND");
  EXPECT_EQ(g.metadata, (M{{"head", "nguid-0bad"}}));

  g = Try(&Stub::FailPath, Named<v1::FailPathRequest>(head_ + "/paths/c9"));
  EXPECT_EQ(g.reason, "PATH_NOT_FOUND");
  EXPECT_EQ(g.metadata["path"], "c9");

  g = Try(&Stub::GetController, Named<v1::GetControllerRequest>("controllers/c9"));
  EXPECT_EQ(g.reason, "CONTROLLER_NOT_FOUND");
  EXPECT_EQ(g.metadata, (M{{"controller", "c9"}}));

  v1::SetDelayedRemovalRequest delay = Named<v1::SetDelayedRemovalRequest>(head_);
  delay.set_delayed_removal_secs(-1);
  g = Try(&Stub::SetDelayedRemoval, delay);
  EXPECT_EQ(g.code, grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(g.reason, "VALUE_OUT_OF_RANGE");
  EXPECT_EQ(g.metadata["field"], "delayed_removal_secs");
  EXPECT_EQ(g.metadata["min"], "0");
  EXPECT_EQ(g.metadata["max"], absl::StrCat(kMaxDelayedRemovalSecs));

  v1::ListHeadsRequest list;
  list.set_page_size(5000);
  EXPECT_EQ(Try(&Stub::ListHeads, list).reason, "VALUE_OUT_OF_RANGE");
  list.set_page_size(0);
  list.set_page_token("not-ours");
  EXPECT_EQ(Try(&Stub::ListHeads, list).reason, "INVALID_PAGE_TOKEN");
  list.clear_page_token();
  list.set_filter_expression("nsid = ");
  g = Try(&Stub::ListHeads, list);
  EXPECT_EQ(g.reason, "INVALID_FILTER");
  EXPECT_TRUE(g.metadata.count("offset"));
  list.set_filter_expression(std::string(2000, 'x'));
  EXPECT_EQ(Try(&Stub::ListHeads, list).reason, "FIELD_TOO_LONG");
  EXPECT_EQ(Try(&Stub::GetHead, Named<v1::GetHeadRequest>(std::string(600, 'h'))).reason, "FIELD_TOO_LONG");

  v1::FailPathRequest fail = Named<v1::FailPathRequest>(head_ + "/paths/c0");
  fail.set_reason(std::string(2000, 'r'));
  g = Try(&Stub::FailPath, fail);
  EXPECT_EQ(g.reason, "FIELD_TOO_LONG");
  EXPECT_EQ(g.metadata, (M{{"field", "reason"}, {"maxBytes", "1024"}}));

  // Backends this server was started without.
  v1::AttachControllerRequest attach;
  attach.set_transport("pcie");
  attach.set_address("0000:01:00.0");
  g = Try(&Stub::AttachController, attach);
  EXPECT_EQ(g.code, grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(g.reason, "BACKEND_MISSING");
  attach.set_transport("carrier-pigeon");
  g = Try(&Stub::AttachController, attach);
  EXPECT_EQ(g.reason, "INVALID_VALUE");
  EXPECT_EQ(g.metadata["field"], "transport");
  g = Try(&Stub::ExportHead, Named<v1::ExportHeadRequest>(head_));
  EXPECT_EQ(g.reason, "BACKEND_MISSING");
  EXPECT_EQ(g.metadata["backend"], "ublk");
  g = Try(&Stub::UpdateHeadSettings, [&] {
    v1::UpdateHeadSettingsRequest r;
    r.mutable_settings()->set_name(head_ + "/settings");
    r.mutable_settings()->set_delayed_removal_secs(5);
    return r;
  }());
  EXPECT_EQ(g.reason, "BACKEND_MISSING");
  EXPECT_EQ(g.metadata["backend"], "settings_file");
  v1::StopAgentRequest stop;
  stop.set_mode(v1::STOP_MODE_HAND_OVER);
  EXPECT_EQ(Try(&Stub::StopAgent, stop).reason, "STOP_BY_SIGNAL_ONLY");
  stop.set_mode(v1::STOP_MODE_UNSPECIFIED);
  g = Try(&Stub::StopAgent, stop);
  EXPECT_EQ(g.reason, "INVALID_VALUE");
  EXPECT_EQ(g.metadata["field"], "mode");

  // A wait that ends at its timeout, and one whose filter matches every head.
  v1::WaitHeadRequest wait = Named<v1::WaitHeadRequest>("heads/nguid-0bad");
  wait.set_condition(v1::HEAD_CONDITION_EXISTS);
  wait.set_timeout_secs(1);
  g = Try(&Stub::WaitHead, wait);
  EXPECT_EQ(g.code, grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(g.reason, "WAIT_TIMED_OUT");
  EXPECT_EQ(g.metadata, (M{{"head", "heads/nguid-0bad"}, {"condition", "HEAD_CONDITION_EXISTS"}}));
  wait.clear_name();
  wait.set_filter_expression("nsid > 0");
  g = Try(&Stub::WaitHead, wait);
  EXPECT_EQ(g.reason, "FILTER_AMBIGUOUS");
  EXPECT_THAT(g.metadata["heads"], HasSubstr(head_));

  // An event stream from a revision ahead of the journal.
  {
    v1::WatchEventsRequest req;
    req.set_since_revision(1'000'000);
    grpc::ClientContext ctx;
    auto reader = stub_->WatchEvents(&ctx, req);
    v1::WatchEventsResponse resp;
    while (reader->Read(&resp)) {
    }
    g = Of(reader->Finish());
    EXPECT_EQ(g.code, grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(g.reason, "VALUE_OUT_OF_RANGE");
    EXPECT_EQ(g.metadata["field"], "since_revision");
  }

  // What the interceptor answers: an unknown method, a body that is not the request,
  // and another service's error (the health service's NOT_FOUND), which gets its code's
  // name as reason.
  g = Of(RawCall(channel_.get(), "/umpath.v1.MultipathControl/Nothing", ""));
  EXPECT_EQ(g.code, grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(g.reason, "METHOD_UNKNOWN");
  g = Of(RawCall(channel_.get(), "/umpath.v1.MultipathControl/GetHead", "\xff\xff\xff"));
  EXPECT_EQ(g.code, grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(g.reason, "INVALID_REQUEST");
  EXPECT_EQ(g.metadata["method"], "GetHead");
  grpc::health::v1::HealthCheckRequest check;
  check.set_service("no.such.Service");
  g = Of(RawCall(channel_.get(), "/grpc.health.v1.Health/Check", check.SerializeAsString()));
  EXPECT_EQ(g.code, grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(g.reason, "NOT_FOUND");
}

TEST_F(ErrorsServerTest, ACallerWithoutTheRoleIsToldWhichRoleItLacks) {
  Start(Self(Role::kViewer));
  v1::SetDelayedRemovalRequest delay = Named<v1::SetDelayedRemovalRequest>(head_);
  delay.set_delayed_removal_secs(5);
  Got g = Try(&Stub::SetDelayedRemoval, delay);
  EXPECT_EQ(g.code, grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(g.reason, "ROLE_MISSING");
  EXPECT_EQ(g.metadata["role"], "admin");
  EXPECT_EQ(g.metadata["callerRole"], "viewer");
  server_.reset();
  Start(Self(Role::kNone));
  g = Try(&Stub::GetHead, Named<v1::GetHeadRequest>(head_));
  EXPECT_EQ(g.code, grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(g.reason, "ROLE_MISSING");
}

// The backends as the service sees them: a controller that is gone, a head whose
// device is gone (each answering NOT_FOUND, as the real ones do when the thing went
// between the service's look and theirs).
struct GoneOps final : ControllerOps, ExportOps {
  void Attach(const AttachSpec&, OpDone<absl::StatusOr<std::string>> done) override {
    std::move(done)(std::string("c0"));
  }
  void Detach(const std::string& c, OpDone<absl::Status> done) override {
    detached.push_back(c);
    std::move(done)(ControllerNotFoundError(c));
  }
  void Reset(const std::string&, OpDone<absl::Status> done) override { std::move(done)(absl::OkStatus()); }
  void Export(const std::string&, OpDone<absl::StatusOr<ExportedDevice>> done) override {
    std::move(done)(ExportedDevice{.path = "/dev/ublkb0", .ids = {}});
  }
  void Unexport(const std::string& head, OpDone<absl::Status> done) override {
    unexported.push_back(head);
    std::move(done)(HeadNotFoundError(head));
  }
  std::vector<std::string> detached, unexported;
};

TEST_F(ErrorsServerTest, RemovingWhatIsGoneSucceeds) {
  GoneOps ops;
  Start(Self(Role::kAdmin), std::chrono::milliseconds(10000), 4096, [&ops](ServerOptions& o) {
    o.service.controllers = &ops;
    o.service.exports = &ops;
  });
  v1::DetachControllerResponse dresp;
  EXPECT_TRUE(Call(&Stub::DetachController, Named<v1::DetachControllerRequest>("controllers/c0"), &dresp).ok());
  EXPECT_TRUE(Call(&Stub::DetachController, Named<v1::DetachControllerRequest>("controllers/gone"), &dresp).ok());
  EXPECT_THAT(ops.detached, ::testing::ElementsAre("c0", "gone"))
      << "the backend hears of one it does not have: it may remember it for the next start";
  EXPECT_EQ(Try(&Stub::DetachController, Named<v1::DetachControllerRequest>("heads/c0")).reason, "INVALID_NAME")
      << "a malformed name is still an error";
  v1::UnexportHeadResponse uresp;
  EXPECT_TRUE(Call(&Stub::UnexportHead, Named<v1::UnexportHeadRequest>(head_), &uresp).ok());
  EXPECT_TRUE(Call(&Stub::UnexportHead, Named<v1::UnexportHeadRequest>("heads/nguid-0bad"), &uresp).ok());
  EXPECT_THAT(ops.unexported, ::testing::ElementsAre(head_.substr(6), "nguid-0bad"));
  v1::DeleteHeadSettingsResponse sresp;
  EXPECT_TRUE(
      Call(&Stub::DeleteHeadSettings, Named<v1::DeleteHeadSettingsRequest>("heads/nguid-0bad/settings"), &sresp)
          .ok());
}

}  // namespace
}  // namespace umpath::server
