#pragma once

// Small reads of kernel files (sysfs, /proc), and the agent's own small files written
// so that a crash leaves the old one or the new one, never a mix.

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace umpath {

// The first line of `path`, without its newline; empty when it cannot be read.
inline std::string FirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// Replaces `path` with `text`: a temporary file beside it, fsync, rename, fsync of the
// directory (the rename is durable only once the directory is).
inline absl::Status WriteFileAtomically(const std::string& path, absl::string_view text) {
  const std::filesystem::path p(path);
  const std::string dir = p.parent_path().empty() ? "." : p.parent_path().string();
  const std::string tmp = absl::StrCat(dir, "/.", p.filename().string(), ".tmp");
  auto fail = [&](absl::string_view step) {
    const int e = errno;
    unlink(tmp.c_str());
    return absl::ErrnoToStatus(e, absl::StrCat(step, " ", path));
  };
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return fail("create a temporary file for");
  for (absl::string_view left = text; !left.empty();) {
    const ssize_t n = write(fd, left.data(), left.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno;
      close(fd);
      errno = e;
      return fail("write");
    }
    left.remove_prefix(static_cast<size_t>(n));
  }
  if (fsync(fd) != 0) {
    const int e = errno;
    close(fd);
    errno = e;
    return fail("fsync");
  }
  close(fd);
  if (rename(tmp.c_str(), path.c_str()) != 0) return fail("rename into");
  const int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  return absl::OkStatus();
}

}  // namespace umpath
