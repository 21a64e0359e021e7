// umpathctl's command line: one CLI11 subcommand for each command, with its own flags
// and --help; the global flags go before or after it. The only file that includes
// CLI11 (a heavy header).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <ostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "client/commands.h"
#include "client/ctl.h"

namespace umpath::client {

namespace {

using Run = std::function<int(const Invocation&)>;

constexpr char kFooter[] =
    R"(HEAD is a head's id (nguid-..., eui64-..., uuid-..., ns1.nqn...) or heads/{id}; PATH is
the controller's name. `umpathctl COMMAND --help` shows a command's arguments and flags;
the global flags (`umpathctl --help`) go before or after the command.

Exit status: 0 when the command did what it says; 2 for a usage error (an unknown
command or flag, a bad value); 1 for a local error; otherwise the gRPC status code of the
call that failed, e.g. 4 DEADLINE_EXCEEDED (--timeout, or a wait that ended first),
5 NOT_FOUND, 7 PERMISSION_DENIED, 9 FAILED_PRECONDITION, 14 UNAVAILABLE (no agent).
)";

// -o, in the order of Format.
constexpr const char* kFormats[] = {"table", "wide", "json", "yaml"};

// One run of the command line: the parser, where its values go, the command chosen.
struct CommandLine {
  CLI::App app{"umpathctl: the command line for umpathd's control API.", "umpathctl"};
  ConnectFlags connect;
  std::string output = "table";
  bool no_headers = false;
  absl::Duration timeout = absl::ZeroDuration();
  bool needs_agent = true;  // help and completion do not
  Run run;
  std::vector<std::shared_ptr<void>> values;  // see Value
};

// A value checked by `ok`; otherwise the message is `what` and the value.
CLI::Validator Check(std::function<bool(const std::string&)> ok, const std::string& what,
                     const std::string& name) {
  return CLI::Validator(
      [ok, what](std::string& s) {
        return ok(s) ? std::string() : absl::StrCat(what, " ", s);
      },
      name);
}

const CLI::Validator& PolicyCheck() {
  static const CLI::Validator v = Check(
      [](const std::string& s) {
        v1::IoPolicy p;
        return ParsePolicy(s, &p);
      },
      "unknown policy (numa, round-robin or queue-depth):", "POLICY");
  return v;
}

// Where an argument's value goes: kept by the command line, so that it lives as long
// as the parser writing it whether a callback holds it or not.
template <typename T>
std::shared_ptr<T> Value(CommandLine& cl) {
  auto value = std::make_shared<T>();
  cl.values.push_back(value);
  return value;
}

void AddGlobalFlags(CommandLine& cl) {
  CLI::App& app = cl.app;
  ConnectFlags& c = cl.connect;
  app.add_option("--socket", c.socket, "umpathd's Unix socket")->capture_default_str();
  app.add_option("--address", c.address,
                 "host:port of umpathd's mTLS listener instead of the socket (with the "
                 "--tls_* files)");
  app.add_option("--tls_cert_file,--tls-cert-file", c.tls_cert_file,
                 "this client's certificate (PEM), for --address");
  app.add_option("--tls_key_file,--tls-key-file", c.tls_key_file,
                 "its private key (PEM)");
  app.add_option("--tls_ca_file,--tls-ca-file", c.tls_ca_file,
                 "the CA (PEM) the server's certificate chains to");
  app.add_option("--tls_server_name,--tls-server-name", c.tls_server_name,
                 "the name to expect in the server's certificate");
  // --o: the spelling of absl, which umpathctl parsed its flags with before.
  app.add_option("-o,--output,--o", cl.output,
                 "table, wide (more columns), json (protobuf's JSON mapping) or yaml")
      ->check(CLI::IsMember(
          std::vector<std::string>(std::begin(kFormats), std::end(kFormats))));
  app.add_flag("--no-headers", cl.no_headers, "no header lines in table and wide output");
  app.add_option_function<std::string>(
         "--timeout",
         [&cl](const std::string& text) {
           if (!absl::ParseDuration(text, &cl.timeout) ||
               cl.timeout <= absl::ZeroDuration()) {
             throw CLI::ValidationError("--timeout",
                                        "not a duration (e.g. 30s, 2m, 500ms): " + text);
           }
         },
         "the deadline of each call (default 30s; a watch has none), and how long wait "
         "waits")
      ->type_name("DURATION");
}

// A command whose one argument names what it acts on (head HEAD, detach CONTROLLER).
template <typename Req>
void NameCommand(CommandLine& cl, const char* name, const char* arg, const char* prefix,
                 const char* help, int (*fn)(const Invocation&, const Req&)) {
  CLI::App* sub = cl.app.add_subcommand(name, help);
  auto value = Value<std::string>(cl);
  sub->add_option(arg, *value)->required();
  sub->callback([&cl, value, prefix, fn] {
    Req req;
    req.set_name(Full(prefix, *value));
    cl.run = [req, fn](const Invocation& ctl) { return fn(ctl, req); };
  });
}

// A setting in seconds: of a head (set-delayed-removal HEAD SECS), or of the node's
// defaults (set-default-delayed-removal SECS).
template <typename Req>
void SecondsCommand(CommandLine& cl, const char* name, const char* help,
                    void (Req::*set)(int64_t), int (*fn)(const Invocation&, const Req&)) {
  CLI::App* sub = cl.app.add_subcommand(name, help);
  auto head = Value<std::string>(cl);
  auto secs = Value<int64_t>(cl);
  constexpr bool kOfAHead = requires(Req r) { r.set_name(""); };
  if (kOfAHead) sub->add_option("HEAD", *head)->required();
  sub->add_option("SECS", *secs, "0..86400")->required();
  sub->callback([&cl, head, secs, set, fn] {
    Req req;
    if constexpr (kOfAHead) req.set_name(Full("heads/", *head));
    // Out of range goes to the agent as it is, which says what the range is.
    (req.*set)(*secs);
    cl.run = [req, fn](const Invocation& ctl) { return fn(ctl, req); };
  });
}

void AddHeadCommands(CommandLine& cl) {
  CLI::App* heads =
      cl.app.add_subcommand("heads", "every head (or those matching a filter)");
  auto state = Value<std::string>(cl);
  auto filter = Value<std::string>(cl);
  heads
      ->add_option("STATE", *state, "no-live-path, no-selectable-path or removal-pending")
      ->check(Check(
          [](const std::string& s) {
            v1::HeadFilter f;
            return v1::HeadFilter_Parse(Upper(s, "HEAD_FILTER_"), &f);
          },
          "unknown filter", "STATE"));
  heads->add_option(
      "--filter", *filter,
      "an AIP-160 expression, e.g. 'subsystem_nqn = \"nqn...\" AND nsid = 1' "
      "or 'selectable_paths = 0'");
  heads->callback([&cl, state, filter] {
    v1::ListHeadsRequest req;
    v1::HeadFilter f = v1::HEAD_FILTER_UNSPECIFIED;
    if (!state->empty()) v1::HeadFilter_Parse(Upper(*state, "HEAD_FILTER_"), &f);
    req.set_filter(f);
    req.set_filter_expression(*filter);
    cl.run = [req](const Invocation& ctl) { return Heads(ctl, req); };
  });
  NameCommand(cl, "head", "HEAD", "heads/", "one head and its paths", &Head);

  CLI::App* wait = cl.app.add_subcommand(
      "wait",
      "wait until a head (HEAD, or the one --filter matches) is in a condition; "
      "prints it (not when gone)");
  auto head = Value<std::string>(cl);
  auto cond = Value<std::string>(cl);
  auto wfilter = Value<std::string>(cl);
  wait->add_option("HEAD", *head);
  wait->add_option("--filter", *wfilter,
                   "as heads --filter; it must match at most one head");
  wait->add_option("--for", *cond, "the condition; --timeout (default 30s) says how long")
      ->required()
      ->check(CLI::IsMember({"exists", "selectable", "exported", "gone"}));
  wait->callback([&cl, head, cond, wfilter] {
    if (head->empty() == wfilter->empty()) {
      throw CLI::ValidationError("wait", "takes HEAD or --filter (one of them)");
    }
    v1::WaitHeadRequest req;
    if (!head->empty()) req.set_name(Full("heads/", *head));
    req.set_filter_expression(*wfilter);
    v1::HeadCondition c = v1::HEAD_CONDITION_UNSPECIFIED;
    v1::HeadCondition_Parse(Upper(*cond, "HEAD_CONDITION_"), &c);
    req.set_condition(c);
    cl.run = [req](const Invocation& ctl) { return Wait(ctl, req); };
  });
  NameCommand(cl, "export", "HEAD", "heads/", "make the head a block device", &Export);
  NameCommand(cl, "unexport", "HEAD", "heads/", "remove its block device", &Unexport);
}

void AddSettingCommands(CommandLine& cl) {
  cl.app.add_subcommand("defaults", "the node defaults for new heads")->callback([&cl] {
    cl.run = [](const Invocation& ctl) { return Defaults(ctl); };
  });
  SecondsCommand(cl, "set-delayed-removal", "how long a head without paths stays",
                 &v1::SetDelayedRemovalRequest::set_delayed_removal_secs,
                 &SetDelayedRemoval);
  SecondsCommand(cl, "set-default-delayed-removal",
                 "the same, for heads created from now on",
                 &v1::SetDefaultDelayedRemovalRequest::set_delayed_removal_secs,
                 &SetDefaultDelayedRemoval);
  SecondsCommand(
      cl, "set-io-fail-timeout",
      "I/O that waited this long for a usable path fails, the head stays (0: waits "
      "for removal)",
      &v1::SetIoFailTimeoutRequest::set_io_fail_timeout_secs, &SetIoFailTimeout);
  SecondsCommand(cl, "set-default-io-fail-timeout",
                 "the same, for heads created from now on",
                 &v1::SetDefaultIoFailTimeoutRequest::set_io_fail_timeout_secs,
                 &SetDefaultIoFailTimeout);
  auto head = Value<std::string>(cl);
  auto policy = Value<std::string>(cl);
  CLI::App* set = cl.app.add_subcommand("set-policy", "the head's I/O policy");
  set->add_option("HEAD", *head)->required();
  set->add_option("POLICY", *policy, "numa, round-robin or queue-depth")
      ->required()
      ->check(PolicyCheck());
  set->callback([&cl, head, policy] {
    v1::SetIoPolicyRequest req;
    req.set_name(Full("heads/", *head));
    v1::IoPolicy p = v1::IO_POLICY_UNSPECIFIED;
    ParsePolicy(*policy, &p);
    req.set_io_policy(p);
    cl.run = [req](const Invocation& ctl) { return SetPolicy(ctl, req); };
  });
  auto default_policy = Value<std::string>(cl);
  CLI::App* set_default = cl.app.add_subcommand(
      "set-default-policy", "the same, for heads created from now on");
  set_default->add_option("POLICY", *default_policy, "numa, round-robin or queue-depth")
      ->required()
      ->check(PolicyCheck());
  set_default->callback([&cl, default_policy] {
    v1::SetDefaultIoPolicyRequest req;
    v1::IoPolicy p = v1::IO_POLICY_UNSPECIFIED;
    ParsePolicy(*default_policy, &p);
    req.set_io_policy(p);
    cl.run = [req](const Invocation& ctl) { return SetDefaultPolicy(ctl, req); };
  });
}

// settings: what is kept for heads by id (UpdateHeadSettings), before they exist too.
void AddKeptSettingsCommands(CommandLine& cl) {
  CLI::App* settings = cl.app.add_subcommand(
      "settings", "head settings kept by head id, applied the moment the head appears");
  settings->require_subcommand(0, 1);
  settings->callback([&cl] {
    if (!cl.run) cl.run = [](const Invocation& ctl) { return ListSettings(ctl); };
  });
  CLI::App* set = settings->add_subcommand(
      "set", "keep settings for HEAD (its id: nguid-..., uuid-..., ...) and apply them if it exists");
  auto head = Value<std::string>(cl);
  auto delay = Value<int64_t>(cl);
  auto fail = Value<int64_t>(cl);
  auto policy = Value<std::string>(cl);
  auto exp = Value<std::string>(cl);
  auto volume = Value<std::string>(cl);
  auto allow_missing = Value<bool>(cl);
  set->add_option("HEAD", *head)->required();
  CLI::Option* o_delay = set->add_option("--delayed-removal", *delay, "0..86400 s")->check(CLI::NonNegativeNumber);
  CLI::Option* o_fail = set->add_option("--io-fail-timeout", *fail, "0..86400 s")->check(CLI::NonNegativeNumber);
  CLI::Option* o_policy =
      set->add_option("--policy", *policy, "numa, round-robin or queue-depth")->check(PolicyCheck());
  CLI::Option* o_export =
      set->add_option("--export", *exp, "true: a block device as it appears")->check(CLI::IsMember({"true", "false"}));
  // Checked by the agent, which says what it accepts. CLI11 2.1 reads "--volume=" as
  // "--volume" and takes the next argument as its value, hence a flag to remove it.
  CLI::Option* o_volume =
      set->add_option("--volume", *volume, "a label for the head (a PersistentVolume's name, say)");
  auto no_volume = Value<bool>(cl);
  set->add_flag("--no-volume", *no_volume, "remove the head's volume label")->excludes(o_volume);
  set->add_flag("--allow-missing", *allow_missing, "keep them though no such head exists now");
  set->callback([&cl, head, delay, fail, policy, exp, volume, no_volume, allow_missing, o_delay, o_fail,
                 o_policy, o_export, o_volume] {
    v1::UpdateHeadSettingsRequest req;
    v1::HeadSettings* s = req.mutable_settings();
    s->set_name(Full("heads/", *head) + "/settings");
    // Out of range goes to the agent as it is, which says what the range is.
    if (o_delay->count() > 0) s->set_delayed_removal_secs(static_cast<uint32_t>(*delay));
    if (o_fail->count() > 0) s->set_io_fail_timeout_secs(static_cast<uint32_t>(*fail));
    if (o_policy->count() > 0) {
      v1::IoPolicy p = v1::IO_POLICY_UNSPECIFIED;
      ParsePolicy(*policy, &p);
      s->set_io_policy(p);
    }
    if (o_export->count() > 0) s->set_export_(*exp == "true");
    if (o_volume->count() > 0) s->set_volume(*volume);
    if (*no_volume) s->set_volume("");
    req.set_allow_missing(*allow_missing);
    cl.run = [req](const Invocation& ctl) { return UpdateSettings(ctl, req); };
  });
  CLI::App* del = settings->add_subcommand("delete", "forget what is kept for HEAD (OK if nothing is)");
  auto del_head = Value<std::string>(cl);
  del->add_option("HEAD", *del_head)->required();
  del->callback([&cl, del_head] {
    v1::DeleteHeadSettingsRequest req;
    req.set_name(Full("heads/", *del_head) + "/settings");
    cl.run = [req](const Invocation& ctl) { return DeleteSettings(ctl, req); };
  });
}

// attach: the controller, and for fabrics the per-connect options (AttachControllerRequest
// fields 5..13). Values go to the agent as given; it says what each accepts.
void AddAttachCommand(CommandLine& cl) {
  auto transport = Value<std::string>(cl);
  auto address = Value<std::string>(cl);
  auto service = Value<std::string>(cl);
  auto nqn = Value<std::string>(cl);
  auto loss = Value<int32_t>(cl);
  auto delay = Value<uint32_t>(cl);
  auto kato = Value<uint32_t>(cl);
  auto text = Value<std::array<std::string, 6>>(cl);
  CLI::App* attach = cl.app.add_subcommand(
      "attach",
      "e.g. attach pcie 0000:01:00.0, attach tcp 10.0.0.2 4420 nqn.2014-08.org.example:vol1 "
      "--host-traddr=10.0.0.1 --ctrl-loss-tmo=-1 --dhchap-secret-file=/etc/umpath/keys/vol1");
  attach->add_option("TRANSPORT", *transport, "pcie, kernel, tcp, ...")->required();
  attach->add_option("ADDRESS", *address)->required();
  attach->add_option("SERVICE", *service, "with NQN, for a fabrics controller");
  attach->add_option("NQN", *nqn);
  CLI::Option* o_loss = attach->add_option(
      "--ctrl-loss-tmo", *loss, "fabrics: seconds the kernel reconnects a lost controller; -1: forever");
  CLI::Option* o_delay =
      attach->add_option("--reconnect-delay", *delay, "fabrics: seconds between reconnects (1..86400)");
  CLI::Option* o_kato = attach->add_option("--keep-alive-tmo", *kato, "fabrics: keep-alive timeout in seconds");
  std::array<std::string, 6>& t = *text;
  attach->add_option("--host-traddr", t[0], "fabrics: the host address to connect from (pins the path to a NIC)");
  attach->add_option("--host-iface", t[1], "tcp: the network interface to connect through");
  attach->add_option("--hostnqn", t[2], "fabrics: the host NQN for this connect");
  // Not --tls-key-file: that global flag is this client's own TLS key.
  attach->add_option("--tls-psk-file", t[3],
                     "tcp: a file (absolute path on the agent's host, mode o-r) with the configured TLS PSK "
                     "(NVMeTLSkey-1:..., as nvme gen-tls-key prints it); needs tlshd on the agent's host");
  attach->add_option("--dhchap-secret-file", t[4],
                     "fabrics: a file (absolute path on the agent's host, mode o-r) with the host's DHHC-1 secret");
  attach->add_option("--dhchap-ctrl-secret-file", t[5], "fabrics: the controller's DHHC-1 secret (bidirectional)");
  attach->callback([&cl, transport, address, service, nqn, loss, delay, kato, text, o_loss, o_delay, o_kato] {
    if (service->empty() != nqn->empty()) {
      throw CLI::ValidationError("attach", "takes TRANSPORT ADDRESS [SERVICE NQN]");
    }
    v1::AttachControllerRequest req;
    req.set_transport(*transport);
    req.set_address(*address);
    req.set_service(*service);
    req.set_subsystem_nqn(*nqn);
    if (o_loss->count() > 0) req.set_ctrl_loss_tmo_secs(*loss);
    if (o_delay->count() > 0) req.set_reconnect_delay_secs(*delay);
    if (o_kato->count() > 0) req.set_keep_alive_tmo_secs(*kato);
    const std::array<std::string, 6>& t = *text;
    req.set_host_traddr(t[0]);
    req.set_host_iface(t[1]);
    req.set_hostnqn(t[2]);
    req.set_tls_key_file(t[3]);
    req.set_dhchap_secret_file(t[4]);
    req.set_dhchap_ctrl_secret_file(t[5]);
    cl.run = [req](const Invocation& ctl) { return Attach(ctl, req); };
  });
}

void AddPathAndControllerCommands(CommandLine& cl) {
  auto head = Value<std::string>(cl);
  auto path = Value<std::string>(cl);
  auto reason = Value<std::string>(cl);
  CLI::App* fail =
      cl.app.add_subcommand("fail-path", "take a path out of selection (maintenance)");
  fail->add_option("HEAD", *head)->required();
  fail->add_option("PATH", *path)->required();
  fail->add_option("REASON", *reason);
  fail->callback([&cl, head, path, reason] {
    v1::FailPathRequest req;
    req.set_name(absl::StrCat(Full("heads/", *head), "/paths/", *path));
    req.set_reason(*reason);
    cl.run = [req](const Invocation& ctl) { return FailPath(ctl, req); };
  });
  CLI::App* reinstate = cl.app.add_subcommand("reinstate-path", "put it back");
  reinstate->add_option("HEAD", *head)->required();
  reinstate->add_option("PATH", *path)->required();
  reinstate->callback([&cl, head, path] {
    v1::ReinstatePathRequest req;
    req.set_name(absl::StrCat(Full("heads/", *head), "/paths/", *path));
    cl.run = [req](const Invocation& ctl) { return ReinstatePath(ctl, req); };
  });

  cl.app.add_subcommand("controllers", "every controller")->callback([&cl] {
    cl.run = [](const Invocation& ctl) { return Controllers(ctl); };
  });
  NameCommand(cl, "controller", "NAME", "controllers/", "one controller", &Controller);
  AddAttachCommand(cl);
  NameCommand(cl, "detach", "CONTROLLER", "controllers/",
              "its paths fail over, then it is let go", &Detach);
  NameCommand(cl, "reset", "CONTROLLER", "controllers/",
              "disable and bring up again; I/O fails over meanwhile", &Reset);
}

void AddAgentCommands(CommandLine& cl) {
  cl.app.add_subcommand("info", "the agent: version, node, backends, your role")
      ->callback([&cl] { cl.run = [](const Invocation& ctl) { return Info(ctl); }; });
  CLI::App* stop = cl.app.add_subcommand(
      "stop", "stop the agent; its block devices stay for the next agent (hand-over)");
  auto remove = Value<bool>(cl);
  auto force = Value<bool>(cl);
  stop->add_flag("--remove", *remove,
                 "remove the block devices instead, never one in use");
  stop->add_flag("--force", *force, "(mounted, open) unless --force");
  stop->callback([&cl, remove, force] {
    v1::StopAgentRequest req;
    req.set_mode(*remove ? v1::STOP_MODE_REMOVE : v1::STOP_MODE_HAND_OVER);
    req.set_force(*force);
    cl.run = [req](const Invocation& ctl) { return Stop(ctl, req); };
  });

  CLI::App* watch =
      cl.app.add_subcommand("watch",
                            "events as they happen; resumes after a dropped connection "
                            "from the last revision seen");
  auto since = Value<uint64_t>(cl);
  auto heads = Value<std::vector<std::string>>(cl);
  auto types = Value<std::vector<std::string>>(cl);
  auto max_events = Value<int>(cl);
  auto incarnation = Value<std::string>(cl);
  watch->add_option("--since", *since, "the events after this revision (no snapshot)");
  // Without it, a --since kept from before the agent restarted would be read in the new
  // run's journal: other events under the same numbers.
  watch->add_option("--incarnation", *incarnation,
                    "the agent run --since belongs to (a response's incarnation); another "
                    "run's agent refuses it and the watch starts from a snapshot");
  watch->add_option("--head", *heads, "only this head's events (repeat for more)")
      ->allow_extra_args(false);
  watch
      ->add_option("--type", *types,
                   "only events of this type, e.g. path-state-changed (repeat for more)")
      ->allow_extra_args(false)
      ->check(Check(
          [](const std::string& s) {
            v1::EventType t;
            return v1::EventType_Parse(Upper(s, "EVENT_TYPE_"), &t);
          },
          "unknown event type", "TYPE"));
  watch->add_option("--max-events", *max_events, "stop after this many events");
  watch->callback([&cl, since, heads, types, max_events, incarnation] {
    v1::WatchEventsRequest req;
    req.set_since_revision(*since);
    req.set_incarnation(*incarnation);
    for (const std::string& h : *heads) req.add_heads(Full("heads/", h));
    for (const std::string& t : *types) {
      v1::EventType e = v1::EVENT_TYPE_UNSPECIFIED;
      v1::EventType_Parse(Upper(t, "EVENT_TYPE_"), &e);
      req.add_types(e);
    }
    cl.run = [req, n = *max_events](const Invocation& ctl) {
      CtlOptions o = ctl.o;
      if (n > 0) o.watch_max_events = n;
      return Watch({ctl.stub, o, ctl.out, ctl.err}, req);
    };
  });
}

// `sim FAULT CONTROLLER ...`: the faults of the simulator
// (umpath.v1alpha.SimulatorControl).
struct SimFaults {
  CommandLine& cl;
  CLI::App* sim;
  std::shared_ptr<std::string> controller = Value<std::string>(cl);

