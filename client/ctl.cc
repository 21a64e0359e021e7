#include "client/ctl.h"

#include <algorithm>
#include <chrono>
#include <ostream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/grpcpp.h"

namespace umpath::client {

namespace {

using Args = std::vector<std::string>;

const char* const kUsage = R"(usage: umpathctl [--socket=PATH | --address=HOST:PORT --tls_*=FILE] [-o table|json] COMMAND [ARGS]

  info                                  the agent: version, node, backends, your role
  heads [no-live-path|no-selectable-path|removal-pending]
                                        every head (or those matching a filter)
  head HEAD                             one head and its paths
  controllers                           every controller
  controller NAME                       one controller
  defaults                              the node defaults for new heads
  set-delayed-removal HEAD SECS         0..86400
  set-default-delayed-removal SECS      0..86400, for heads created from now on
  set-policy HEAD numa|round-robin|queue-depth
  set-default-policy numa|round-robin|queue-depth
  fail-path HEAD PATH [REASON]          take a path out of selection (maintenance)
  reinstate-path HEAD PATH              put it back
  attach TRANSPORT ADDRESS [SERVICE NQN] e.g. attach pcie 0000:01:00.0
  detach CONTROLLER                     its paths fail over, then it is let go
  reset CONTROLLER                      disable and bring up again; I/O fails over meanwhile
  export HEAD | unexport HEAD
  watch [--since=N] [--head=HEAD ...] [--type=TYPE ...]
                                        events as they happen; resumes after a dropped
                                        connection from the last revision seen

HEAD is a head's id (nguid-..., eui64-..., uuid-..., ns1.nqn...) or heads/{id}; PATH is
the controller's name.
)";

std::string Full(absl::string_view prefix, absl::string_view name) {
  return absl::StartsWith(name, prefix) ? std::string(name) : absl::StrCat(prefix, name);
}
std::string Id(absl::string_view name) {
  const size_t slash = name.rfind('/');
  return std::string(slash == absl::string_view::npos ? name : name.substr(slash + 1));
}

std::string Json(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.preserve_proto_field_names = true;
  o.always_print_primitive_fields = true;  // 0 and false are answers too
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

std::string Lower(absl::string_view enum_name, absl::string_view prefix) {
  std::string s(absl::StripPrefix(enum_name, prefix));
  std::transform(s.begin(), s.end(), s.begin(), [](char c) { return c == '_' ? '-' : std::tolower(c); });
  return s;
}

std::string Policy(v1::IoPolicy p) { return Lower(v1::IoPolicy_Name(p), "IO_POLICY_"); }
std::string Ana(v1::AnaState s) { return Lower(v1::AnaState_Name(s), "ANA_STATE_"); }
std::string State(v1::ControllerState s) { return Lower(v1::ControllerState_Name(s), "CONTROLLER_STATE_"); }
std::string Time(const google::protobuf::Timestamp& t) {
  return google::protobuf::util::TimeUtil::ToString(t);
}

// Columns padded to the widest cell.
void Table(std::ostream& out, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows) {
    width.resize(std::max(width.size(), r.size()));
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      absl::StrAppend(&line, r[i]);
      if (i + 1 < r.size()) line.append(width[i] - r[i].size() + 2, ' ');
    }
    out << line << "\n";
  }
}

void PrintHeads(std::ostream& out, const google::protobuf::RepeatedPtrField<v1::Head>& heads) {
  std::vector<std::vector<std::string>> rows = {
      {"HEAD", "PATHS", "LIVE", "POLICY", "DELAYED_REMOVAL", "REMOVAL", "WAITING", "EXPORT"}};
  for (const v1::Head& h : heads) {
    rows.push_back({Id(h.name()), absl::StrCat(h.paths_size()), absl::StrCat(h.live_paths()),
                    Policy(h.io_policy()), absl::StrCat(h.delayed_removal_secs(), "s"),
                    h.removal_pending() ? Time(h.removal_deadline()) : "-",
                    absl::StrCat(h.waiting_ios()),
                    h.export_device().empty() ? "-" : h.export_device()});
  }
  Table(out, rows);
}

