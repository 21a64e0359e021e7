#include "server/attachment_store.h"


#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/base/files.h"
#include "server/line_file.h"

namespace umpath::server {

namespace {

constexpr absl::string_view kHeader = "# umpath attached controllers v1";

bool Storable(absl::string_view v) {
  for (char c : v) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '=' || c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

absl::Status ParseLine(absl::string_view line, std::string* name, ControllerOps::AttachSpec* spec) {
  std::vector<absl::string_view> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
  if (fields.empty()) return absl::InvalidArgumentError("empty line");
  *name = std::string(fields[0]);
  for (size_t i = 1; i < fields.size(); ++i) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(fields[i], absl::MaxSplits('=', 1));
    std::string* to = kv.first == "transport"       ? &spec->transport
                      : kv.first == "address"       ? &spec->address
                      : kv.first == "service"       ? &spec->service
                      : kv.first == "subsystem_nqn" ? &spec->subsystem_nqn
                                                    : nullptr;
    if (to == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown field \"", fields[i], "\""));
    *to = std::string(kv.second);
  }
  if (spec->transport.empty() || spec->address.empty()) {
    return absl::InvalidArgumentError("a controller needs a transport and an address");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<AttachmentStore>> AttachmentStore::Open(std::string path) {
  std::unique_ptr<AttachmentStore> s(new AttachmentStore(std::move(path)));
  if (absl::Status d = MakeParentDirectory(s->path_); !d.ok()) return d;
  absl::btree_map<std::string, ControllerOps::AttachSpec> entries;
  absl::Status loaded = ReadLineFile(s->path_, kHeader, [&entries](absl::string_view line) {
    std::string name;
    ControllerOps::AttachSpec spec;
    absl::Status p = ParseLine(line, &name, &spec);
    if (p.ok()) entries[name] = spec;
    return p;
  });
  if (!loaded.ok()) {
    s->problem_ = SetAside(s->path_, loaded, "no remembered controllers");
    entries.clear();
  }
  MutexLock lock(&s->mu_);
  s->entries_ = std::move(entries);
  return s;
}

std::vector<AttachmentStore::Entry> AttachmentStore::List() const {
  MutexLock lock(&mu_);
  std::vector<Entry> out;
  for (const auto& [name, spec] : entries_) out.push_back(Entry{name, spec});
  return out;
}

bool AttachmentStore::Has(const std::string& name) const {
  MutexLock lock(&mu_);
  return entries_.contains(name);
}

absl::Status AttachmentStore::Remember(const std::string& name, const ControllerOps::AttachSpec& spec) {
  for (const std::string* v : {&name, &spec.transport, &spec.address, &spec.service, &spec.subsystem_nqn}) {
    if (!Storable(*v) || (v == &name && v->empty())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "controller ", name, " cannot be remembered: \"", *v, "\" has a blank, '=' or a control character"));
    }
  }
  MutexLock lock(&mu_);
  auto old = entries_.find(name);
  if (old != entries_.end() && old->second.transport == spec.transport && old->second.address == spec.address &&
      old->second.service == spec.service && old->second.subsystem_nqn == spec.subsystem_nqn) {
    return absl::OkStatus();
  }
  entries_[name] = spec;
  return SaveLocked();
}

absl::Status AttachmentStore::Forget(const std::string& name) {
  MutexLock lock(&mu_);
  if (entries_.erase(name) == 0) return absl::OkStatus();
  return SaveLocked();
}

absl::Status AttachmentStore::SaveLocked() {
  std::string text = absl::StrCat(kHeader, "\n");
  for (const auto& [name, s] : entries_) {
    absl::StrAppend(&text, name, " transport=", s.transport, " address=", s.address);
    if (!s.service.empty()) absl::StrAppend(&text, " service=", s.service);
    if (!s.subsystem_nqn.empty()) absl::StrAppend(&text, " subsystem_nqn=", s.subsystem_nqn);
    absl::StrAppend(&text, "\n");
  }
  return WriteFileAtomically(path_, text);
}

}  // namespace umpath::server
