#pragma once

// The calls behind umpathctl's commands and how their answers print; cli.cc turns a
// command line into one of these with its request.

#include <iosfwd>
#include <string>

#include "absl/strings/string_view.h"
#include "client/ctl.h"

namespace umpath::client {

// What every command is given: one run of umpathctl.
struct Invocation {
  v1::MultipathControl::StubInterface* stub;
  const CtlOptions& o;
  std::ostream& out;
  std::ostream& err;
};

// "heads/" + id unless `name` already starts with the prefix.
std::string Full(absl::string_view prefix, absl::string_view name);
// "no-live-path" as HEAD_FILTER_NO_LIVE_PATH (prefix "HEAD_FILTER_").
std::string Upper(absl::string_view text, absl::string_view prefix);
bool ParsePolicy(absl::string_view text, v1::IoPolicy* out);
bool ParseAnaState(absl::string_view text, v1::AnaState* out);
// Prints "umpathctl: CODE: message"; returns the code.
int Fail(std::ostream& err, const grpc::Status& s);

int Info(const Invocation& ctl);
int Heads(const Invocation& ctl, v1::ListHeadsRequest req);
int Head(const Invocation& ctl, const v1::GetHeadRequest& req);
int Wait(const Invocation& ctl, v1::WaitHeadRequest req);
int Controllers(const Invocation& ctl);
int Controller(const Invocation& ctl, const v1::GetControllerRequest& req);
int Defaults(const Invocation& ctl);
int SetDelayedRemoval(const Invocation& ctl, const v1::SetDelayedRemovalRequest& req);
int SetDefaultDelayedRemoval(const Invocation& ctl,
                             const v1::SetDefaultDelayedRemovalRequest& req);
int SetIoFailTimeout(const Invocation& ctl, const v1::SetIoFailTimeoutRequest& req);
int SetDefaultIoFailTimeout(const Invocation& ctl,
                            const v1::SetDefaultIoFailTimeoutRequest& req);
int SetPolicy(const Invocation& ctl, const v1::SetIoPolicyRequest& req);
int SetDefaultPolicy(const Invocation& ctl, const v1::SetDefaultIoPolicyRequest& req);
// Settings kept by head id, whether or not the head exists (settings, settings set/delete).
int ListSettings(const Invocation& ctl);
int UpdateSettings(const Invocation& ctl, const v1::UpdateHeadSettingsRequest& req);
int DeleteSettings(const Invocation& ctl, const v1::DeleteHeadSettingsRequest& req);
int FailPath(const Invocation& ctl, const v1::FailPathRequest& req);
int ReinstatePath(const Invocation& ctl, const v1::ReinstatePathRequest& req);
int Attach(const Invocation& ctl, const v1::AttachControllerRequest& req);
int Detach(const Invocation& ctl, const v1::DetachControllerRequest& req);
int Reset(const Invocation& ctl, const v1::ResetControllerRequest& req);
int Export(const Invocation& ctl, const v1::ExportHeadRequest& req);
int Unexport(const Invocation& ctl, const v1::UnexportHeadRequest& req);
int Stop(const Invocation& ctl, const v1::StopAgentRequest& req);
// Events as they come; after a dropped connection, resumes from the last revision seen.
int Watch(const Invocation& ctl, v1::WatchEventsRequest req);
int SimList(const Invocation& ctl);
int SimInject(const Invocation& ctl, const v1alpha::InjectFaultRequest& req);
int SimClear(const Invocation& ctl, const v1alpha::ClearFaultsRequest& req);

}  // namespace umpath::client