void PrintHead(std::ostream& out, const v1::Head& h) {
  out << "head " << Id(h.name()) << "\n"
      << "  subsystem " << h.subsystem_nqn() << " nsid " << h.nsid() << ", " << h.size_blocks()
      << " blocks of " << h.block_size() << " B\n"
      << "  policy " << Policy(h.io_policy()) << ", delayed_removal_secs "
      << h.delayed_removal_secs();
  if (h.removal_pending()) out << ", removal at " << Time(h.removal_deadline());
  out << ", waiting I/O " << h.waiting_ios() << "\n";
  if (!h.export_device().empty()) out << "  exported as " << h.export_device() << "\n";
  std::vector<std::vector<std::string>> rows = {
      {"  PATH", "CONTROLLER", "ANA", "SELECTABLE", "IN_FLIGHT", "COMPLETED", "ERRORS", "FAILOVERS"}};
  for (const v1::Path& p : h.paths()) {
    std::string ana = Ana(p.ana_state());
    if (p.ana_pending()) ana += ",pending";
    if (p.admin_failed()) ana += ",failed";
    if (!p.ready()) ana += ",not-ready";
    rows.push_back({"  " + Id(p.name()), State(p.controller_state()), ana,
                    p.selectable() ? "yes" : "no", absl::StrCat(p.counters().in_flight()),
                    absl::StrCat(p.counters().completed()), absl::StrCat(p.counters().errors()),
                    absl::StrCat(p.counters().failovers())});
  }
  Table(out, rows);
}

void PrintEvent(std::ostream& out, const v1::Event& e) {
  out << e.revision() << " " << Time(e.time()) << " " << Lower(v1::EventType_Name(e.type()), "EVENT_TYPE_");
  if (!e.head().empty()) out << " head=" << Id(e.head());
  if (!e.path().empty()) out << " path=" << Id(e.path());
  if (!e.controller().empty()) out << " controller=" << Id(e.controller());
  if (!e.from().empty() || !e.to().empty()) out << " " << e.from() << " -> " << e.to();
  if (!e.reason().empty()) out << " (" << e.reason() << ")";
  if (e.has_removal_deadline()) out << " deadline=" << Time(e.removal_deadline());
  out << "\n";
}

int Fail(std::ostream& err, const grpc::Status& s) {
  static const char* const kNames[] = {
      "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
      "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
      "UNAUTHENTICATED"};
  const int code = static_cast<int>(s.error_code());
  err << "umpathctl: " << (code >= 0 && code <= 16 ? kNames[code] : "?") << ": "
      << s.error_message() << "\n";
  return code;
}

int Usage(std::ostream& err, absl::string_view why) {
  err << "umpathctl: " << why << "\n" << kUsage;
  return 2;
}

template <typename Resp>
int Show(std::ostream& out, std::ostream& err, const grpc::Status& s, const Resp& resp,
         bool json, void (*table)(std::ostream&, const Resp&)) {
  if (!s.ok()) return Fail(err, s);
  if (json) {
    out << Json(resp);
  } else {
    table(out, resp);
  }
  return 0;
}

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  return ctx;
}

bool ParsePolicy(absl::string_view text, v1::IoPolicy* out) {
  if (text == "numa") *out = v1::IO_POLICY_NUMA;
  else if (text == "round-robin") *out = v1::IO_POLICY_ROUND_ROBIN;
  else if (text == "queue-depth") *out = v1::IO_POLICY_QUEUE_DEPTH;
  else return false;
  return true;
}

