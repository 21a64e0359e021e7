#include "client/ctl.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <ostream>
#include <thread>
#include <type_traits>

#include "absl/flags/reflection.h"
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
  set-io-fail-timeout HEAD SECS         0..86400: I/O that waited this long for a usable
                                        path fails, the head stays (0: waits for removal)
  set-default-io-fail-timeout SECS      0..86400, for heads created from now on
  set-policy HEAD numa|round-robin|queue-depth
  set-default-policy numa|round-robin|queue-depth
  fail-path HEAD PATH [REASON]          take a path out of selection (maintenance)
  reinstate-path HEAD PATH              put it back
  attach TRANSPORT ADDRESS [SERVICE NQN] e.g. attach pcie 0000:01:00.0
  detach CONTROLLER                     its paths fail over, then it is let go
  reset CONTROLLER                      disable and bring up again; I/O fails over meanwhile
  export HEAD | unexport HEAD
  stop [--remove] [--force]             stop the agent; its block devices stay for the next
                                        agent (hand-over), or are removed (--remove), never
                                        one in use (mounted, open) unless --force
  watch [--since=N] [--head=HEAD ...] [--type=TYPE ...]
                                        events as they happen; resumes after a dropped
                                        connection from the last revision seen
  sim                                   the simulated controllers (umpathd --sim) and their faults
  sim error CONTROLLER CODE [COUNT [NSID]] [dnr]
                                        the next COUNT commands (0: all, until cleared) fail
                                        with status CODE (SCT and SC, e.g. 0x302)
  sim ana CONTROLLER GROUP optimized|non-optimized|inaccessible|persistent-loss|change
  sim lose CONTROLLER | sim return CONTROLLER
                                        the controller is gone / comes back (hotplug)
  sim lose-ns CONTROLLER NSID | sim return-ns CONTROLLER NSID
                                        one path goes (the namespace is detached) / comes back
  sim stick CONTROLLER                  commands never complete (until cleared)
  sim latency CONTROLLER MICROSECONDS
  sim clear CONTROLLER                  ends its errors and stuck commands

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

