// The real umpathctl binary with real command lines: against the real server on a real
// socket, and (for the calls today's server does not answer yet) against a fake
// MultipathControl service at the stub seam that records what it was asked.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/base/mutex.h"
#include "agent/base/status_matchers.h"
#include "client/output.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/control_server.h"
#include "server/settings_store.h"
#include "server/testing/test_topology.h"

extern char** environ;

namespace umpath::client {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

struct Ran {
  int exit = -1;
  std::string out, err;
};

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs `program args...` with stdout and stderr to files in `dir`; waits for its exit.
Ran Spawn(const std::string& dir, const std::string& program,
          const std::vector<std::string>& args) {
  const std::string out = dir + "/stdout", err = dir + "/stderr";
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_addopen(&files, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0600);
  posix_spawn_file_actions_addopen(&files, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0600);
  posix_spawn_file_actions_addopen(&files, 0, "/dev/null", O_RDONLY, 0);
  std::vector<char*> argv = {const_cast<char*>(program.c_str())};
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  Ran r;
  pid_t pid;
  const int e = posix_spawn(&pid, program.c_str(), &files, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&files);
  if (e != 0) {
    r.err = absl::StrCat("posix_spawn: ", strerror(e));
    return r;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.exit = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = Slurp(out);
  r.err = Slurp(err);
  return r;
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/umpath-cli-test-XXXXXX";
    if (mkdtemp(tmpl) != nullptr) path_ = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// umpathctl against the real server over a core with two heads on two controllers.
class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    MultipathOptions mo;
    mo.incarnation = "00000000000000aa";
    ASSERT_OK_AND_ASSIGN(mp_, Multipath::Create(mo));
    ASSERT_OK(umpath::testing::AddTestTopology(mp_.get(), 2, 2));
    server::ServerOptions o;
    o.socket_path = dir_.path() + "/umpathd.sock";
    o.access.admin_uids = {getuid()};
    ASSERT_OK_AND_ASSIGN(store_, server::SettingsStore::Open(dir_.path() + "/settings"));
    ASSERT_OK_AND_ASSIGN(server_, server::ControlServer::Create(mp_.get(), o, store_.get()));
  }
  void TearDown() override {
    server_.reset();
    mp_.reset();
  }

  // umpathctl ARGS... with --socket last, after the command (a global flag goes
  // anywhere).
  Ran Ctl(std::vector<std::string> args) {
    args.push_back("--socket=" + server_->socket_path());
    return Spawn(dir_.path(), UMPATHCTL_PATH, args);
  }

  TempDir dir_;
  std::unique_ptr<Multipath> mp_;
  std::unique_ptr<server::SettingsStore> store_;
  std::unique_ptr<server::ControlServer> server_;
  const std::string head_ = "nguid-ab000000000000000000000000000001";
  const std::string other_ = "nguid-ab000000000000000000000000000002";
};

// The case of issue 19: `watch --since=N --head=X --type=Y` parses (absl refused the
// command's flags) and the agent filters by it: of a policy change of the head, a
// delayed-removal change of the other head and one of the head, the first event printed
// is the last.
TEST_F(CliTest, WatchSinceHeadAndTypeParseAndFilter) {
  const uint64_t from = mp_->journal().current_revision();
  ASSERT_OK(mp_->SetPolicy(head_, "round-robin"));
  ASSERT_OK(mp_->SetDelayedRemoval(other_, 7));
  ASSERT_OK(mp_->SetDelayedRemoval(head_, 9));
  Ran r = Ctl({"watch", absl::StrCat("--since=", from), "--head=" + head_,
               "--type=delayed-removal-changed", "--max-events", "1"});
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("delayed-removal-changed head=" + head_ + " 0 -> 9"));
  EXPECT_THAT(r.out, Not(HasSubstr("policy")));
  EXPECT_THAT(r.out, Not(HasSubstr(other_)));
  // And with the global flags before the command, as scripts wrote it.
  r = Spawn(dir_.path(), UMPATHCTL_PATH,
            {"--socket", server_->socket_path(), "-o", "json", "watch",
             absl::StrCat("--since=", from), "--type=policy-changed", "--max-events=1"});
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"type\": \"EVENT_TYPE_POLICY_CHANGED\""));
}

