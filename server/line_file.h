#pragma once

// The agent's own small text files (the state file, the remembered controllers): a
// header line, then one record a line. Read whole at start; a file that does not parse
// is set aside for an operator to look at, never deleted, and never stops the agent.

#include <ctime>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace umpath::server {

// Makes the directory `path` goes in.
inline absl::Status MakeParentDirectory(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create the directory of ", path, ": ", ec.message()));
  }
  return absl::OkStatus();
}

// Gives each record line (blank lines skipped) to `parse`. A missing file has none.
// The first line must be `header`; the first error names its line and ends the read.
inline absl::Status ReadLineFile(const std::string& path, absl::string_view header,
                                 absl::FunctionRef<absl::Status(absl::string_view)> parse) {
  std::ifstream in(path);
  if (!in) return absl::OkStatus();  // nothing saved yet
  std::string line;
  if (!std::getline(in, line) || line != header) {
    return absl::InvalidArgumentError(absl::StrCat("the first line is not \"", header, "\""));
  }
  for (int n = 2; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    if (absl::Status s = parse(line); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("line ", n, ": ", s.message()));
    }
  }
  if (in.bad()) return absl::DataLossError("read error");
  return absl::OkStatus();
}

// After a read that failed: the file renamed to `path.corrupt-<unix seconds>`, and what
// to tell the operator ("...; set aside as ... and starting with `instead`").
inline std::string SetAside(const std::string& path, const absl::Status& why, absl::string_view instead) {
  const std::string aside = absl::StrCat(path, ".corrupt-", std::time(nullptr));
  std::error_code ec;
  std::filesystem::rename(path, aside, ec);
  return absl::StrCat(path, ": ", why.message(), "; set aside as ", aside, " and starting with ", instead);
}

}  // namespace umpath::server