// Lower's inverse, for parsing: ("no-live-path", "HEAD_FILTER_") gives
// "HEAD_FILTER_NO_LIVE_PATH".
std::string Upper(absl::string_view text, absl::string_view prefix) {
  std::string s = absl::StrCat(prefix, text);
  std::transform(s.begin(), s.end(), s.begin(),
                 [](char c) { return c == '-' ? '_' : std::toupper(c); });
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
  if (h.io_fail_timeout_secs() > 0) out << ", io_fail_timeout_secs " << h.io_fail_timeout_secs();
  if (h.failing_fast()) out << " (failing fast: no usable path)";
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

using Stub = v1::MultipathControl::StubInterface;

// What every command is given: one run of umpathctl.
struct Invocation {
  Stub* stub;
  const Args& args;  // args[0] is the command
  const CtlOptions& o;
  std::ostream& out;
  std::ostream& err;
};

// `table` is not deduced, so a generic lambda or a printer template can be passed.
template <typename Resp>
using Printer = void (*)(std::ostream&, const std::type_identity_t<Resp>&);

template <typename Req, typename Resp>
int Call(const Invocation& ctl,
         grpc::Status (Stub::*rpc)(grpc::ClientContext*, const Req&, Resp*), const Req& req,
         Printer<Resp> table) {
  Resp r;
  grpc::Status s = (ctl.stub->*rpc)(Ctx().get(), req, &r);
  return Show(ctl.out, ctl.err, s, r, ctl.o.json, table);
}

// Every page of a List call, shown as one answer.
template <typename Req, typename Resp>
int ListAll(const Invocation& ctl,
            grpc::Status (Stub::*list)(grpc::ClientContext*, const Req&, Resp*), Req req,
            Printer<Resp> table) {
  Resp all;
  do {
    Resp page;
    grpc::Status s = (ctl.stub->*list)(Ctx().get(), req, &page);
    if (!s.ok()) return Fail(ctl.err, s);
    req.set_page_token(page.next_page_token());
    page.clear_next_page_token();  // MergeFrom would keep it: the whole list has no next page
    all.MergeFrom(page);
  } while (!req.page_token().empty());
  return Show(ctl.out, ctl.err, grpc::Status::OK, all, ctl.o.json, table);
}

// For the answers that carry the head a call changed.
template <typename Resp>
void PrintHeadOf(std::ostream& out, const Resp& r) {
  PrintHead(out, r.head());
}

template <typename Resp>
void PrintDefaults(std::ostream& out, const Resp& r) {
  out << "io_policy " << Policy(r.defaults().io_policy()) << "\ndelayed_removal_secs "
      << r.defaults().delayed_removal_secs() << "\nio_fail_timeout_secs "
      << r.defaults().io_fail_timeout_secs() << "\n";
}

int Help(const Invocation& ctl) {
  ctl.out << kUsage;
  return 0;
}

int Info(const Invocation& ctl) {
  return Call(ctl, &Stub::GetAgentInfo, {}, [](std::ostream& out, const auto& r) {
    const v1::AgentInfo& a = r.agent_info();
    out << "version " << a.version() << "\nnode " << a.node() << "\nbackends "
        << (a.backends().empty() ? "none" : absl::StrJoin(a.backends(), ",")) << "\nyour role "
        << a.caller_role() << "\nmax delayed_removal_secs " << a.max_delayed_removal_secs()
        << "\nincarnation " << a.incarnation() << "\n";
    if (a.max_pinned_bytes() > 0) {
      out << "I/O buffers " << (a.pinned_buffer_bytes() >> 20) << " MiB pinned of a "
          << (a.max_pinned_bytes() >> 20) << " MiB budget; " << a.exportable_heads()
          << " more heads can be exported\n";
    }
  });
}

int Heads(const Invocation& ctl) {
  v1::ListHeadsRequest req;
  if (ctl.args.size() == 2) {
    v1::HeadFilter filter;
    if (!v1::HeadFilter_Parse(Upper(ctl.args[1], "HEAD_FILTER_"), &filter)) {
      return Usage(ctl.err, absl::StrCat("unknown filter ", ctl.args[1]));
    }
    req.set_filter(filter);
  }
  return ListAll(ctl, &Stub::ListHeads, req,
                 [](std::ostream& out, const auto& r) { PrintHeads(out, r.heads()); });
}

int Head(const Invocation& ctl) {
  v1::GetHeadRequest req;
  req.set_name(Full("heads/", ctl.args[1]));
  return Call(ctl, &Stub::GetHead, req, PrintHeadOf);
}

int Controllers(const Invocation& ctl) {
  return ListAll(ctl, &Stub::ListControllers, {}, [](std::ostream& out, const auto& r) {
    std::vector<std::vector<std::string>> rows = {{"CONTROLLER", "STATE", "TRANSPORT", "ADDRESS", "SUBSYSTEM", "HEADS"}};
    for (const v1::Controller& c : r.controllers()) {
      rows.push_back({Id(c.name()), State(c.state()), c.transport(), c.address(),
                      c.subsystem_nqn(), absl::StrCat(c.heads_size())});
    }
    Table(out, rows);
  });
}

int Controller(const Invocation& ctl) {
  v1::GetControllerRequest req;
  req.set_name(Full("controllers/", ctl.args[1]));
  return Call(ctl, &Stub::GetController, req, [](std::ostream& out, const auto& r) {
    const v1::Controller& c = r.controller();
    out << "controller " << Id(c.name()) << " " << State(c.state()) << " " << c.transport() << " "
        << c.address() << "\n  subsystem " << c.subsystem_nqn() << "\n  ana "
        << (c.ana_supported() ? "yes" : "no") << "\n  heads";
    for (const auto& h : c.heads()) out << " " << Id(h);
    out << "\n";
  });
}

int Defaults(const Invocation& ctl) {
  return Call(ctl, &Stub::GetDefaults, {}, PrintDefaults);
}

// A setting in seconds: of a head (set-delayed-removal HEAD SECS), or of the node's
// defaults (set-default-delayed-removal SECS); the number is the last argument.
template <typename Req, typename Resp>
int SetSeconds(const Invocation& ctl, grpc::Status (Stub::*rpc)(grpc::ClientContext*, const Req&, Resp*),
               void (Req::*set)(int64_t), Printer<Resp> table) {
  Req req;
  int64_t secs;
  if (!absl::SimpleAtoi(ctl.args.back(), &secs)) {
    return Usage(ctl.err, absl::StrCat("not a number: ", ctl.args.back()));
  }
  if constexpr (requires { req.set_name(""); }) req.set_name(Full("heads/", ctl.args[1]));
  (req.*set)(secs);
  return Call(ctl, rpc, req, table);
}

int SetDelayedRemoval(const Invocation& ctl) {
  return SetSeconds(ctl, &Stub::SetDelayedRemoval, &v1::SetDelayedRemovalRequest::set_delayed_removal_secs, PrintHeadOf);
}

int SetDefaultDelayedRemoval(const Invocation& ctl) {
  return SetSeconds(ctl, &Stub::SetDefaultDelayedRemoval,
                    &v1::SetDefaultDelayedRemovalRequest::set_delayed_removal_secs, PrintDefaults);
}

int SetIoFailTimeout(const Invocation& ctl) {
  return SetSeconds(ctl, &Stub::SetIoFailTimeout, &v1::SetIoFailTimeoutRequest::set_io_fail_timeout_secs, PrintHeadOf);
}

int SetDefaultIoFailTimeout(const Invocation& ctl) {
  return SetSeconds(ctl, &Stub::SetDefaultIoFailTimeout,
                    &v1::SetDefaultIoFailTimeoutRequest::set_io_fail_timeout_secs, PrintDefaults);
}

int SetPolicy(const Invocation& ctl) {
  v1::SetIoPolicyRequest req;
  v1::IoPolicy p;
  if (!ParsePolicy(ctl.args[2], &p)) {
    return Usage(ctl.err, absl::StrCat("unknown policy ", ctl.args[2]));
  }
  req.set_name(Full("heads/", ctl.args[1]));
  req.set_io_policy(p);
  return Call(ctl, &Stub::SetIoPolicy, req, PrintHeadOf);
}

int SetDefaultPolicy(const Invocation& ctl) {
  v1::SetDefaultIoPolicyRequest req;
  v1::IoPolicy p;
  if (!ParsePolicy(ctl.args[1], &p)) {
    return Usage(ctl.err, absl::StrCat("unknown policy ", ctl.args[1]));
  }
  req.set_io_policy(p);
  return Call(ctl, &Stub::SetDefaultIoPolicy, req, PrintDefaults);
}

int FailPath(const Invocation& ctl) {
  v1::FailPathRequest req;
  req.set_name(absl::StrCat(Full("heads/", ctl.args[1]), "/paths/", ctl.args[2]));
  if (ctl.args.size() == 4) req.set_reason(ctl.args[3]);
  return Call(ctl, &Stub::FailPath, req, PrintHeadOf);
}

int ReinstatePath(const Invocation& ctl) {
  v1::ReinstatePathRequest req;
  req.set_name(absl::StrCat(Full("heads/", ctl.args[1]), "/paths/", ctl.args[2]));
  return Call(ctl, &Stub::ReinstatePath, req, PrintHeadOf);
}

int Attach(const Invocation& ctl) {
  v1::AttachControllerRequest req;
  req.set_transport(ctl.args[1]);
  req.set_address(ctl.args[2]);
  if (ctl.args.size() == 5) {
    req.set_service(ctl.args[3]);
    req.set_subsystem_nqn(ctl.args[4]);
  }
  return Call(ctl, &Stub::AttachController, req, [](std::ostream& out, const auto& r) {
    out << "attached " << Id(r.controller().name()) << "\n";
  });
}

int Detach(const Invocation& ctl) {
  v1::DetachControllerRequest req;
  req.set_name(Full("controllers/", ctl.args[1]));
  return Call(ctl, &Stub::DetachController, req,
              [](std::ostream& out, const auto&) { out << "detached\n"; });
}

int Reset(const Invocation& ctl) {
  v1::ResetControllerRequest req;
  req.set_name(Full("controllers/", ctl.args[1]));
  return Call(ctl, &Stub::ResetController, req, [](std::ostream& out, const auto& r) {
    out << "resetting " << Id(r.controller().name()) << "\n";
  });
}

int Export(const Invocation& ctl) {
  v1::ExportHeadRequest req;
  req.set_name(Full("heads/", ctl.args[1]));
  return Call(ctl, &Stub::ExportHead, req,
              [](std::ostream& out, const auto& r) { out << r.device() << "\n"; });
}

int Unexport(const Invocation& ctl) {
  v1::UnexportHeadRequest req;
  req.set_name(Full("heads/", ctl.args[1]));
  return Call(ctl, &Stub::UnexportHead, req,
              [](std::ostream& out, const auto&) { out << "unexported\n"; });
}

int Stop(const Invocation& ctl) {
  v1::StopAgentRequest req;
  req.set_mode(v1::STOP_MODE_HAND_OVER);
  for (size_t i = 1; i < ctl.args.size(); ++i) {
    if (ctl.args[i] == "--remove") {
      req.set_mode(v1::STOP_MODE_REMOVE);
    } else if (ctl.args[i] == "--force") {
      req.set_force(true);
    } else {
      return Usage(ctl.err, absl::StrCat("stop: unexpected argument ", ctl.args[i],
                                         " (it takes --remove and --force)"));
    }
  }
  Printer<v1::StopAgentResponse> said = [](std::ostream& out, const v1::StopAgentResponse&) {
    out << "stopping: the block devices stay for the next agent\n";
  };
  if (req.mode() == v1::STOP_MODE_REMOVE) {
    said = [](std::ostream& out, const v1::StopAgentResponse&) {
      out << "stopping: the block devices are removed\n";
    };
  }
  return Call(ctl, &Stub::StopAgent, req, said);
}

// After a dropped connection, resumes from the last revision seen.
int StreamEvents(const Invocation& ctl, v1::WatchEventsRequest req) {
  // Several events to a message when it is behind (an older agent ignores this).
  req.set_max_events_per_message(64);
  int events = 0;
  std::unique_ptr<Stub> fresh;
  Stub* stub = ctl.stub;
  for (int attempt = 0;; ++attempt) {
    grpc::ClientContext ctx;
    auto reader = stub->WatchEvents(&ctx, req);
    v1::WatchEventsResponse msg;
    while (reader->Read(&msg)) {
      attempt = 0;  // it was served: the next drop starts its retries afresh
      // Revisions are the agent's run's: a resume names it, and a restarted agent
      // refuses it (OUT_OF_RANGE) rather than serve another journal.
      req.set_incarnation(msg.incarnation());
      if (msg.has_snapshot()) {
        if (ctl.o.json) {
          ctl.out << Json(msg) << std::flush;
        } else {
          ctl.out << "# snapshot at revision " << msg.snapshot().revision() << ": "
                  << msg.snapshot().heads_size() << " heads, "
                  << msg.snapshot().controllers_size() << " controllers\n"
                  << std::flush;
        }
        req.set_since_revision(msg.snapshot().revision());
      } else if (msg.has_event() || msg.has_batch()) {
        // A batch is printed as the events it carries, each as if it came alone: the
        // output does not depend on how the agent packed them.
        v1::EventBatch batch;
        if (msg.has_event()) {
          *batch.add_events() = std::move(*msg.mutable_event());
        } else {
          batch = std::move(*msg.mutable_batch());
        }
        for (v1::Event& e : *batch.mutable_events()) {
          if (ctl.o.json) {
            v1::WatchEventsResponse one;
            *one.mutable_event() = std::move(e);
            one.set_incarnation(msg.incarnation());
            ctl.out << Json(one) << std::flush;
            req.set_since_revision(one.event().revision());
          } else {
            PrintEvent(ctl.out, e);
            ctl.out << std::flush;
            req.set_since_revision(e.revision());
          }
          if (ctl.o.watch_max_events > 0 && ++events >= ctl.o.watch_max_events) {
            ctx.TryCancel();
            while (reader->Read(&msg)) {
            }
            reader->Finish();
            return 0;
          }
        }
      } else if (msg.has_progress()) {
        req.set_since_revision(msg.progress().revision());
      }
    }
    grpc::Status s = reader->Finish();
    if (s.error_code() == grpc::StatusCode::OUT_OF_RANGE) {
      ctl.err << "umpathctl: cannot resume after revision " << req.since_revision() << " ("
              << s.error_message() << "); starting again from a snapshot\n";
      req.set_since_revision(0);
      req.clear_incarnation();
      // At once: the agent answered, only not from there (a snapshot cannot be refused
      // so, so this does not loop).
      continue;
    } else if (s.error_code() != grpc::StatusCode::UNAVAILABLE &&
               s.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED &&
               // An agent that is stopping cancels the calls that still reach it on a
               // connection it had: the next agent is to come.
               s.error_code() != grpc::StatusCode::CANCELLED) {
      return Fail(ctl.err, s);
    } else {
      ctl.err << "umpathctl: stream ended (" << s.error_message()
              << "); resuming after revision " << req.since_revision() << "\n";
    }
    if (attempt >= ctl.o.watch_reconnects) return Fail(ctl.err, s);
    // 0.1 s, doubling to 1 s: an agent being upgraded is back within a second of it.
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(100 << std::min(attempt, 4), 1000)));
    if (ctl.o.reconnect) {
      fresh = ctl.o.reconnect();
      stub = fresh.get();
    }
  }
}