// A CSI sidecar's first call: settings for the volume's head before its first path.
TEST_F(CliTest, SettingsAreKeptForAHeadNotThereYetListedAndForgotten) {
  const std::string later = "uuid-1b4e28ba-2fa1-11d2-883f-0016d3cca427";
  Ran r = Ctl({"settings", "set", later, "--delayed-removal=30", "--policy=round-robin"});
  EXPECT_EQ(r.exit, 5) << "NOT_FOUND without --allow-missing: " << r.err;
  EXPECT_THAT(r.err, HasSubstr("allow_missing"));
  r = Ctl({"settings", "set", later, "--delayed-removal=30", "--policy=round-robin", "--allow-missing"});
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("DELAYED_REMOVAL"));
  EXPECT_THAT(r.out, HasSubstr("round-robin"));
  r = Ctl({"settings", "set", head_, "--io-fail-timeout=5", "--export=false"});
  ASSERT_EQ(r.exit, 0) << r.err;
  ASSERT_OK_AND_ASSIGN(HeadInfo h, mp_->GetHead(head_));
  EXPECT_EQ(h.io_fail_timeout_secs, 5u) << "applied to the head that exists";
  r = Ctl({"settings", "-o", "json"});
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"delayed_removal_secs\": 30"));
  EXPECT_THAT(r.out, HasSubstr("\"name\": \"heads/" + later + "/settings\""));
  EXPECT_EQ(Ctl({"settings", "set", later, "--delayed-removal=-1", "--allow-missing"}).exit, 2);
  EXPECT_EQ(Ctl({"settings", "set", later, "--export=maybe", "--allow-missing"}).exit, 2);
  r = Ctl({"settings", "set", later, "--allow-missing"});
  EXPECT_EQ(r.exit, 3) << "nothing to update: " << r.err;
  ASSERT_EQ(Ctl({"settings", "delete", later}).exit, 0);
  EXPECT_EQ(Ctl({"settings", "delete", later}).exit, 0) << "forgetting what is not kept is OK";
  r = Ctl({"settings", "--no-headers"});
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_THAT(r.out, Not(HasSubstr(later)));
  EXPECT_THAT(r.out, HasSubstr(head_));
}

// Issue 20: the head's volume label, kept and applied, shown by `head` and `settings`.
TEST_F(CliTest, SettingsSetVolumeLabelsTheHead) {
  Ran r = Ctl({"settings", "set", head_, "--volume=pv-123"});
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("VOLUME"));
  EXPECT_THAT(r.out, HasSubstr("pv-123"));
  ASSERT_OK_AND_ASSIGN(HeadInfo h, mp_->GetHead(head_));
  EXPECT_EQ(h.volume, "pv-123");
  r = Ctl({"head", head_});
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("volume pv-123"));
  r = Ctl({"settings", "set", head_, "--volume=pv 123"});
  EXPECT_EQ(r.exit, 3) << "INVALID_ARGUMENT: " << r.err;
  EXPECT_THAT(r.err, HasSubstr("volume"));
  ASSERT_OK_AND_ASSIGN(h, mp_->GetHead(head_));
  EXPECT_EQ(h.volume, "pv-123") << "a refused value changes nothing";
  r = Ctl({"settings", "set", head_, "--no-volume"});
  ASSERT_EQ(r.exit, 0) << r.err;
  ASSERT_OK_AND_ASSIGN(h, mp_->GetHead(head_));
  EXPECT_EQ(h.volume, "") << "\"\" removes it";
}

