#include "server/attachment_store.h"


#include <optional>

#include "absl/strings/numbers.h"
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

// The fabrics options' fields, as a line holds them (the key files by path only).
struct OptionField {
  absl::string_view key;
  std::string kernel::ConnectOptions::*text = nullptr;
  std::optional<int32_t> kernel::ConnectOptions::*int32 = nullptr;
  std::optional<int64_t> kernel::ConnectOptions::*int64 = nullptr;
};
constexpr OptionField kOptionFields[] = {
    {"ctrl_loss_tmo_secs", nullptr, &kernel::ConnectOptions::ctrl_loss_tmo_secs, nullptr},
    {"reconnect_delay_secs", nullptr, nullptr, &kernel::ConnectOptions::reconnect_delay_secs},
    {"keep_alive_tmo_secs", nullptr, nullptr, &kernel::ConnectOptions::keep_alive_tmo_secs},
    {"host_traddr", &kernel::ConnectOptions::host_traddr},
    {"host_iface", &kernel::ConnectOptions::host_iface},
    {"hostnqn", &kernel::ConnectOptions::host_nqn},
    {"tls_key_file", &kernel::ConnectOptions::tls_key_file},
    {"dhchap_secret_file", &kernel::ConnectOptions::dhchap_secret_file},
    {"dhchap_ctrl_secret_file", &kernel::ConnectOptions::dhchap_ctrl_secret_file},
};

// `field` is the whole KEY=VALUE, for the message.
absl::Status ParseOption(absl::string_view field, absl::string_view key, absl::string_view value,
                         kernel::ConnectOptions* o) {
  for (const OptionField& f : kOptionFields) {
    if (f.key != key) continue;
    if (f.text != nullptr) {
      o->*f.text = std::string(value);
      return absl::OkStatus();
    }
    int64_t v;
    if (!absl::SimpleAtoi(value, &v)) return absl::InvalidArgumentError(absl::StrCat("\"", key, "\" is not a number"));
    if (f.int32 != nullptr) {
      o->*f.int32 = static_cast<int32_t>(v);
    } else {
      o->*f.int64 = v;
    }
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown field \"", field, "\""));
}

std::string OptionsLine(const kernel::ConnectOptions& o) {
  std::string out;
  for (const OptionField& f : kOptionFields) {
    if (f.text != nullptr && !(o.*f.text).empty()) absl::StrAppend(&out, " ", f.key, "=", o.*f.text);
    if (f.int32 != nullptr && (o.*f.int32).has_value()) absl::StrAppend(&out, " ", f.key, "=", *(o.*f.int32));
    if (f.int64 != nullptr && (o.*f.int64).has_value()) absl::StrAppend(&out, " ", f.key, "=", *(o.*f.int64));
  }
  return out;
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
    if (to == nullptr) {
      if (absl::Status s = ParseOption(fields[i], kv.first, kv.second, &spec->fabrics); !s.ok()) return s;
      continue;
    }
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
  const kernel::ConnectOptions& o = spec.fabrics;
  for (const std::string* v : {&name, &spec.transport, &spec.address, &spec.service, &spec.subsystem_nqn,
                               &o.host_traddr, &o.host_iface, &o.host_nqn, &o.tls_key_file,
                               &o.dhchap_secret_file, &o.dhchap_ctrl_secret_file}) {
    if (!Storable(*v) || (v == &name && v->empty())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "controller ", name, " cannot be remembered: \"", *v, "\" has a blank, '=' or a control character"));
    }
  }
  MutexLock lock(&mu_);
  auto old = entries_.find(name);
  if (old != entries_.end() && old->second.transport == spec.transport && old->second.address == spec.address &&
      old->second.service == spec.service && old->second.subsystem_nqn == spec.subsystem_nqn &&
      OptionsLine(old->second.fabrics) == OptionsLine(spec.fabrics)) {
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
    absl::StrAppend(&text, OptionsLine(s.fabrics));
    absl::StrAppend(&text, "\n");
  }
  return WriteFileAtomically(path_, text);
}

}  // namespace umpath::server
