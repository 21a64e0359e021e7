#pragma once

// Controllers attached through the API, kept across restarts: the next agent attaches
// them again (a volume's fabrics paths that a CSI sidecar connected, a PCIe function an
// administrator attached), so a crash or an upgrade does not lose them.

#include <memory>
#include <string>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/status/statusor.h"
#include "agent/base/mutex.h"
#include "server/control_service.h"

namespace umpath::server {

// A small text file, one controller a line, its name first:
//   # umpath attached controllers v1
//   0000:01:00.0 transport=pcie address=0000:01:00.0
//   nvme4 transport=tcp address=10.0.0.2 service=4420 subsystem_nqn=nqn.2014-08.org.example:vol7
//   nvme5 transport=tcp address=10.0.1.2 service=4420 subsystem_nqn=... host_traddr=10.0.1.1
//     ctrl_loss_tmo_secs=-1 dhchap_secret_file=/etc/umpath/keys/vol7 (one line)
// with the fabrics options an attach gave (key files by path: a key is never written).
// rewritten atomically on every change. A file that does not parse is set aside
// (`path.corrupt-<unix seconds>`) and the store starts empty, as SettingsStore does.
//
// Threading: any thread; every method takes mu_.
class AttachmentStore {
 public:
  struct Entry {
    std::string name;
    ControllerOps::AttachSpec spec;
  };
  static absl::StatusOr<std::unique_ptr<AttachmentStore>> Open(std::string path);

  std::vector<Entry> List() const;
  bool Has(const std::string& name) const;
  // INVALID_ARGUMENT for what a line cannot hold (blanks, '='); nothing changes then.
  absl::Status Remember(const std::string& name, const ControllerOps::AttachSpec& spec);
  // OK when it was not remembered.
  absl::Status Forget(const std::string& name);

  const std::string& problem() const { return problem_; }

 private:
  explicit AttachmentStore(std::string path) : path_(std::move(path)) {}
  absl::Status SaveLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  std::string problem_;
  mutable Mutex mu_;
  absl::btree_map<std::string, ControllerOps::AttachSpec> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace umpath::server