// Issue 20 item 7 (the event relay resumes with what it kept): a resume point names the
// agent run it belongs to. This run's is served from there; another run's is refused
// (OUT_OF_RANGE) and the watch starts again from a snapshot, rather than reading the same
// numbers in this run's journal.
TEST_F(CliTest, WatchSinceWithItsIncarnationResumesAndAnotherStartsFromASnapshot) {
  Ran r = Ctl({"info", "-o", "json"});
  ASSERT_EQ(r.exit, 0) << r.err;
  v1::GetAgentInfoResponse got;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &got).ok()) << r.out;
  const v1::AgentInfo& info = got.agent_info();
  ASSERT_FALSE(info.incarnation().empty());
  const std::string from = absl::StrCat("--since=", mp_->journal().current_revision());
  ASSERT_OK(mp_->SetDelayedRemoval(head_, 9));
  r = Ctl({"-o", "json", "watch", from, "--incarnation=" + info.incarnation(), "--max-events=1"});
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"type\": \"EVENT_TYPE_DELAYED_REMOVAL_CHANGED\""));
  EXPECT_THAT(r.out, Not(HasSubstr("\"snapshot\"")));
  EXPECT_THAT(r.err, Not(HasSubstr("cannot resume")));

  r = Ctl({"-o", "json", "watch", from, "--incarnation=0123456789abcdef", "--timeout=2s"});
  EXPECT_EQ(r.exit, 4) << "no event after the snapshot: " << r.err;
  EXPECT_THAT(r.err, HasSubstr("cannot resume after revision"));
  EXPECT_THAT(r.out, HasSubstr("\"snapshot\""));
  EXPECT_THAT(r.out, Not(HasSubstr("EVENT_TYPE_DELAYED_REMOVAL_CHANGED")));
}

TEST_F(CliTest, AWatchEndsAtItsTimeoutWithDeadlineExceeded) {
  // No event comes after the current revision.
  Ran r = Ctl({"watch", absl::StrCat("--since=", mp_->journal().current_revision()),
               "--timeout=1s"});
  EXPECT_EQ(r.exit, 4) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("DEADLINE_EXCEEDED"));
  EXPECT_EQ(Ctl({"heads", "--timeout=soon"}).exit, 2);
}

TEST_F(CliTest, OutputFormats) {
  Ran r = Ctl({"head", head_, "-o", "json"});
  ASSERT_EQ(r.exit, 0) << r.err;
  v1::GetHeadResponse parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &parsed).ok()) << r.out;
  EXPECT_EQ(parsed.head().name(), "heads/" + head_);

  r = Ctl({"head", head_, "-o", "yaml"});
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("---\nhead:\n"));
  EXPECT_THAT(r.out, HasSubstr("\n  name: heads/" + head_ + "\n"));
  EXPECT_THAT(r.out, HasSubstr("\n  paths:\n  - "));
  EXPECT_THAT(r.out, HasSubstr("\n  io_policy: IO_POLICY_NUMA\n"));
  EXPECT_THAT(r.out,
              HasSubstr("\n  uid: \"1\"\n"));  // int64 is a string in JSON: so here
  EXPECT_THAT(r.out, HasSubstr("\n  export_device: \"\"\n"));

  r = Ctl({"-o", "wide", "heads"});
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_THAT(r.out, ContainsRegex("^HEAD .*EXPORT +UID +NGUID +UUID +IO_FAIL_TIMEOUT"));
  EXPECT_THAT(r.out, ContainsRegex(head_ + " .* ab000000000000000000000000000001 "));

  r = Ctl({"controllers", "--output=wide"});
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_THAT(
      r.out,
      ContainsRegex("^CONTROLLER .* NUMA +ANA +CQT_MS +FENCED_IOS +STRAY_COMPLETIONS\n"));

  r = Ctl({"heads", "--no-headers"});
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith(head_ + " "));
  EXPECT_THAT(r.out, Not(HasSubstr("HEAD")));
  EXPECT_EQ(Ctl({"heads", "-o", "xml"}).exit, 2);
}