int Watch(const Invocation& ctl) {
  v1::WatchEventsRequest req;
  for (size_t i = 1; i < ctl.args.size(); ++i) {
    absl::string_view a = ctl.args[i];
    uint64_t since;
    if (absl::ConsumePrefix(&a, "--since=") && absl::SimpleAtoi(a, &since)) {
      req.set_since_revision(since);
    } else if (absl::ConsumePrefix(&a, "--head=")) {
      req.add_heads(Full("heads/", a));
    } else if (absl::ConsumePrefix(&a, "--type=")) {
      v1::EventType t;
      if (!v1::EventType_Parse(Upper(a, "EVENT_TYPE_"), &t)) {
        return Usage(ctl.err, absl::StrCat("unknown event type ", a));
      }
      req.add_types(t);
    } else {
      return Usage(ctl.err, absl::StrCat("watch: unexpected argument ", ctl.args[i]));
    }
  }
  return StreamEvents(ctl, std::move(req));
}

std::vector<std::string> SimulatedRow(const v1alpha::SimulatedController& c) {
  std::string ana;
  for (int s : c.ana_states()) absl::StrAppend(&ana, ana.empty() ? "" : ",", Ana(static_cast<v1::AnaState>(s)));
  std::string error = "-";
  if (c.has_path_error()) {
    const v1alpha::PathError& e = c.path_error();
    error = absl::StrCat(absl::Hex(e.sct() << 8 | e.sc(), absl::kZeroPad3), e.dnr() ? " dnr" : "",
                         e.count() == 0 ? " until cleared" : absl::StrCat(" x", e.count()));
  }
  return {c.name(), c.attached() ? "yes" : "no", ana, error, absl::StrCat(c.errors_injected()),
          c.stuck() ? "yes" : "no", absl::StrCat(c.latency_us())};
}

