#include "client/commands.h"

#include <algorithm>
#include <chrono>
#include <ostream>
#include <thread>
#include <type_traits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "google/protobuf/util/time_util.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/grpcpp.h"

namespace umpath::client {

namespace {

using Stub = v1::MultipathControl::StubInterface;
using Rows = std::vector<std::vector<std::string>>;

std::string Id(absl::string_view name) {
  const size_t slash = name.rfind('/');
  return std::string(slash == absl::string_view::npos ? name : name.substr(slash + 1));
}

std::string Lower(absl::string_view enum_name, absl::string_view prefix) {
  std::string s(absl::StripPrefix(enum_name, prefix));
  std::transform(s.begin(), s.end(), s.begin(),
                 [](char c) { return c == '_' ? '-' : std::tolower(c); });
  return s;
}

std::string Policy(v1::IoPolicy p) { return Lower(v1::IoPolicy_Name(p), "IO_POLICY_"); }
std::string Ana(v1::AnaState s) { return Lower(v1::AnaState_Name(s), "ANA_STATE_"); }
std::string State(v1::ControllerState s) {
  return Lower(v1::ControllerState_Name(s), "CONTROLLER_STATE_");
}
std::string Time(const google::protobuf::Timestamp& t) {
  return google::protobuf::util::TimeUtil::ToString(t);
}
std::string OrDash(const std::string& s) { return s.empty() ? "-" : s; }

bool Wide(const CtlOptions& o) { return o.format == Format::kWide; }

void PrintHeads(std::ostream& out,
                const google::protobuf::RepeatedPtrField<v1::Head>& heads,
                const CtlOptions& o) {
  Rows rows = {{"HEAD", "PATHS", "LIVE", "POLICY", "DELAYED_REMOVAL", "REMOVAL",
                "WAITING", "EXPORT"}};
  if (Wide(o)) {
    for (const char* c :
         {"UID", "NGUID", "UUID", "IO_FAIL_TIMEOUT", "SELECTABLE", "SUBSYSTEM", "NSID"}) {
      rows[0].push_back(c);
    }
  }
  for (const v1::Head& h : heads) {
    rows.push_back({Id(h.name()), absl::StrCat(h.paths_size()),
                    absl::StrCat(h.live_paths()), Policy(h.io_policy()),
                    absl::StrCat(h.delayed_removal_secs(), "s"),
                    h.removal_pending() ? Time(h.removal_deadline()) : "-",
                    absl::StrCat(h.waiting_ios()), OrDash(h.export_device())});
    if (Wide(o)) {
      for (std::string c : {absl::StrCat(h.uid()), OrDash(h.nguid()), OrDash(h.uuid()),
                            absl::StrCat(h.io_fail_timeout_secs(), "s"),
                            absl::StrCat(h.selectable_paths()), h.subsystem_nqn(),
                            absl::StrCat(h.nsid())}) {
        rows.back().push_back(std::move(c));
      }
    }
  }
  Table(out, rows, o.no_headers);
}

void PrintHead(std::ostream& out, const v1::Head& h, const CtlOptions& o) {
  if (!o.no_headers) {
    out << "head " << Id(h.name()) << "\n"
        << "  subsystem " << h.subsystem_nqn() << " nsid " << h.nsid() << ", "
        << h.size_blocks() << " blocks of " << h.block_size() << " B\n"
        << "  policy " << Policy(h.io_policy()) << ", delayed_removal_secs "
        << h.delayed_removal_secs();
    if (h.io_fail_timeout_secs() > 0)
      out << ", io_fail_timeout_secs " << h.io_fail_timeout_secs();
    if (h.failing_fast()) out << " (failing fast: no usable path)";
    if (h.removal_pending()) out << ", removal at " << Time(h.removal_deadline());
    out << ", waiting I/O " << h.waiting_ios() << "\n";
    if (!h.export_device().empty()) {
      out << "  exported as " << h.export_device() << " (" << h.export_major() << ":"
          << h.export_minor() << ", diskseq " << h.export_diskseq() << ")";
      if (!h.export_by_id_link().empty()) out << ", linked as " << h.export_by_id_link();
      out << "\n";
    }
    if (!h.volume().empty()) out << "  volume " << h.volume() << "\n";
    if (Wide(o)) {
      out << "  uid " << h.uid() << ", nguid " << OrDash(h.nguid()) << ", eui64 "
          << OrDash(h.eui64()) << ", uuid " << OrDash(h.uuid()) << ", created "
          << Time(h.create_time()) << "\n";
    }
  }
  Rows rows = {{"  PATH", "CONTROLLER", "ANA", "SELECTABLE", "IN_FLIGHT", "COMPLETED",
                "ERRORS", "FAILOVERS"}};
  for (const v1::Path& p : h.paths()) {
    std::string ana = Ana(p.ana_state());
    if (p.ana_pending()) ana += ",pending";
    if (p.admin_failed()) ana += ",failed";
    if (!p.ready()) ana += ",not-ready";
    rows.push_back({"  " + Id(p.name()), State(p.controller_state()), ana,
                    p.selectable() ? "yes" : "no", absl::StrCat(p.counters().in_flight()),
                    absl::StrCat(p.counters().completed()),
                    absl::StrCat(p.counters().errors()),
                    absl::StrCat(p.counters().failovers())});
  }
  Table(out, rows, o.no_headers);
}

void PrintEvent(std::ostream& out, const v1::Event& e) {
  out << e.revision() << " " << Time(e.time()) << " "
      << Lower(v1::EventType_Name(e.type()), "EVENT_TYPE_");
  if (!e.head().empty()) out << " head=" << Id(e.head());
  if (!e.path().empty()) out << " path=" << Id(e.path());
  if (!e.controller().empty()) out << " controller=" << Id(e.controller());
  if (!e.from().empty() || !e.to().empty()) out << " " << e.from() << " -> " << e.to();
  if (!e.reason().empty()) out << " (" << e.reason() << ")";
  if (e.has_removal_deadline()) out << " deadline=" << Time(e.removal_deadline());
  out << "\n";
}

// `table` is not deduced, so a generic lambda or a printer template can be passed.
template <typename Resp>
using Printer = void (*)(std::ostream&, const std::type_identity_t<Resp>&,
                         const CtlOptions&);

// The answer in the format asked for; 1 if it cannot be printed so.
int Print(const Invocation& ctl, const google::protobuf::Message& m,
          const std::function<void()>& table) {
  switch (ctl.o.format) {
    case Format::kJson:
      ctl.out << Json(m);
      return 0;
    case Format::kYaml: {
      absl::StatusOr<std::string> yaml = Yaml(m);
      if (!yaml.ok()) {
        ctl.err << "umpathctl: " << yaml.status().message() << "\n";
        return 1;
      }
      ctl.out << *yaml;
      return 0;
    }
    default:
      table();
      return 0;
  }
}

template <typename Resp>
int Show(const Invocation& ctl, const grpc::Status& s, const Resp& resp,
         Printer<Resp> table) {
  if (!s.ok()) return Fail(ctl.err, s);
  return Print(ctl, resp, [&] { table(ctl.out, resp, ctl.o); });
}

// A call's context: its deadline is --timeout, 30 s without one (`stream`: none).
std::unique_ptr<grpc::ClientContext> Ctx(const CtlOptions& o, bool stream = false,
                                         absl::Duration extra = absl::ZeroDuration()) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  absl::Duration timeout = o.timeout;
  if (timeout == absl::ZeroDuration() && !stream) timeout = absl::Seconds(30);
  if (timeout > absl::ZeroDuration()) {
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout + extra));
  }
  return ctx;
}

