#pragma once

// Per-head settings made through the API, kept across restarts.

#include <optional>
#include <string>

#include "absl/container/btree_map.h"
#include "absl/status/statusor.h"
#include "agent/base/mutex.h"
#include "agent/core/info.h"
#include "server/control_service.h"

namespace umpath::server {

// A small text file, keyed by head name (which is derived from the namespace identity):
//   # umpath head settings v1
//   nguid-ab000000000000000000000000000001 delayed_removal_secs=30 io_policy=round-robin
//   uuid-... io_fail_timeout_secs=10 export=true      (kept before the head appeared)
// Every change rewrites it atomically: a temporary file, fsync, rename, fsync of the
// directory, so a crash leaves the old file or the new one, never a mix.
//
// Threading: Lookup (from the core, under its lock) and OnHeadSettingsChanged (gRPC
// threads) may run concurrently. Saves are one at a time under save_mu_, which is held
// while the head is read from the core and the file written (so the last save holds the
// newest settings); mu_ guards the map only, briefly. Lock order: save_mu_, the core's
// lock, mu_ (Lookup takes mu_ under the core's lock: never the other way round).
class SettingsStore final : public SettingsListener {
 public:
  // Loads `path` (missing: empty). A file that does not parse is renamed to
  // `path.corrupt-<unix seconds>`, described by problem(), and the store starts empty:
  // a bad file never stops the agent. Errors only for what makes saving impossible.
  static absl::StatusOr<std::unique_ptr<SettingsStore>> Open(std::string path);

  std::optional<HeadSettings> Lookup(absl::string_view head) const;
  // The settings stay in memory when the save fails (the head runs with them): the next
  // save that succeeds writes them.
  absl::Status OnHeadSettingsChanged(absl::FunctionRef<absl::StatusOr<HeadInfo>()> read) override;
  absl::Status Merge(const std::string& head, const HeadSettings& patch) override;
  absl::Status Forget(const std::string& head) override;
  std::vector<std::pair<std::string, HeadSettings>> Kept() const override;

  // What was wrong with the file at Open, empty if nothing.
  const std::string& problem() const { return problem_; }
  // The last save's outcome.
  absl::Status last_save() const;
  size_t size() const;

 private:
  explicit SettingsStore(std::string path) : path_(std::move(path)) {}
  std::string TextLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes the file as the map is now (save_mu_ held); the outcome is last_save().
  absl::Status Save() ABSL_EXCLUSIVE_LOCKS_REQUIRED(save_mu_);

  const std::string path_;
  std::string problem_;
  Mutex save_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable Mutex mu_;
  absl::btree_map<std::string, HeadSettings> heads_ ABSL_GUARDED_BY(mu_);
  absl::Status last_save_ ABSL_GUARDED_BY(mu_);
};

}  // namespace umpath::server