void PrintSimulated(std::ostream& out, const google::protobuf::RepeatedPtrField<v1alpha::SimulatedController>& all) {
  std::vector<std::vector<std::string>> rows = {
      {"CONTROLLER", "ATTACHED", "ANA(by group)", "ERROR", "INJECTED", "STUCK", "LATENCY_US"}};
  for (const auto& c : all) rows.push_back(SimulatedRow(c));
  Table(out, rows);
}

bool ParseAnaState(absl::string_view text, v1::AnaState* out) {
  return v1::AnaState_Parse(Upper(text, "ANA_STATE_"), out) && *out != v1::ANA_STATE_UNSPECIFIED;
}

// `sim ...`: the simulator's faults (umpath.v1alpha.SimulatorControl).
int Sim(const Invocation& ctl) {
  auto* stub = ctl.o.simulator;
  if (stub == nullptr) return Usage(ctl.err, "sim: no simulator connection");
  const Args& a = ctl.args;
  auto show = [&](const grpc::Status& s, const auto& resp) {
    return Show(ctl.out, ctl.err, s, resp, ctl.o.json,
                +[](std::ostream& out, const std::decay_t<decltype(resp)>& r) {
                  google::protobuf::RepeatedPtrField<v1alpha::SimulatedController> one;
                  *one.Add() = r.controller();
                  PrintSimulated(out, one);
                });
  };
  if (a.size() == 1) {
    v1alpha::ListSimulatedControllersResponse r;
    grpc::Status s = stub->ListSimulatedControllers(Ctx().get(), {}, &r);
    return Show(ctl.out, ctl.err, s, r, ctl.o.json,
                +[](std::ostream& out, const v1alpha::ListSimulatedControllersResponse& l) {
                  PrintSimulated(out, l.controllers());
                });
  }
  if (a.size() < 3) return Usage(ctl.err, "sim: a fault and a controller");
  const std::string& verb = a[1];
  if (verb == "clear" && a.size() == 3) {
    v1alpha::ClearFaultsRequest req;
    req.set_controller(a[2]);
    v1alpha::ClearFaultsResponse r;
    return show(stub->ClearFaults(Ctx().get(), req, &r), r);
  }
  v1alpha::InjectFaultRequest req;
  req.set_controller(a[2]);
  uint32_t n = 0;
  if (verb == "error" && a.size() >= 4 && a.size() <= 7) {
    uint32_t code = 0;
    if (!absl::SimpleHexAtoi(a[3], &code) || code > 0x7ff) return Usage(ctl.err, "sim error: CODE is SCT and SC in hex, e.g. 0x302");
    v1alpha::PathError* pe = req.mutable_path_error();
    pe->set_sct(code >> 8);
    pe->set_sc(code & 0xff);
    for (size_t i = 4, k = 0; i < a.size(); ++i) {
      if (a[i] == "dnr") {
        pe->set_dnr(true);
      } else if (absl::SimpleAtoi(a[i], &n) && k < 2) {
        (k++ == 0 ? pe->set_count(n) : pe->set_nsid(n));
      } else {
        return Usage(ctl.err, absl::StrCat("sim error: \"", a[i], "\" is not a count, an nsid or dnr"));
      }
    }
  } else if (verb == "ana" && a.size() == 5) {
    v1::AnaState st;
    if (!absl::SimpleAtoi(a[3], &n)) return Usage(ctl.err, "sim ana: GROUP is a number");
    if (!ParseAnaState(a[4], &st)) return Usage(ctl.err, absl::StrCat("sim ana: unknown ANA state ", a[4]));
    req.mutable_ana_change()->set_group(n);
    req.mutable_ana_change()->set_state(st);
  } else if (verb == "lose" && a.size() == 3) {
    req.mutable_loss();
  } else if (verb == "return" && a.size() == 3) {
    req.mutable_controller_return();
  } else if ((verb == "lose-ns" || verb == "return-ns") && a.size() == 4 && absl::SimpleAtoi(a[3], &n)) {
    (verb == "lose-ns" ? req.mutable_namespace_loss()->set_nsid(n) : req.mutable_namespace_return()->set_nsid(n));
  } else if (verb == "stick" && a.size() == 3) {
    req.mutable_stuck();
  } else if (verb == "latency" && a.size() == 4 && absl::SimpleAtoi(a[3], &n)) {
    req.mutable_latency()->set_latency_us(n);
  } else {
    return Usage(ctl.err, absl::StrCat("sim: unknown fault or wrong arguments: ", absl::StrJoin(a, " ")));
  }
  v1alpha::InjectFaultResponse r;
  return show(stub->InjectFault(Ctx().get(), req, &r), r);
}