  // A fault on CONTROLLER, with its own arguments after it.
  CLI::App* Add(const char* name, const char* help) {
    CLI::App* f = sim->add_subcommand(name, help);
    f->add_option("CONTROLLER", *controller)->required();
    return f;
  }
  // What a fault's callback ends with.
  std::function<void(v1alpha::InjectFaultRequest)> Inject() {
    return [&cl = cl, controller = controller](v1alpha::InjectFaultRequest req) {
      req.set_controller(*controller);
      cl.run = [req](const Invocation& ctl) { return SimInject(ctl, req); };
    };
  }
};

void AddSimError(SimFaults& faults) {
  auto code = Value<std::string>(faults.cl);
  auto rest = Value<std::vector<std::string>>(faults.cl);
  CLI::App* error = faults.Add("error",
                               "the next COUNT commands (0: all, until cleared) fail "
                               "with status CODE (SCT and SC, e.g. 0x302)");
  error->add_option("CODE", *code)->required();
  error->add_option("COUNT NSID dnr", *rest, "[COUNT [NSID]] [dnr]");
  error->callback([code, rest, inject = faults.Inject()] {
    v1alpha::InjectFaultRequest req;
    uint32_t sct_sc = 0;
    if (!absl::SimpleHexAtoi(*code, &sct_sc) || sct_sc > 0x7ff) {
      throw CLI::ValidationError("CODE", "SCT and SC in hex, e.g. 0x302");
    }
    v1alpha::PathError* pe = req.mutable_path_error();
    pe->set_sct(sct_sc >> 8);
    pe->set_sc(sct_sc & 0xff);
    size_t numbers = 0;
    for (const std::string& a : *rest) {
      uint32_t n;
      if (a == "dnr") {
        pe->set_dnr(true);
      } else if (absl::SimpleAtoi(a, &n) && numbers < 2) {
        (numbers++ == 0 ? pe->set_count(n) : pe->set_nsid(n));
      } else {
        throw CLI::ValidationError("sim error",
                                   "\"" + a + "\" is not a count, an nsid or dnr");
      }
    }
    inject(req);
  });
}

void AddSimAna(SimFaults& faults) {
  auto group = Value<uint32_t>(faults.cl);
  auto state = Value<std::string>(faults.cl);
  CLI::App* ana = faults.Add("ana", "the ANA state of a group");
  ana->add_option("GROUP", *group)->required();
  ana->add_option("STATE", *state,
                  "optimized, non-optimized, inaccessible, persistent-loss or change")
      ->required()
      ->check(Check(
          [](const std::string& s) {
            v1::AnaState st;
            return ParseAnaState(s, &st);
          },
          "unknown ANA state", "STATE"));
  ana->callback([group, state, inject = faults.Inject()] {
    v1alpha::InjectFaultRequest req;
    req.mutable_ana_change()->set_group(*group);
    v1::AnaState st = v1::ANA_STATE_UNSPECIFIED;
    ParseAnaState(*state, &st);
    req.mutable_ana_change()->set_state(st);
    inject(req);
  });
}

// The faults that are the controller and at most one number.
void AddSimSimpleFaults(SimFaults& faults) {
  using Set = void (*)(v1alpha::InjectFaultRequest&, uint32_t);
  struct Simple {
    const char* name;
    const char* number;  // or none
    const char* help;
    Set set;
  };
  static constexpr Simple kSimple[] = {
      {"lose", nullptr, "the controller is gone (hotplug)",
       [](auto& r, uint32_t) { r.mutable_loss(); }},
      {"return", nullptr, "it comes back",
       [](auto& r, uint32_t) { r.mutable_controller_return(); }},
      {"lose-ns", "NSID", "one path goes (the namespace is detached)",
       [](auto& r, uint32_t n) { r.mutable_namespace_loss()->set_nsid(n); }},
      {"return-ns", "NSID", "it comes back",
       [](auto& r, uint32_t n) { r.mutable_namespace_return()->set_nsid(n); }},
      {"stick", nullptr, "commands never complete (until cleared)",
       [](auto& r, uint32_t) { r.mutable_stuck(); }},
      {"latency", "MICROSECONDS", "each command takes this long",
       [](auto& r, uint32_t n) { r.mutable_latency()->set_latency_us(n); }},
  };
  auto number = Value<uint32_t>(faults.cl);
  for (const Simple& s : kSimple) {
    CLI::App* f = faults.Add(s.name, s.help);
    if (s.number != nullptr) f->add_option(s.number, *number)->required();
    f->callback([number, inject = faults.Inject(), set = s.set] {
      v1alpha::InjectFaultRequest req;
      set(req, *number);
      inject(req);
    });
  }
}

void AddSimCommands(CommandLine& cl) {
  CLI::App* sim = cl.app.add_subcommand(
      "sim", "the simulated controllers (umpathd --sim) and their faults");
  sim->require_subcommand(0, 1);
  sim->callback([&cl] {
    if (!cl.run) cl.run = [](const Invocation& ctl) { return SimList(ctl); };
  });
  SimFaults faults{cl, sim};
  AddSimError(faults);
  AddSimAna(faults);
  AddSimSimpleFaults(faults);
  faults.Add("clear", "ends its errors and stuck commands")
      ->callback([&cl, controller = faults.controller] {
        v1alpha::ClearFaultsRequest req;
        req.set_controller(*controller);
        cl.run = [req](const Invocation& ctl) { return SimClear(ctl, req); };
      });
}

std::vector<CLI::App*> Subcommands(CLI::App* app) {
  return app->get_subcommands([](CLI::App*) { return true; });
}

std::string Flags(CLI::App* app, bool help = true) {
  std::vector<std::string> names;
  for (const CLI::Option* o : app->get_options()) {
    if (!help && o == app->get_help_ptr()) continue;
    for (const std::string& l : o->get_lnames()) names.push_back("--" + l);
    for (const std::string& s : o->get_snames()) names.push_back("-" + s);
  }
  return absl::StrJoin(names, " ");
}

// A bash completion function from the command tree: the command path so far picks the
// words (subcommands) and flags (its own and the global ones) offered.
std::string BashCompletion(CLI::App& app) {
  std::string pairs, cases;
  auto add = [&](const std::string& path, CLI::App* cmd) {
    std::vector<std::string> words;
    for (CLI::App* sub : Subcommands(cmd)) {
      words.push_back(sub->get_name());
      absl::StrAppend(&pairs, pairs.empty() ? "" : "|", "\"", path, "/", sub->get_name(),
                      "\"");
    }
    // help COMMAND: the commands.
    if (path == "help") {
      for (CLI::App* sub : Subcommands(&app)) words.push_back(sub->get_name());
    }
    absl::StrAppend(&cases, "    \"", path, "\") words=\"", absl::StrJoin(words, " "),
                    "\" flags=\"", Flags(cmd),
                    // The global flags are taken after a command too.
                    path.empty() ? "" : " " + Flags(&app, /*help=*/false), "\" ;;\n");
  };
  add("", &app);
  for (CLI::App* sub : Subcommands(&app)) {
    add(sub->get_name(), sub);
    for (CLI::App* subsub : Subcommands(sub))
      add(sub->get_name() + " " + subsub->get_name(), subsub);
  }
  return absl::StrCat(
      R"(# bash completion for umpathctl: source <(umpathctl completion bash)
_umpathctl() {
  local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}" path="" w i words flags
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="${COMP_WORDS[i]}"
    case "$path/$w" in
      )",
      pairs, R"() path="${path:+$path }$w" ;;
    esac
  done
  case "$prev" in
    -o|--output|--o) COMPREPLY=($(compgen -W ")",
      absl::StrJoin(kFormats, " "), R"(" -- "$cur")); return ;;
  esac
  case "$path" in
)",
      cases, R"(  esac
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
  else
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
  fi
}
complete -F _umpathctl umpathctl
)");
}