// -o yaml is the document -o json is: js-yaml (YAML 1.2, an independent reader) reads
// it as the same value JSON.parse reads from the JSON.
TEST_F(CliTest, YamlReadsAsTheSameDocumentAsJson) {
  for (const std::vector<std::string>& command : std::vector<std::vector<std::string>>{
           {"head", head_}, {"heads"}, {"controllers"}, {"info"}}) {
    std::vector<std::string> words = command;
    words.insert(words.end(), {"-o", "json"});
    Ran json = Ctl(words);
    ASSERT_EQ(json.exit, 0) << json.err;
    words.back() = "yaml";
    Ran yaml = Ctl(words);
    ASSERT_EQ(yaml.exit, 0) << yaml.err;
    std::ofstream(dir_.path() + "/doc.json") << json.out;
    std::ofstream(dir_.path() + "/doc.yaml") << yaml.out;
    Ran node = Spawn(dir_.path(), "/usr/bin/env",
                     {"NODE_PATH=" UMPATH_NODE_MODULES, "node", "-e",
                      "const fs = require('fs'), yaml = require('js-yaml');"
                      "require('assert').deepStrictEqual("
                      "  yaml.load(fs.readFileSync(process.argv[1], 'utf8')),"
                      "  JSON.parse(fs.readFileSync(process.argv[2], 'utf8')));"
                      "console.log('same');",
                      dir_.path() + "/doc.yaml", dir_.path() + "/doc.json"});
    EXPECT_EQ(node.out, "same\n") << command[0] << ": " << node.err << "\n" << yaml.out;
  }
}

TEST_F(CliTest, HelpListsTheCommandsAndTheExitStatus) {
  for (const std::vector<std::string>& words :
       std::vector<std::vector<std::string>>{{"help"}, {"--help"}}) {
    Ran r = Spawn(dir_.path(), UMPATHCTL_PATH, words);
    ASSERT_EQ(r.exit, 0) << r.err;
    for (const char* c :
         {"heads", "wait", "watch", "set-delayed-removal", "sim", "completion"}) {
      EXPECT_THAT(r.out, HasSubstr(c));
    }
    EXPECT_THAT(r.out, HasSubstr("2 for a usage error"));
    EXPECT_THAT(r.out, HasSubstr("4 DEADLINE_EXCEEDED"));
  }
  Ran r = Spawn(dir_.path(), UMPATHCTL_PATH, {"watch", "--help"});
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("--since"));
  EXPECT_THAT(r.out, HasSubstr("--type"));
  r = Spawn(dir_.path(), UMPATHCTL_PATH, {"help", "sim", "error"});
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("CODE"));
}

TEST_F(CliTest, UnknownCommandsAndFlagsAreUsageErrors) {
  Ran r = Ctl({"heads", "--frobnicate"});
  EXPECT_EQ(r.exit, 2);
  EXPECT_THAT(r.err, HasSubstr("--frobnicate"));
  r = Ctl({"frobnicate"});
  EXPECT_EQ(r.exit, 2);
  EXPECT_THAT(r.err, HasSubstr("frobnicate"));
  EXPECT_EQ(Ctl({}).exit, 2);
  EXPECT_EQ(Ctl({"head"}).exit, 2);                  // HEAD is missing
  EXPECT_EQ(Ctl({"head", head_, "extra"}).exit, 2);  // one too many
  EXPECT_EQ(Ctl({"stop", "--now"}).exit, 2);
  EXPECT_EQ(Ctl({"watch", "--type=sideways"}).exit, 2);
  // The old end of umpathctl's own flags is taken still; after the command, what
  // follows `--` is not a flag.
  r = Spawn(dir_.path(), UMPATHCTL_PATH,
            {"--socket", server_->socket_path(), "-o", "json", "--", "head", head_});
  EXPECT_EQ(r.exit, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"name\": \"heads/" + head_ + "\""));
  EXPECT_EQ(Ctl({"watch", "--", "--since=1"}).exit, 2);
  EXPECT_EQ(Ctl({"attach", "tcp", "10.0.0.2", "4420"}).exit, 2);  // SERVICE without NQN
  // A call that fails exits with its gRPC code.
  r = Ctl({"head", "missing"});
  EXPECT_EQ(r.exit, 5);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND"));
}