int Watch(v1::MultipathControl::StubInterface* stub, const Args& args, const CtlOptions& o,
          std::ostream& out, std::ostream& err) {
  v1::WatchEventsRequest req;
  for (size_t i = 1; i < args.size(); ++i) {
    absl::string_view a = args[i];
    uint64_t since;
    if (absl::ConsumePrefix(&a, "--since=") && absl::SimpleAtoi(a, &since)) {
      req.set_since_revision(since);
    } else if (absl::ConsumePrefix(&a, "--head=")) {
      req.add_heads(Full("heads/", a));
    } else if (absl::ConsumePrefix(&a, "--type=")) {
      std::string name = absl::StrCat("EVENT_TYPE_", a);
      std::transform(name.begin(), name.end(), name.begin(),
                     [](char c) { return c == '-' ? '_' : std::toupper(c); });
      v1::EventType t;
      if (!v1::EventType_Parse(name, &t)) return Usage(err, absl::StrCat("unknown event type ", a));
      req.add_types(t);
    } else {
      return Usage(err, absl::StrCat("watch: unexpected argument ", args[i]));
    }
  }
  int events = 0;
  for (int attempt = 0;; ++attempt) {
    grpc::ClientContext ctx;
    auto reader = stub->WatchEvents(&ctx, req);
    v1::WatchEventsResponse msg;
    while (reader->Read(&msg)) {
      if (msg.has_snapshot()) {
        if (o.json) {
          out << Json(msg) << std::flush;
        } else {
          out << "# snapshot at revision " << msg.snapshot().revision() << ": "
              << msg.snapshot().heads_size() << " heads, " << msg.snapshot().controllers_size()
              << " controllers\n" << std::flush;
        }
        req.set_since_revision(msg.snapshot().revision());
      } else if (msg.has_event()) {
        if (o.json) {
          out << Json(msg) << std::flush;
        } else {
          PrintEvent(out, msg.event());
          out << std::flush;
        }
        req.set_since_revision(msg.event().revision());
        if (o.watch_max_events > 0 && ++events >= o.watch_max_events) {
          ctx.TryCancel();
          while (reader->Read(&msg)) {
          }
          reader->Finish();
          return 0;
        }
      } else if (msg.has_progress()) {
        req.set_since_revision(msg.progress().revision());
      }
    }
    grpc::Status s = reader->Finish();
    if (s.error_code() == grpc::StatusCode::OUT_OF_RANGE) {
      err << "umpathctl: revision " << req.since_revision()
          << " is no longer retained; starting again from a snapshot\n";
      req.set_since_revision(0);
    } else if (s.error_code() != grpc::StatusCode::UNAVAILABLE &&
               s.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) {
      return Fail(err, s);
    } else {
      err << "umpathctl: stream ended (" << s.error_message() << "); resuming after revision "
          << req.since_revision() << "\n";
    }
    if (attempt >= o.watch_reconnects) return Fail(err, s);
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(100 << std::min(attempt, 5), 2000)));
  }
}

}  // namespace

std::string Usage() { return kUsage; }