template <typename Req, typename Resp>
int Call(const Invocation& ctl,
         grpc::Status (Stub::*rpc)(grpc::ClientContext*, const Req&, Resp*),
         const Req& req, Printer<Resp> table) {
  Resp r;
  grpc::Status s = (ctl.stub->*rpc)(Ctx(ctl.o).get(), req, &r);
  return Show(ctl, s, r, table);
}

// Every page of a List call, shown as one answer.
template <typename Req, typename Resp>
int ListAll(const Invocation& ctl,
            grpc::Status (Stub::*list)(grpc::ClientContext*, const Req&, Resp*), Req req,
            Printer<Resp> table) {
  Resp all;
  do {
    Resp page;
    grpc::Status s = (ctl.stub->*list)(Ctx(ctl.o).get(), req, &page);
    if (!s.ok()) return Fail(ctl.err, s);
    req.set_page_token(page.next_page_token());
    page.clear_next_page_token();  // MergeFrom would keep it: the whole list has no next
                                   // page
    all.MergeFrom(page);
  } while (!req.page_token().empty());
  return Show(ctl, grpc::Status::OK, all, table);
}

// For the answers that carry the head a call changed.
template <typename Resp>
void PrintHeadOf(std::ostream& out, const Resp& r, const CtlOptions& o) {
  PrintHead(out, r.head(), o);
}

