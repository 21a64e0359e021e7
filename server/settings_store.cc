#include "server/settings_store.h"


#include <cerrno>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/base/files.h"
#include "agent/core/types.h"
#include "server/line_file.h"

namespace umpath::server {

namespace {

constexpr absl::string_view kHeader = "# umpath head settings v1";

// One line: "<head> key=value ...". Unknown keys are errors: the file is ours.
absl::Status ParseLine(absl::string_view line, std::string* head, HeadSettings* out) {
  std::vector<absl::string_view> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
  if (fields.empty()) return absl::InvalidArgumentError("empty line");
  *head = std::string(fields[0]);
  for (size_t i = 1; i < fields.size(); ++i) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(fields[i], '=');
    if (kv.first == "delayed_removal_secs") {
      absl::StatusOr<uint32_t> v = ParseDelayedRemovalSecs(kv.second);
      if (!v.ok()) return v.status();
      out->delayed_removal_secs = *v;
    } else if (kv.first == "io_fail_timeout_secs") {
      absl::StatusOr<uint32_t> v = ParseIoFailTimeoutSecs(kv.second);
      if (!v.ok()) return v.status();
      out->io_fail_timeout_secs = *v;
    } else if (kv.first == "io_policy") {
      absl::StatusOr<IoPolicy> p = ParseIoPolicy(kv.second);
      if (!p.ok()) return p.status();
      out->policy = *p;
    } else if (kv.first == "export" && (kv.second == "true" || kv.second == "false")) {
      out->export_wanted = kv.second == "true";
    } else if (kv.first == "volume" && !kv.second.empty()) {
      if (absl::Status v = ValidateVolume(kv.second); !v.ok()) return v;
      out->volume = std::string(kv.second);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown field \"", fields[i], "\""));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<SettingsStore>> SettingsStore::Open(std::string path) {
  std::unique_ptr<SettingsStore> s(new SettingsStore(std::move(path)));
  if (absl::Status d = MakeParentDirectory(s->path_); !d.ok()) return d;
  absl::btree_map<std::string, HeadSettings> heads;
  absl::Status loaded = ReadLineFile(s->path_, kHeader, [&heads](absl::string_view line) {
    std::string head;
    HeadSettings settings;
    absl::Status p = ParseLine(line, &head, &settings);
    if (p.ok()) heads[head] = settings;
    return p;
  });
  if (!loaded.ok()) {
    s->problem_ = SetAside(s->path_, loaded, "no saved settings");
    heads.clear();
  }
  MutexLock lock(&s->mu_);
  s->heads_ = std::move(heads);
  return s;
}

std::optional<HeadSettings> SettingsStore::Lookup(absl::string_view head) const {
  MutexLock lock(&mu_);
  auto it = heads_.find(head);
  if (it == heads_.end()) return std::nullopt;
  return it->second;
}

absl::Status SettingsStore::OnHeadSettingsChanged(
    absl::FunctionRef<absl::StatusOr<HeadInfo>()> read) {
  MutexLock saving(&save_mu_);
  absl::StatusOr<HeadInfo> head = read();
  if (!head.ok()) return absl::OkStatus();  // gone meanwhile: nothing of it to keep
  {
    MutexLock lock(&mu_);
    HeadSettings& kept = heads_[head->name];  // an export wish stays
    kept.policy = head->policy;
    kept.delayed_removal_secs = head->delayed_removal_secs;
    kept.io_fail_timeout_secs = head->io_fail_timeout_secs;
  }
  return Save();
}

absl::Status SettingsStore::Save() {
  std::string text;
  {
    MutexLock lock(&mu_);
    text = TextLocked();
  }
  absl::Status saved = WriteFileAtomically(path_, text);
  MutexLock lock(&mu_);
  last_save_ = saved;
  return saved;
}

absl::Status SettingsStore::Merge(const std::string& head, const HeadSettings& patch) {
  MutexLock saving(&save_mu_);
  {
    MutexLock lock(&mu_);
    HeadSettings& kept = heads_[head];
    if (patch.policy) kept.policy = patch.policy;
    if (patch.delayed_removal_secs) kept.delayed_removal_secs = patch.delayed_removal_secs;
    if (patch.io_fail_timeout_secs) kept.io_fail_timeout_secs = patch.io_fail_timeout_secs;
    if (patch.export_wanted) kept.export_wanted = patch.export_wanted;
    // "" removes the label: kept as absent, not as an empty value.
    if (patch.volume) kept.volume = patch.volume->empty() ? std::nullopt : patch.volume;
  }
  return Save();
}

absl::Status SettingsStore::Forget(const std::string& head) {
  MutexLock saving(&save_mu_);
  {
    MutexLock lock(&mu_);
    if (heads_.erase(head) == 0) return absl::OkStatus();
  }
  return Save();
}

std::vector<std::pair<std::string, HeadSettings>> SettingsStore::Kept() const {
  MutexLock lock(&mu_);
  return {heads_.begin(), heads_.end()};
}

std::string SettingsStore::TextLocked() const {
  std::string text = absl::StrCat(kHeader, "\n");
  for (const auto& [name, s] : heads_) {
    absl::StrAppend(&text, name);
    if (s.delayed_removal_secs) absl::StrAppend(&text, " delayed_removal_secs=", *s.delayed_removal_secs);
    if (s.io_fail_timeout_secs) absl::StrAppend(&text, " io_fail_timeout_secs=", *s.io_fail_timeout_secs);
    if (s.policy) absl::StrAppend(&text, " io_policy=", IoPolicyName(*s.policy));
    if (s.export_wanted) absl::StrAppend(&text, " export=", *s.export_wanted ? "true" : "false");
    if (s.volume) absl::StrAppend(&text, " volume=", *s.volume);
    absl::StrAppend(&text, "\n");
  }
  return text;
}

absl::Status SettingsStore::last_save() const {
  MutexLock lock(&mu_);
  return last_save_;
}

size_t SettingsStore::size() const {
  MutexLock lock(&mu_);
  return heads_.size();
}

}  // namespace umpath::server