void AddMetaCommands(CommandLine& cl, std::ostream& out) {
  auto command = Value<std::vector<std::string>>(cl);
  CLI::App* help =
      cl.app.add_subcommand("help", "this help, or a command's (help COMMAND)");
  help->add_option("COMMAND", *command);
  help->callback([&cl, command, &out] {
    cl.needs_agent = false;
    // The formatter itself: App::help would describe the command running, `help`.
    CLI::App* of = &cl.app;
    std::string name = "umpathctl";
    for (const std::string& word : *command) {
      of = of->get_subcommand(word);  // throws for one that is not
      absl::StrAppend(&name, " ", word);
    }
    out << of->get_formatter()->make_help(of, name, CLI::AppFormatMode::Normal);
    cl.run = [](const Invocation&) { return 0; };
  });
  auto shell = Value<std::string>(cl);
  CLI::App* completion = cl.app.add_subcommand(
      "completion", "a shell completion script: source <(umpathctl completion bash)");
  completion->add_option("SHELL", *shell)->required()->check(CLI::IsMember({"bash"}));
  completion->callback([&cl, &out] {
    cl.needs_agent = false;
    out << BashCompletion(cl.app);
    cl.run = [](const Invocation&) { return 0; };
  });
}

std::unique_ptr<CommandLine> Build(std::ostream& out) {
  auto cl = std::make_unique<CommandLine>();
  CLI::App& app = cl->app;
  app.footer(kFooter);
  // The global flags are taken after the command too.
  app.fallthrough();
  app.require_subcommand(1);
  AddGlobalFlags(*cl);
  AddAgentCommands(*cl);
  AddHeadCommands(*cl);
  AddPathAndControllerCommands(*cl);
  AddSettingCommands(*cl);
  AddKeptSettingsCommands(*cl);
  AddSimCommands(*cl);
  AddMetaCommands(*cl, out);
  return cl;
}