// attach's fabrics flags become the request's options: checked by the agent before it
// asks a backend (this server has none, so a good request ends at FAILED_PRECONDITION).
TEST_F(CliTest, AttachTakesFabricsOptionsAsFlags) {
  const std::vector<std::string> tcp = {"attach", "tcp", "10.0.0.2", "4420", "nqn.2026-01.io.umpath:tcp"};
  auto with = [&tcp](std::vector<std::string> flags) {
    std::vector<std::string> a = tcp;
    a.insert(a.end(), flags.begin(), flags.end());
    return a;
  };
  Ran r = Ctl(with({"--ctrl-loss-tmo=-1", "--reconnect-delay=3", "--keep-alive-tmo=7", "--host-traddr=10.0.0.1",
                    "--host-iface=eth1", "--hostnqn=nqn.2014-08.org.nvmexpress:uuid:6a5e0d2c-6e1b-4c7e-9d1a-0000000000b2"}));
  EXPECT_EQ(r.exit, 9) << r.err;
  EXPECT_THAT(r.err, HasSubstr("needs the vfio or kernel backend"));
  r = Ctl(with({"--reconnect-delay=0"}));
  EXPECT_EQ(r.exit, 3);
  EXPECT_THAT(r.err, HasSubstr("reconnect_delay_secs 0 is out of range (1..86400 seconds)"));
  r = Ctl(with({"--ctrl-loss-tmo=-5"}));
  EXPECT_EQ(r.exit, 3);
  EXPECT_THAT(r.err, HasSubstr("ctrl_loss_tmo_secs -5 is out of range"));
  r = Ctl(with({"--dhchap-secret-file=keys/vol1"}));
  EXPECT_EQ(r.exit, 3);
  EXPECT_THAT(r.err, HasSubstr("dhchap_secret_file \"keys/vol1\": not an absolute path"));
  r = Ctl({"attach", "pcie", "0000:01:00.0", "--host-traddr=10.0.0.1"});
  EXPECT_EQ(r.exit, 3);
  EXPECT_THAT(r.err, HasSubstr("transport \"pcie\" takes none"));
  EXPECT_EQ(Ctl(with({"--reconnect-delay=-1"})).exit, 2);  // not a number of seconds at all
  EXPECT_THAT(Ctl({"attach", "--help"}).out, HasSubstr("--dhchap-secret-file"));
}

// `source <(umpathctl completion bash)`, then what bash asks on TAB.
TEST_F(CliTest, BashCompletionCompletesCommandsAndTheirFlags) {
  Ran r = Spawn(dir_.path(), UMPATHCTL_PATH, {"completion", "bash"});
  ASSERT_EQ(r.exit, 0) << r.err;
  const std::string script = dir_.path() + "/umpathctl.bash";
  std::ofstream(script) << r.out;
  auto complete = [&](const std::string& words) {
    const std::string cmd =
        absl::StrCat("source ", script, "; COMP_WORDS=(", words,
                     "); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _umpathctl; "
                     "echo \"${COMPREPLY[*]}\"");
    Ran b = Spawn(dir_.path(), "/bin/bash", {"-c", cmd});
    EXPECT_EQ(b.exit, 0) << b.err;
    return std::string(absl::StripTrailingAsciiWhitespace(b.out));
  };
  EXPECT_EQ(complete("umpathctl wat"), "watch");
  EXPECT_EQ(complete("umpathctl watch --si"), "--since");
  EXPECT_EQ(complete("umpathctl -o json watch --he"), "--help --head");
  EXPECT_EQ(complete("umpathctl sim lo"), "lose lose-ns");
  EXPECT_EQ(complete("umpathctl heads --so"),
            "--socket");  // a global flag after the command
  EXPECT_EQ(complete("umpathctl -o y"), "yaml");
  EXPECT_EQ(complete("umpathctl help set-default-p"), "set-default-policy");
}