int RunCommand(v1::MultipathControl::StubInterface* stub, const Args& args,
               const CtlOptions& o, std::ostream& out, std::ostream& err) {
  if (args.empty()) return Usage(err, "no command");
  const std::string& cmd = args[0];
  auto need = [&](size_t min, size_t max) { return args.size() - 1 >= min && args.size() - 1 <= max; };

  if (cmd == "help") {
    out << kUsage;
    return 0;
  }
  if (cmd == "info" && need(0, 0)) {
    v1::GetAgentInfoResponse r;
    grpc::Status s = stub->GetAgentInfo(Ctx().get(), {}, &r);
    return Show<v1::GetAgentInfoResponse>(out, err, s, r, o.json, [](std::ostream& out, const auto& r) {
      const v1::AgentInfo& a = r.agent_info();
      out << "version " << a.version() << "\nnode " << a.node() << "\nbackends "
          << (a.backends().empty() ? "none" : absl::StrJoin(a.backends(), ",")) << "\nyour role "
          << a.caller_role() << "\nmax delayed_removal_secs " << a.max_delayed_removal_secs() << "\n";
    });
  }
  if (cmd == "heads" && need(0, 1)) {
    v1::ListHeadsRequest req;
    if (args.size() == 2) {
      std::string f = absl::StrCat("HEAD_FILTER_", args[1]);
      std::transform(f.begin(), f.end(), f.begin(), [](char c) { return c == '-' ? '_' : std::toupper(c); });
      v1::HeadFilter filter;
      if (!v1::HeadFilter_Parse(f, &filter)) return Usage(err, absl::StrCat("unknown filter ", args[1]));
      req.set_filter(filter);
    }
    v1::ListHeadsResponse all;
    do {
      v1::ListHeadsResponse page;
      grpc::Status s = stub->ListHeads(Ctx().get(), req, &page);
      if (!s.ok()) return Fail(err, s);
      for (auto& h : *page.mutable_heads()) *all.add_heads() = std::move(h);
      req.set_page_token(page.next_page_token());
    } while (!req.page_token().empty());
    return Show<v1::ListHeadsResponse>(out, err, grpc::Status::OK, all, o.json,
                                       [](std::ostream& out, const auto& r) { PrintHeads(out, r.heads()); });
  }
  if (cmd == "head" && need(1, 1)) {
    v1::GetHeadRequest req;
    req.set_name(Full("heads/", args[1]));
    v1::GetHeadResponse r;
    grpc::Status s = stub->GetHead(Ctx().get(), req, &r);
    return Show<v1::GetHeadResponse>(out, err, s, r, o.json,
                                     [](std::ostream& out, const auto& r) { PrintHead(out, r.head()); });
  }
  if (cmd == "controllers" && need(0, 0)) {
    v1::ListControllersRequest req;
    v1::ListControllersResponse all;
    do {
      v1::ListControllersResponse page;
      grpc::Status s = stub->ListControllers(Ctx().get(), req, &page);
      if (!s.ok()) return Fail(err, s);
      for (auto& c : *page.mutable_controllers()) *all.add_controllers() = std::move(c);
      req.set_page_token(page.next_page_token());
    } while (!req.page_token().empty());
    return Show<v1::ListControllersResponse>(out, err, grpc::Status::OK, all, o.json,
                                             [](std::ostream& out, const auto& r) {
      std::vector<std::vector<std::string>> rows = {{"CONTROLLER", "STATE", "TRANSPORT", "ADDRESS", "SUBSYSTEM", "HEADS"}};
      for (const v1::Controller& c : r.controllers()) {
        rows.push_back({Id(c.name()), State(c.state()), c.transport(), c.address(),
                        c.subsystem_nqn(), absl::StrCat(c.heads_size())});
      }
      Table(out, rows);
    });
  }
  if (cmd == "controller" && need(1, 1)) {
    v1::GetControllerRequest req;
    req.set_name(Full("controllers/", args[1]));
    v1::GetControllerResponse r;
    grpc::Status s = stub->GetController(Ctx().get(), req, &r);
    return Show<v1::GetControllerResponse>(out, err, s, r, o.json, [](std::ostream& out, const auto& r) {
      const v1::Controller& c = r.controller();
      out << "controller " << Id(c.name()) << " " << State(c.state()) << " " << c.transport() << " "
          << c.address() << "\n  subsystem " << c.subsystem_nqn() << "\n  ana "
          << (c.ana_supported() ? "yes" : "no") << "\n  heads";
      for (const auto& h : c.heads()) out << " " << Id(h);
      out << "\n";
    });
  }
  auto defaults_table = [](std::ostream& out, const auto& r) {
    out << "io_policy " << Policy(r.defaults().io_policy()) << "\ndelayed_removal_secs "
        << r.defaults().delayed_removal_secs() << "\n";
  };
  if (cmd == "defaults" && need(0, 0)) {
    v1::GetDefaultsResponse r;
    grpc::Status s = stub->GetDefaults(Ctx().get(), {}, &r);
    return Show<v1::GetDefaultsResponse>(out, err, s, r, o.json, defaults_table);
  }
  if (cmd == "set-delayed-removal" && need(2, 2)) {
    v1::SetDelayedRemovalRequest req;
    int64_t secs;
    if (!absl::SimpleAtoi(args[2], &secs)) return Usage(err, absl::StrCat("not a number: ", args[2]));
    req.set_name(Full("heads/", args[1]));
    req.set_delayed_removal_secs(secs);
    v1::SetDelayedRemovalResponse r;
    grpc::Status s = stub->SetDelayedRemoval(Ctx().get(), req, &r);
    return Show<v1::SetDelayedRemovalResponse>(out, err, s, r, o.json,
                                               [](std::ostream& out, const auto& r) { PrintHead(out, r.head()); });
  }
  if (cmd == "set-default-delayed-removal" && need(1, 1)) {
    v1::SetDefaultDelayedRemovalRequest req;
    int64_t secs;
    if (!absl::SimpleAtoi(args[1], &secs)) return Usage(err, absl::StrCat("not a number: ", args[1]));
    req.set_delayed_removal_secs(secs);
    v1::SetDefaultDelayedRemovalResponse r;
    grpc::Status s = stub->SetDefaultDelayedRemoval(Ctx().get(), req, &r);
    return Show<v1::SetDefaultDelayedRemovalResponse>(out, err, s, r, o.json, defaults_table);
  }
  if (cmd == "set-policy" && need(2, 2)) {
    v1::SetIoPolicyRequest req;
    v1::IoPolicy p;
    if (!ParsePolicy(args[2], &p)) return Usage(err, absl::StrCat("unknown policy ", args[2]));
    req.set_name(Full("heads/", args[1]));
    req.set_io_policy(p);
    v1::SetIoPolicyResponse r;
    grpc::Status s = stub->SetIoPolicy(Ctx().get(), req, &r);
    return Show<v1::SetIoPolicyResponse>(out, err, s, r, o.json,
                                         [](std::ostream& out, const auto& r) { PrintHead(out, r.head()); });
  }
  if (cmd == "set-default-policy" && need(1, 1)) {
    v1::SetDefaultIoPolicyRequest req;
    v1::IoPolicy p;
    if (!ParsePolicy(args[1], &p)) return Usage(err, absl::StrCat("unknown policy ", args[1]));
    req.set_io_policy(p);
    v1::SetDefaultIoPolicyResponse r;
    grpc::Status s = stub->SetDefaultIoPolicy(Ctx().get(), req, &r);
    return Show<v1::SetDefaultIoPolicyResponse>(out, err, s, r, o.json, defaults_table);
  }
  if (cmd == "fail-path" && need(2, 3)) {
    v1::FailPathRequest req;
    req.set_name(absl::StrCat(Full("heads/", args[1]), "/paths/", args[2]));
    if (args.size() == 4) req.set_reason(args[3]);
    v1::FailPathResponse r;
    grpc::Status s = stub->FailPath(Ctx().get(), req, &r);
    return Show<v1::FailPathResponse>(out, err, s, r, o.json,
                                      [](std::ostream& out, const auto& r) { PrintHead(out, r.head()); });
  }
  if (cmd == "reinstate-path" && need(2, 2)) {
    v1::ReinstatePathRequest req;
    req.set_name(absl::StrCat(Full("heads/", args[1]), "/paths/", args[2]));
    v1::ReinstatePathResponse r;
    grpc::Status s = stub->ReinstatePath(Ctx().get(), req, &r);
    return Show<v1::ReinstatePathResponse>(out, err, s, r, o.json,
                                           [](std::ostream& out, const auto& r) { PrintHead(out, r.head()); });
  }
  if (cmd == "attach" && (need(2, 2) || need(4, 4))) {
    v1::AttachControllerRequest req;
    req.set_transport(args[1]);
    req.set_address(args[2]);
    if (args.size() == 5) {
      req.set_service(args[3]);
      req.set_subsystem_nqn(args[4]);
    }
    v1::AttachControllerResponse r;
    grpc::Status s = stub->AttachController(Ctx().get(), req, &r);
    return Show<v1::AttachControllerResponse>(out, err, s, r, o.json, [](std::ostream& out, const auto& r) {
      out << "attached " << Id(r.controller().name()) << "\n";
    });
  }
  if (cmd == "detach" && need(1, 1)) {
    v1::DetachControllerRequest req;
    req.set_name(Full("controllers/", args[1]));
    v1::DetachControllerResponse r;
    grpc::Status s = stub->DetachController(Ctx().get(), req, &r);
    return Show<v1::DetachControllerResponse>(out, err, s, r, o.json,
                                              [](std::ostream& out, const auto&) { out << "detached\n"; });
  }
  if (cmd == "reset" && need(1, 1)) {
    v1::ResetControllerRequest req;
    req.set_name(Full("controllers/", args[1]));
    v1::ResetControllerResponse r;
    grpc::Status s = stub->ResetController(Ctx().get(), req, &r);
    return Show<v1::ResetControllerResponse>(out, err, s, r, o.json, [](std::ostream& out, const auto& r) {
      out << "resetting " << Id(r.controller().name()) << "\n";
    });
  }
  if ((cmd == "export" || cmd == "unexport") && need(1, 1)) {
    if (cmd == "export") {
      v1::ExportHeadRequest req;
      req.set_name(Full("heads/", args[1]));
      v1::ExportHeadResponse r;
      grpc::Status s = stub->ExportHead(Ctx().get(), req, &r);
      return Show<v1::ExportHeadResponse>(out, err, s, r, o.json,
                                          [](std::ostream& out, const auto& r) { out << r.device() << "\n"; });
    }
    v1::UnexportHeadRequest req;
    req.set_name(Full("heads/", args[1]));
    v1::UnexportHeadResponse r;
    grpc::Status s = stub->UnexportHead(Ctx().get(), req, &r);
    return Show<v1::UnexportHeadResponse>(out, err, s, r, o.json,
                                          [](std::ostream& out, const auto&) { out << "unexported\n"; });
  }
  if (cmd == "watch") return Watch(stub, args, o, out, err);
  return Usage(err, absl::StrCat("unknown command or wrong arguments: ", absl::StrJoin(args, " ")));
}

}  // namespace umpath::client