template <typename Resp>
void PrintDefaults(std::ostream& out, const Resp& r, const CtlOptions&) {
  out << "io_policy " << Policy(r.defaults().io_policy()) << "\ndelayed_removal_secs "
      << r.defaults().delayed_removal_secs() << "\nio_fail_timeout_secs "
      << r.defaults().io_fail_timeout_secs() << "\n";
}

}  // namespace

std::string Full(absl::string_view prefix, absl::string_view name) {
  return absl::StartsWith(name, prefix) ? std::string(name) : absl::StrCat(prefix, name);
}

std::string Upper(absl::string_view text, absl::string_view prefix) {
  std::string s = absl::StrCat(prefix, text);
  std::transform(s.begin(), s.end(), s.begin(),
                 [](char c) { return c == '-' ? '_' : std::toupper(c); });
  return s;
}

bool ParsePolicy(absl::string_view text, v1::IoPolicy* out) {
  if (text == "numa")
    *out = v1::IO_POLICY_NUMA;
  else if (text == "round-robin")
    *out = v1::IO_POLICY_ROUND_ROBIN;
  else if (text == "queue-depth")
    *out = v1::IO_POLICY_QUEUE_DEPTH;
  else
    return false;
  return true;
}

bool ParseAnaState(absl::string_view text, v1::AnaState* out) {
  return v1::AnaState_Parse(Upper(text, "ANA_STATE_"), out) &&
         *out != v1::ANA_STATE_UNSPECIFIED;
}

int Fail(std::ostream& err, const grpc::Status& s) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  const int code = static_cast<int>(s.error_code());
  err << "umpathctl: " << (code >= 0 && code <= 16 ? kNames[code] : "?") << ": "
      << s.error_message();
  // The reason (AIP-193's ErrorInfo) for scripts that switch on more than the code.
  google::rpc::Status details;
  if (!s.error_details().empty() && details.ParseFromString(s.error_details())) {
    for (const google::protobuf::Any& any : details.details()) {
      google::rpc::ErrorInfo info;
      if (any.UnpackTo(&info)) {
        err << " [" << info.reason() << "]";
        break;
      }
    }
  }
  err << "\n";
  return code;
}

int Info(const Invocation& ctl) {
  return Call(
      ctl, &Stub::GetAgentInfo, {}, [](std::ostream& out, const auto& r, const auto&) {
        const v1::AgentInfo& a = r.agent_info();
        out << "version " << a.version() << "\nrevision " << a.revision() << "\nnode " << a.node() << "\nbackends "
            << (a.backends().empty() ? "none" : absl::StrJoin(a.backends(), ","))
            << "\nyour role " << a.caller_role() << "\nmax delayed_removal_secs "
            << a.max_delayed_removal_secs() << "\nincarnation " << a.incarnation()
            << "\n";
        if (a.max_pinned_bytes() > 0) {
          out << "I/O buffers " << (a.pinned_buffer_bytes() >> 20) << " MiB pinned of a "
              << (a.max_pinned_bytes() >> 20) << " MiB budget; " << a.exportable_heads()
              << " more heads can be exported\n";
        }
      });
}

