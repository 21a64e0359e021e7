#include "agent/export/by_id_links.h"

#include <unistd.h>

#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace umpath::ublk {

namespace fs = std::filesystem;

namespace {

constexpr absl::string_view kPrefix = "umpath-";
// NAME_MAX of every Linux file system /dev can be on.
constexpr size_t kMaxName = 255;

}  // namespace

absl::StatusOr<std::string> ByIdLinks::PathFor(absl::string_view head) const {
  const std::string name = absl::StrCat(kPrefix, head);
  // The prefix already rules out "." and "..", and an empty name.
  if (head.empty() || absl::StrContains(head, '/') || absl::StrContains(head, '\0')) {
    return absl::InvalidArgumentError(absl::StrCat(
        "head id \"", head, "\" cannot name a file in ", dir_, " (empty, or has '/' or NUL)"));
  }
  if (name.size() > kMaxName) {
    return absl::InvalidArgumentError(absl::StrCat("the link name for head ", head, " is ",
                                                   name.size(), " bytes, more than ", kMaxName));
  }
  return absl::StrCat(dir_, "/", name);
}

std::string ByIdLinks::Target(const std::string& device) const {
  fs::path rel = fs::path(device).lexically_relative(dir_);
  return rel.empty() ? device : rel.string();
}

std::string ByIdLinks::Link(absl::string_view head, const std::string& device) {
  if (!enabled()) return "";
  absl::StatusOr<std::string> path = PathFor(head);
  if (!path.ok()) {
    Log(absl::StrCat("ublk: no by-id link for ", device, ": ", path.status().message()));
    return "";
  }
  const std::string target = Target(device);
  std::error_code ec;
  // Already right: left as it is (a reader resolving it meanwhile sees no change).
  if (fs::is_symlink(*path, ec) && fs::read_symlink(*path, ec).string() == target && !ec) return *path;
  fs::create_directories(dir_, ec);
  // A new link under a name of this agent's, renamed over the old: a reader finds the
  // old link or the new one, never none.
  const std::string temp = absl::StrCat(dir_, "/.umpath-link.", getpid(), ".", temp_seq_++);
  ::unlink(temp.c_str());
  std::string failed;
  if (::symlink(target.c_str(), temp.c_str()) != 0) {
    failed = absl::StrCat("symlink ", temp, ": ", std::generic_category().message(errno));
  } else if (::rename(temp.c_str(), path->c_str()) != 0) {
    failed = absl::StrCat("rename to ", *path, ": ", std::generic_category().message(errno));
    ::unlink(temp.c_str());
  }
  if (!failed.empty()) {
    Log(absl::StrCat("ublk: no by-id link for ", device, " of head ", head, ": ", failed));
    return "";
  }
  return *path;
}

void ByIdLinks::Unlink(absl::string_view head, const std::string& device) {
  if (!enabled()) return;
  absl::StatusOr<std::string> path = PathFor(head);
  if (!path.ok()) return;
  std::error_code ec;
  if (!fs::is_symlink(*path, ec)) return;
  const std::string held = fs::read_symlink(*path, ec).string();
  if (ec || held != Target(device)) {
    Log(absl::StrCat("ublk: ", *path, " names ", held, ", not ", device, "; left alone"));
    return;
  }
  if (::unlink(path->c_str()) != 0 && errno != ENOENT) {
    Log(absl::StrCat("ublk: removing ", *path, ": ", std::generic_category().message(errno)));
  }
}

void ByIdLinks::Sweep(const absl::flat_hash_map<std::string, std::string>& keep) {
  if (!enabled()) return;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    std::error_code lec;
    if (!absl::StartsWith(name, kPrefix) || !e.is_symlink(lec)) continue;
    const std::string head = name.substr(kPrefix.size());
    const std::string held = fs::read_symlink(e.path(), lec).string();
    if (auto it = keep.find(head); it != keep.end()) {
      if (held == Target(it->second)) continue;
      // A crash between making a device and its link: named right, in one rename.
      Log(absl::StrCat("ublk: ", e.path().string(), " -> ", held, " repaired to name ", it->second));
      Link(head, it->second);
      continue;
    }
    Log(absl::StrCat("ublk: ", e.path().string(), " -> ", held,
                     " removed: no device of this agent's backs it"));
    fs::remove(e.path(), lec);
  }
}

}  // namespace umpath::ublk
