#pragma once

// Small reads of kernel files (sysfs, /proc) and of the agent's own records.

#include <fstream>
#include <string>

namespace umpath {

// The first line of `path`, without its newline; empty when it cannot be read.
inline std::string FirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace umpath