Format ParseFormat(const std::string& o) {
  const auto at = std::find(std::begin(kFormats), std::end(kFormats), o);
  return static_cast<Format>(at == std::end(kFormats) ? 0 : at - std::begin(kFormats));
}

// "umpathctl: stop: unexpected argument --now", and where to read more.
int UsageError(CLI::App& app, const CLI::Error& e, std::ostream& err) {
  std::string command;
  for (CLI::App* at = &app; !at->get_subcommands().empty();) {
    at = at->get_subcommands().front();
    absl::StrAppend(&command, command.empty() ? "" : " ", at->get_name());
  }
  const std::vector<std::string> extra = app.remaining(/*recurse=*/true);
  std::string why = e.what();
  if (command.empty() && extra.empty() &&
      dynamic_cast<const CLI::RequiredError*>(&e) != nullptr) {
    why = "no command";
  } else if (command.empty() && !extra.empty()) {
    why = absl::StrCat(extra.front()[0] == '-' ? "unknown flag " : "unknown command ",
                       extra.front());
  } else if (dynamic_cast<const CLI::ExtrasError*>(&e) != nullptr && !extra.empty()) {
    why = absl::StrCat("unexpected argument", extra.size() > 1 ? "s " : " ",
                       absl::StrJoin(extra, " "));
  }
  err << "umpathctl: " << command << (command.empty() ? "" : ": ") << why
      << "\n(umpathctl " << command << (command.empty() ? "" : " ") << "--help lists "
      << (command.empty() ? "the commands and flags" : "its arguments and flags")
      << ")\n";
  return 2;
}

