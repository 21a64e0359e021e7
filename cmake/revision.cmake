# UMPATH_REVISION: the commit this build is of (umpath_build_info{revision}, umpathd
# --version, GetAgentInfo), git's HEAD abbreviated to 12 digits when CMake configures.
# "unknown" where the source is not a git checkout of this project: a release tarball,
# also when unpacked inside some other repository (git would answer with that one's
# HEAD), or no git at all. -DUMPATH_REVISION=... sets it (a packager's build).
# Read at configure time only: a later commit in a build tree shows once CMake runs
# again (CI configures afresh). Following HEAD on every build would relink every binary
# (they all link the server library, which holds the revision) after each commit.
if(NOT DEFINED UMPATH_REVISION)
  set(UMPATH_REVISION unknown)
  find_package(Git QUIET)
  if(GIT_FOUND)
    execute_process(COMMAND ${GIT_EXECUTABLE} rev-parse --show-toplevel --short=12 HEAD
                    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
                    OUTPUT_VARIABLE _git_out RESULT_VARIABLE _git_rc ERROR_QUIET
                    OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(_git_rc EQUAL 0)
      string(REPLACE "\n" ";" _git_out "${_git_out}")
      list(GET _git_out 0 _git_top)
      list(GET _git_out 1 _git_head)
      file(REAL_PATH "${_git_top}" _git_top)
      file(REAL_PATH "${PROJECT_SOURCE_DIR}" _src)
      if(_git_top STREQUAL _src)
        set(UMPATH_REVISION ${_git_head})
      endif()
    endif()
  endif()
endif()
message(STATUS "umpath ${PROJECT_VERSION}, revision ${UMPATH_REVISION}")