int Heads(const Invocation& ctl, v1::ListHeadsRequest req) {
  return ListAll(ctl, &Stub::ListHeads, std::move(req),
                 [](std::ostream& out, const auto& r, const auto& o) {
                   PrintHeads(out, r.heads(), o);
                 });
}

int Head(const Invocation& ctl, const v1::GetHeadRequest& req) {
  return Call(ctl, &Stub::GetHead, req, PrintHeadOf);
}

int Wait(const Invocation& ctl, v1::WaitHeadRequest req) {
  // The agent ends the wait at timeout_secs; the call's deadline is a little later, so
  // its answer (DEADLINE_EXCEEDED saying where the head was) is the one printed.
  const absl::Duration timeout =
      ctl.o.timeout > absl::ZeroDuration() ? ctl.o.timeout : absl::Seconds(30);
  req.set_timeout_secs(
      static_cast<uint32_t>(absl::ToInt64Seconds(absl::Ceil(timeout, absl::Seconds(1)))));
  v1::WaitHeadResponse r;
  grpc::Status s = ctl.stub->WaitHead(Ctx(ctl.o, false, absl::Seconds(5)).get(), req, &r);
  if (s.ok() && req.condition() == v1::HEAD_CONDITION_GONE) return 0;
  return Show(ctl, s, r, PrintHeadOf);
}

int Controllers(const Invocation& ctl) {
  return ListAll(
      ctl, &Stub::ListControllers, {},
      [](std::ostream& out, const auto& r, const auto& o) {
        Rows rows = {
            {"CONTROLLER", "STATE", "TRANSPORT", "ADDRESS", "SUBSYSTEM", "HEADS"}};
        if (Wide(o)) {
          for (const char* c :
               {"NUMA", "ANA", "CQT_MS", "FENCED_IOS", "STRAY_COMPLETIONS"})
            rows[0].push_back(c);
        }
        for (const v1::Controller& c : r.controllers()) {
          rows.push_back({Id(c.name()), State(c.state()), c.transport(), c.address(),
                          c.subsystem_nqn(), absl::StrCat(c.heads_size())});
          if (Wide(o)) {
            for (std::string w :
                 {absl::StrCat(c.numa_node()),
                  std::string(c.ana_supported() ? "yes" : "no"), absl::StrCat(c.cqt_ms()),
                  absl::StrCat(c.fenced_ios()), absl::StrCat(c.stray_completions())}) {
              rows.back().push_back(std::move(w));
            }
          }
        }
        Table(out, rows, o.no_headers);
      });
}

int Controller(const Invocation& ctl, const v1::GetControllerRequest& req) {
  return Call(ctl, &Stub::GetController, req,
              [](std::ostream& out, const auto& r, const auto&) {
                const v1::Controller& c = r.controller();
                out << "controller " << Id(c.name()) << " " << State(c.state()) << " "
                    << c.transport() << " " << c.address() << "\n  subsystem "
                    << c.subsystem_nqn() << "\n  ana "
                    << (c.ana_supported() ? "yes" : "no") << "\n  heads";
                for (const auto& h : c.heads()) out << " " << Id(h);
                out << "\n";
              });
}

int Defaults(const Invocation& ctl) {
  return Call(ctl, &Stub::GetDefaults, {}, PrintDefaults);
}

int SetDelayedRemoval(const Invocation& ctl, const v1::SetDelayedRemovalRequest& req) {
  return Call(ctl, &Stub::SetDelayedRemoval, req, PrintHeadOf);
}