// What a fake agent was asked, and what it answers.
class RecordingControl final : public v1::MultipathControl::Service {
 public:
  grpc::Status ListHeads(grpc::ServerContext*, const v1::ListHeadsRequest* req,
                         v1::ListHeadsResponse* resp) override {
    MutexLock lock(&mu_);
    list_.push_back(*req);
    // Two pages: the filter has to go with the second request too.
    resp->add_heads()->set_name(req->page_token().empty() ? "heads/a" : "heads/b");
    if (req->page_token().empty()) resp->set_next_page_token("2");
    return grpc::Status::OK;
  }
  grpc::Status WaitHead(grpc::ServerContext* ctx, const v1::WaitHeadRequest* req,
                        v1::WaitHeadResponse* resp) override {
    MutexLock lock(&mu_);
    wait_ = *req;
    wait_deadline_ = ctx->deadline();
    if (req->name() == "heads/late") {
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                          "heads/late is not selectable");
    }
    if (req->condition() != v1::HEAD_CONDITION_GONE) {
      resp->mutable_head()->set_name(req->name().empty() ? "heads/found" : req->name());
    }
    return grpc::Status::OK;
  }

  std::vector<v1::ListHeadsRequest> list() const {
    MutexLock lock(&mu_);
    return list_;
  }
  v1::WaitHeadRequest wait() const {
    MutexLock lock(&mu_);
    return wait_;
  }
  std::chrono::system_clock::time_point wait_deadline() const {
    MutexLock lock(&mu_);
    return wait_deadline_;
  }

 private:
  mutable Mutex mu_;
  std::vector<v1::ListHeadsRequest> list_ ABSL_GUARDED_BY(mu_);
  v1::WaitHeadRequest wait_ ABSL_GUARDED_BY(mu_);
  std::chrono::system_clock::time_point wait_deadline_ ABSL_GUARDED_BY(mu_);
};

class CliSeamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    socket_ = dir_.path() + "/fake.sock";
    grpc::ServerBuilder b;
    b.AddListeningPort("unix:" + socket_, grpc::InsecureServerCredentials());
    b.RegisterService(&service_);
    server_ = b.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override { server_->Shutdown(); }
  Ran Ctl(std::vector<std::string> args) {
    args.insert(args.begin(), "--socket=" + socket_);
    return Spawn(dir_.path(), UMPATHCTL_PATH, args);
  }

  TempDir dir_;
  std::string socket_;
  RecordingControl service_;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(CliSeamTest, HeadsFilterSendsTheExpressionWithEveryPage) {
  Ran r =
      Ctl({"heads", "no-live-path", "--filter=subsystem_nqn = \"nqn.x\" AND nsid = 1"});
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("a "));
  EXPECT_THAT(r.out, HasSubstr("b "));
  const std::vector<v1::ListHeadsRequest> asked = service_.list();
  ASSERT_EQ(asked.size(), 2u);
  for (const v1::ListHeadsRequest& req : asked) {
    EXPECT_EQ(req.filter_expression(), "subsystem_nqn = \"nqn.x\" AND nsid = 1");
    EXPECT_EQ(req.filter(), v1::HEAD_FILTER_NO_LIVE_PATH);
  }
  EXPECT_EQ(asked[1].page_token(), "2");
}