// How many arguments a command takes after its name. A command with more than one form
// (attach) is listed once for each.
struct Command {
  absl::string_view name;
  size_t min_args, max_args;
  int (*run)(const Invocation&);
};
constexpr size_t kAnyNumber = std::numeric_limits<size_t>::max();
constexpr Command kCommands[] = {
    {"help", 0, kAnyNumber, Help},
    {"info", 0, 0, Info},
    {"heads", 0, 1, Heads},
    {"head", 1, 1, Head},
    {"controllers", 0, 0, Controllers},
    {"controller", 1, 1, Controller},
    {"defaults", 0, 0, Defaults},
    {"set-delayed-removal", 2, 2, SetDelayedRemoval},
    {"set-default-delayed-removal", 1, 1, SetDefaultDelayedRemoval},
    {"set-io-fail-timeout", 2, 2, SetIoFailTimeout},
    {"set-default-io-fail-timeout", 1, 1, SetDefaultIoFailTimeout},
    {"set-policy", 2, 2, SetPolicy},
    {"set-default-policy", 1, 1, SetDefaultPolicy},
    {"fail-path", 2, 3, FailPath},
    {"reinstate-path", 2, 2, ReinstatePath},
    {"attach", 2, 2, Attach},
    {"attach", 4, 4, Attach},
    {"detach", 1, 1, Detach},
    {"reset", 1, 1, Reset},
    {"export", 1, 1, Export},
    {"unexport", 1, 1, Unexport},
    {"stop", 0, 2, Stop},
    {"watch", 0, kAnyNumber, Watch},
    {"sim", 0, kAnyNumber, Sim},
};

}  // namespace

std::string Usage() { return kUsage; }

int CommandStart(int argc, char** argv) {
  int i = 1;
  while (i < argc) {
    absl::string_view a = argv[i];
    if (a == "--") return i + 1;
    if (!absl::ConsumePrefix(&a, "-")) break;  // the command
    absl::ConsumePrefix(&a, "-");
    ++i;
    if (a.find('=') != absl::string_view::npos) continue;
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(a);
    if (flag != nullptr && !flag->IsOfType<bool>() && i < argc) ++i;  // its value
  }
  return i;
}

int RunCommand(v1::MultipathControl::StubInterface* stub, const Args& args,
               const CtlOptions& o, std::ostream& out, std::ostream& err) {
  if (args.empty()) return Usage(err, "no command");
  const Invocation ctl{stub, args, o, out, err};
  const size_t n = args.size() - 1;
  for (const Command& c : kCommands) {
    if (c.name == args[0] && n >= c.min_args && n <= c.max_args) return c.run(ctl);
  }
  return Usage(err, absl::StrCat("unknown command or wrong arguments: ", absl::StrJoin(args, " ")));
}

}  // namespace umpath::client