int SetDefaultDelayedRemoval(const Invocation& ctl,
                             const v1::SetDefaultDelayedRemovalRequest& req) {
  return Call(ctl, &Stub::SetDefaultDelayedRemoval, req, PrintDefaults);
}

int SetIoFailTimeout(const Invocation& ctl, const v1::SetIoFailTimeoutRequest& req) {
  return Call(ctl, &Stub::SetIoFailTimeout, req, PrintHeadOf);
}

int SetDefaultIoFailTimeout(const Invocation& ctl,
                            const v1::SetDefaultIoFailTimeoutRequest& req) {
  return Call(ctl, &Stub::SetDefaultIoFailTimeout, req, PrintDefaults);
}

int SetPolicy(const Invocation& ctl, const v1::SetIoPolicyRequest& req) {
  return Call(ctl, &Stub::SetIoPolicy, req, PrintHeadOf);
}

int SetDefaultPolicy(const Invocation& ctl, const v1::SetDefaultIoPolicyRequest& req) {
  return Call(ctl, &Stub::SetDefaultIoPolicy, req, PrintDefaults);
}

namespace {

std::vector<std::string> SettingsRow(const v1::HeadSettings& s) {
  auto secs = [](bool has, uint32_t v) { return has ? absl::StrCat(v) : std::string("-"); };
  std::string head = Id(std::string(absl::StripSuffix(s.name(), "/settings")));
  return {head, s.head_present() ? "yes" : "no", secs(s.has_delayed_removal_secs(), s.delayed_removal_secs()),
          s.has_io_policy() ? Policy(s.io_policy()) : "-",
          secs(s.has_io_fail_timeout_secs(), s.io_fail_timeout_secs()),
          s.has_export_() ? (s.export_() ? "yes" : "no") : "-", s.has_volume() ? s.volume() : "-"};
}
const std::vector<std::string> kSettingsHeader = {"HEAD", "PRESENT", "DELAYED_REMOVAL", "POLICY",
                                                  "IO_FAIL_TIMEOUT", "EXPORT", "VOLUME"};

}  // namespace

int ListSettings(const Invocation& ctl) {
  return ListAll(ctl, &Stub::ListHeadSettings, {}, [](std::ostream& out, const auto& r, const auto& o) {
    std::vector<std::vector<std::string>> rows = {kSettingsHeader};
    for (const v1::HeadSettings& s : r.settings()) rows.push_back(SettingsRow(s));
    Table(out, rows, o.no_headers);
  });
}

int UpdateSettings(const Invocation& ctl, const v1::UpdateHeadSettingsRequest& req) {
  return Call(ctl, &Stub::UpdateHeadSettings, req, [](std::ostream& out, const auto& r, const auto& o) {
    Table(out, {kSettingsHeader, SettingsRow(r.settings())}, o.no_headers);
  });
}

int DeleteSettings(const Invocation& ctl, const v1::DeleteHeadSettingsRequest& req) {
  return Call(ctl, &Stub::DeleteHeadSettings, req,
              [](std::ostream& out, const auto&, const auto&) { out << "forgotten\n"; });
}

int FailPath(const Invocation& ctl, const v1::FailPathRequest& req) {
  return Call(ctl, &Stub::FailPath, req, PrintHeadOf);
}

int ReinstatePath(const Invocation& ctl, const v1::ReinstatePathRequest& req) {
  return Call(ctl, &Stub::ReinstatePath, req, PrintHeadOf);
}

int Attach(const Invocation& ctl, const v1::AttachControllerRequest& req) {
  return Call(ctl, &Stub::AttachController, req,
              [](std::ostream& out, const auto& r, const auto&) {
                out << "attached " << Id(r.controller().name()) << "\n";
              });
}

int Detach(const Invocation& ctl, const v1::DetachControllerRequest& req) {
  return Call(ctl, &Stub::DetachController, req,
              [](std::ostream& out, const auto&, const auto&) { out << "detached\n"; });
}