TEST_F(CliSeamTest, WaitSendsTheHeadTheConditionAndTheTimeout) {
  const auto before = std::chrono::system_clock::now();
  Ran r = Ctl({"wait", "nguid-01", "--for=selectable", "--timeout=2m"});
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("head nguid-01"));
  v1::WaitHeadRequest asked = service_.wait();
  EXPECT_EQ(asked.name(), "heads/nguid-01");
  EXPECT_EQ(asked.condition(), v1::HEAD_CONDITION_SELECTABLE);
  EXPECT_EQ(asked.timeout_secs(), 120u);
  EXPECT_TRUE(asked.filter_expression().empty());
  // The call outlives the wait by seconds, so the agent's answer is the one that comes
  // (a slow start of umpathctl only moves the deadline later).
  EXPECT_GT(service_.wait_deadline(), before + std::chrono::seconds(120 + 3));

  r = Ctl({"wait", "--filter=nsid = 1", "--for=exists", "-o", "json"});
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"name\": \"heads/found\""));
  asked = service_.wait();
  EXPECT_EQ(asked.filter_expression(), "nsid = 1");
  EXPECT_TRUE(asked.name().empty());
  EXPECT_EQ(asked.condition(), v1::HEAD_CONDITION_EXISTS);
  EXPECT_EQ(asked.timeout_secs(), 30u);  // the default

  r = Ctl({"wait", "heads/nguid-01", "--for=gone"});
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(service_.wait().name(), "heads/nguid-01");
}

TEST_F(CliSeamTest, AWaitThatEndsFirstExitsWithDeadlineExceeded) {
  Ran r = Ctl({"wait", "late", "--for=selectable", "--timeout=1s"});
  EXPECT_EQ(r.exit, 4);
  EXPECT_THAT(r.err, HasSubstr("DEADLINE_EXCEEDED: heads/late is not selectable"));
  EXPECT_EQ(Ctl({"wait", "--for=selectable"}).exit, 2);  // neither HEAD nor --filter
  EXPECT_EQ(Ctl({"wait", "x", "--filter=nsid = 1", "--for=exists"}).exit, 2);  // both
  EXPECT_EQ(Ctl({"wait", "x", "--for=happy"}).exit, 2);
  EXPECT_EQ(Ctl({"wait", "x"}).exit, 2);  // --for is required
}

// YAML strings that would read as something else are quoted.
TEST(YamlTest, QuotesWhatYamlWouldReadAsAnotherType) {
  google::protobuf::Struct s;
  auto& f = *s.mutable_fields();
  const std::vector<std::pair<std::string, std::string>> table = {
      {"plain", "plain"},
      {"yes", "\"yes\""},
      {"null", "\"null\""},
      {"123", "\"123\""},
      {"1e3", "\"1e3\""},
      {"", "\"\""},
      {"a: b", "\"a: b\""},
      {"- x", "\"- x\""},
      {"#c", "\"#c\""},
      {"x #y", "\"x #y\""},
      {"line\nnext", "\"line\\nnext\""},
      {"say \"hi\": now", "\"say \\\"hi\\\": now\""},
      {"/dev/ublkb0", "/dev/ublkb0"},
      {"nqn.2014-08.org.example:vol1", "nqn.2014-08.org.example:vol1"},
  };
  for (size_t i = 0; i < table.size(); ++i) {
    f[absl::StrCat("k", i)].set_string_value(table[i].first);
  }
  f["count"].set_number_value(42);
  f["b"].set_bool_value(true);
  f["list"].mutable_list_value()->add_values()->set_string_value("on");
  ASSERT_OK_AND_ASSIGN(const std::string yaml, Yaml(s));
  for (size_t i = 0; i < table.size(); ++i) {
    EXPECT_THAT(yaml, HasSubstr(absl::StrCat("\nk", i, ": ", table[i].second, "\n")))
        << table[i].first;
  }
  EXPECT_THAT(yaml, HasSubstr("\ncount: 42\n"));
  EXPECT_THAT(yaml, HasSubstr("\nb: true\n"));
  EXPECT_THAT(yaml, HasSubstr("\nlist:\n- \"on\"\n"));
}

}  // namespace
}  // namespace umpath::client
