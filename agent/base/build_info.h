#pragma once

// What this binary is: the project's version and the commit it was built from
// (cmake/revision.cmake: git's HEAD when CMake configured; "unknown" outside a git
// checkout). Defined in a file CMake writes, so a new revision compiles that one file.

namespace umpath {

extern const char kBuildVersion[];   // "0.1.0"
extern const char kBuildRevision[];  // "9d8b46ef69ef", or "unknown"

}  // namespace umpath
