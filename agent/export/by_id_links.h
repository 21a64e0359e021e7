#pragma once

// Links named after heads, /dev/disk/by-id/umpath-<head> -> ../../ublkbN: a handle on a
// head's block device that survives its number (ublk hands a freed number to the next
// device, another head's maybe). systemd's persistent-storage rules do not cover ublkb*,
// and a rule could not know the head, so the exporter keeps them itself.

#include <functional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace umpath::ublk {

// Threading: the exporter's; one call at a time (from its offload thread, or Create's).
class ByIdLinks {
 public:
  // `dir` empty: no links are kept, and every call does nothing.
  ByIdLinks(std::string dir, std::function<void(const std::string&)> log)
      : dir_(std::move(dir)), log_(std::move(log)) {}

  bool enabled() const { return !dir_.empty(); }
  // The link's path for `head`; INVALID_ARGUMENT when "umpath-<head>" is not one file
  // name (a '/', a NUL, more than 255 bytes).
  absl::StatusOr<std::string> PathFor(absl::string_view head) const;
  // Makes the head's link name `device`, replacing in one rename whatever the name held
  // (a link to an older device, left by a crash). The link's path; empty, with the
  // reason logged, when there is none.
  std::string Link(absl::string_view head, const std::string& device);
  // Removes the head's link, but only while it names `device`: a link that names
  // another device is not this device's to take.
  void Unlink(absl::string_view head, const std::string& device);
  // At start: removes each umpath-* link but those `keep` has (head -> the device its
  // link must name, which a device left by the last run still backs), and makes those
  // name their device. Whatever else is there names a device that is gone, or a number
  // another head may get next.
  void Sweep(const absl::flat_hash_map<std::string, std::string>& keep);

 private:
  // What the link holds: `device` relative to the directory (../../ublkb0), as udev's
  // own links are.
  std::string Target(const std::string& device) const;
  void Log(const std::string& line) const {
    if (log_) log_(line);
  }
  const std::string dir_;
  const std::function<void(const std::string&)> log_;
  uint64_t temp_seq_ = 0;
};

}  // namespace umpath::ublk