// `umpathctl [FLAGS] -- COMMAND ...` as `umpathctl [FLAGS] COMMAND ...`: the form that
// ended umpathctl's own flags when absl parsed them apart from the command's. A `--`
// after the command keeps its meaning (what follows are arguments, not flags).
std::vector<std::string> WithoutOldSeparator(CLI::App& app,
                                             std::vector<std::string> argv) {
  for (size_t i = 1; i < argv.size(); ++i) {
    const std::string& w = argv[i];
    if (w == "--") {
      argv.erase(argv.begin() + static_cast<std::ptrdiff_t>(i));
      break;
    }
    if (w.empty() || w[0] != '-') break;  // the command
    const CLI::Option* flag = app.get_option_no_throw(w);
    if (flag != nullptr && flag->get_type_size() != 0 &&
        w.find('=') == std::string::npos) {
      ++i;  // its value (--socket PATH, -o json)
    }
  }
  return argv;
}

// Parses `argv` (argv[0] the program); runs the command on `stub`, or on a connection
// `connect` makes when stub is null.
int Execute(const std::vector<std::string>& argv,
            v1::MultipathControl::StubInterface* stub, const Connector* connect,
            CtlOptions o, std::ostream& out, std::ostream& err) {
  std::unique_ptr<CommandLine> cl = Build(out);
  const std::vector<std::string> args = WithoutOldSeparator(cl->app, argv);
  std::vector<const char*> words;
  for (const std::string& w : args) words.push_back(w.c_str());
  try {
    cl->app.parse(static_cast<int>(words.size()), words.data());
  } catch (const CLI::CallForHelp&) {
    out << cl->app.help();
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    out << cl->app.help("", CLI::AppFormatMode::All);
    return 0;
  } catch (const CLI::Error& e) {
    return UsageError(cl->app, e, err);
  }
  if (!cl->needs_agent) return cl->run(Invocation{nullptr, o, out, err});
  if (cl->app.count("--output") > 0) o.format = ParseFormat(cl->output);
  o.no_headers = o.no_headers || cl->no_headers;
  if (cl->timeout > absl::ZeroDuration()) o.timeout = cl->timeout;
  Connection connection;
  if (stub == nullptr) {
    absl::StatusOr<Connection> made = (*connect)(cl->connect);
    if (!made.ok()) {
      err << "umpathctl: " << made.status().message() << "\n";
      return 2;
    }
    connection = std::move(*made);
    stub = connection.stub.get();
    o.simulator = connection.simulator.get();
    o.reconnect = connection.reconnect;
  }
  if (cl->app.got_subcommand("sim") && o.simulator == nullptr) {
    err << "umpathctl: sim: no simulator connection\n";
    return 2;
  }
  return cl->run(Invocation{stub, o, out, err});
}

}  // namespace

int RunCommand(v1::MultipathControl::StubInterface* stub,
               const std::vector<std::string>& args, const CtlOptions& options,
               std::ostream& out, std::ostream& err) {
  std::vector<std::string> argv = {"umpathctl"};
  argv.insert(argv.end(), args.begin(), args.end());
  return Execute(argv, stub, nullptr, options, out, err);
}

int RunCommandLine(const std::vector<std::string>& argv, const Connector& connect,
                   std::ostream& out, std::ostream& err) {
  return Execute(argv, nullptr, &connect, CtlOptions(), out, err);
}

}  // namespace umpath::client