int Reset(const Invocation& ctl, const v1::ResetControllerRequest& req) {
  return Call(ctl, &Stub::ResetController, req,
              [](std::ostream& out, const auto& r, const auto&) {
                out << "resetting " << Id(r.controller().name()) << "\n";
              });
}

// The device alone on the first line (what a script took before); then the handles that
// outlive its number.
int Export(const Invocation& ctl, const v1::ExportHeadRequest& req) {
  return Call(ctl, &Stub::ExportHead, req, [](std::ostream& out, const auto& r, const auto& o) {
    out << r.device() << "\n";
    if (o.no_headers) return;
    out << "  dev " << r.major() << ":" << r.minor() << ", diskseq " << r.diskseq() << "\n"
        << "  link " << OrDash(r.by_id_link()) << "\n";
  });
}

int Unexport(const Invocation& ctl, const v1::UnexportHeadRequest& req) {
  return Call(ctl, &Stub::UnexportHead, req,
              [](std::ostream& out, const auto&, const auto&) { out << "unexported\n"; });
}

int Stop(const Invocation& ctl, const v1::StopAgentRequest& req) {
  Printer<v1::StopAgentResponse> said =
      [](std::ostream& out, const v1::StopAgentResponse&, const CtlOptions&) {
        out << "stopping: the block devices stay for the next agent\n";
      };
  if (req.mode() == v1::STOP_MODE_REMOVE) {
    said = [](std::ostream& out, const v1::StopAgentResponse&, const CtlOptions&) {
      out << "stopping: the block devices are removed\n";
    };
  }
  return Call(ctl, &Stub::StopAgent, req, said);
}

namespace {

// Prints what one message of a watch carries and moves `req` past it. Returns -1 to read
// on, or the exit code to end with (0: the events asked for were printed).
int PrintWatched(const Invocation& ctl, v1::WatchEventsResponse& msg,
                 v1::WatchEventsRequest& req, int& events) {
  // Revisions are the agent's run's: a resume names it, and a restarted agent refuses
  // it (OUT_OF_RANGE) rather than serve another journal.
  req.set_incarnation(msg.incarnation());
  if (msg.has_progress()) req.set_since_revision(msg.progress().revision());
  if (msg.has_snapshot()) {
    req.set_since_revision(msg.snapshot().revision());
    if (ctl.o.format != Format::kTable && ctl.o.format != Format::kWide) {
      if (const int code = Print(ctl, msg, nullptr); code != 0) return code;
    } else if (!ctl.o.no_headers) {
      ctl.out << "# snapshot at revision " << msg.snapshot().revision() << ": "
              << msg.snapshot().heads_size() << " heads, "
              << msg.snapshot().controllers_size() << " controllers\n";
    }
    ctl.out << std::flush;
  }
  if (!msg.has_event() && !msg.has_batch()) return -1;
  // A batch is printed as the events it carries, each as if it came alone: the output
  // does not depend on how the agent packed them.
  v1::EventBatch batch;
  if (msg.has_event()) {
    *batch.add_events() = std::move(*msg.mutable_event());
  } else {
    batch = std::move(*msg.mutable_batch());
  }
  for (v1::Event& e : *batch.mutable_events()) {
    req.set_since_revision(e.revision());
    v1::WatchEventsResponse one;
    *one.mutable_event() = std::move(e);
    one.set_incarnation(msg.incarnation());
    if (const int code = Print(ctl, one, [&] { PrintEvent(ctl.out, one.event()); });
        code != 0) {
      return code;
    }
    ctl.out << std::flush;
    if (ctl.o.watch_max_events > 0 && ++events >= ctl.o.watch_max_events) return 0;
  }
  return -1;
}

}  // namespace

int Watch(const Invocation& ctl, v1::WatchEventsRequest req) {
  // Several events to a message when it is behind (an older agent ignores this).
  req.set_max_events_per_message(64);
  int events = 0;
  std::unique_ptr<Stub> fresh;
  Stub* stub = ctl.stub;
  for (int attempt = 0;; ++attempt) {
    std::unique_ptr<grpc::ClientContext> ctx = Ctx(ctl.o, /*stream=*/true);
    auto reader = stub->WatchEvents(ctx.get(), req);
    v1::WatchEventsResponse msg;
    while (reader->Read(&msg)) {
      attempt = 0;  // it was served: the next drop starts its retries afresh
      if (const int end = PrintWatched(ctl, msg, req, events); end >= 0) {
        ctx->TryCancel();
        while (reader->Read(&msg)) {
        }
        reader->Finish();
        return end;
      }
    }
    grpc::Status s = reader->Finish();
    if (s.error_code() == grpc::StatusCode::OUT_OF_RANGE) {
      ctl.err << "umpathctl: cannot resume after revision " << req.since_revision()
              << " (" << s.error_message() << "); starting again from a snapshot\n";
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
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::min(100 << std::min(attempt, 4), 1000)));
    if (ctl.o.reconnect) {
      fresh = ctl.o.reconnect();
      stub = fresh.get();
    }
  }
}

namespace {

std::vector<std::string> SimulatedRow(const v1alpha::SimulatedController& c) {
  std::string ana;
  for (int s : c.ana_states())
    absl::StrAppend(&ana, ana.empty() ? "" : ",", Ana(static_cast<v1::AnaState>(s)));
  std::string error = "-";
  if (c.has_path_error()) {
    const v1alpha::PathError& e = c.path_error();
    error = absl::StrCat(
        absl::Hex(e.sct() << 8 | e.sc(), absl::kZeroPad3), e.dnr() ? " dnr" : "",
        e.count() == 0 ? " until cleared" : absl::StrCat(" x", e.count()));
  }
  return {c.name(),
          c.attached() ? "yes" : "no",
          ana,
          error,
          absl::StrCat(c.errors_injected()),
          c.stuck() ? "yes" : "no",
          absl::StrCat(c.latency_us())};
}

void PrintSimulated(
    std::ostream& out,
    const google::protobuf::RepeatedPtrField<v1alpha::SimulatedController>& all,
    const CtlOptions& o) {
  Rows rows = {{"CONTROLLER", "ATTACHED", "ANA(by group)", "ERROR", "INJECTED", "STUCK",
                "LATENCY_US"}};
  for (const auto& c : all) rows.push_back(SimulatedRow(c));
  Table(out, rows, o.no_headers);
}

// The answer of a fault: the simulated controller as it is now.
template <typename Resp>
int ShowSimulated(const Invocation& ctl, const grpc::Status& s, const Resp& r) {
  return Show(ctl, s, r, [](std::ostream& out, const Resp& r, const CtlOptions& o) {
    google::protobuf::RepeatedPtrField<v1alpha::SimulatedController> one;
    *one.Add() = r.controller();
    PrintSimulated(out, one, o);
  });
}

}  // namespace

int SimList(const Invocation& ctl) {
  v1alpha::ListSimulatedControllersResponse r;
  grpc::Status s = ctl.o.simulator->ListSimulatedControllers(Ctx(ctl.o).get(), {}, &r);
  return Show(ctl, s, r, [](std::ostream& out, const auto& l, const auto& o) {
    PrintSimulated(out, l.controllers(), o);
  });
}

int SimInject(const Invocation& ctl, const v1alpha::InjectFaultRequest& req) {
  v1alpha::InjectFaultResponse r;
  return ShowSimulated(ctl, ctl.o.simulator->InjectFault(Ctx(ctl.o).get(), req, &r), r);
}

int SimClear(const Invocation& ctl, const v1alpha::ClearFaultsRequest& req) {
  v1alpha::ClearFaultsResponse r;
  return ShowSimulated(ctl, ctl.o.simulator->ClearFaults(Ctx(ctl.o).get(), req, &r), r);
}

}  // namespace umpath::client
