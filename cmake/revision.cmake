# UMPATH_REVISION: the commit this build is of (umpath_build_info{revision}, umpathd
# --version, GetAgentInfo), git's HEAD abbreviated to 12 digits when CMake configures.
# "unknown" where the source is not a git checkout of this project: a release tarball,
# also when unpacked inside some other repository (git would answer with that one's
# HEAD), or no git at all. -DUMPATH_REVISION=... sets it (a packager's build).
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
        # A commit or checkout re-runs CMake at the next build, so the revision follows
        # HEAD; only build_info.cc is compiled again.
        execute_process(COMMAND ${GIT_EXECUTABLE} rev-parse --absolute-git-dir --git-common-dir
                                --symbolic-full-name HEAD
                        WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
                        OUTPUT_VARIABLE _git_dirs ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
        string(REPLACE "\n" ";" _git_dirs "${_git_dirs}")
        list(LENGTH _git_dirs _n)
        if(_n EQUAL 3)
          list(GET _git_dirs 0 _git_dir)
          list(GET _git_dirs 1 _git_common)
          list(GET _git_dirs 2 _git_ref)
          if(NOT IS_ABSOLUTE "${_git_common}")
            set(_git_common "${PROJECT_SOURCE_DIR}/${_git_common}")
          endif()
          foreach(_f "${_git_dir}/HEAD" "${_git_common}/${_git_ref}" "${_git_common}/packed-refs")
            if(EXISTS "${_f}" AND NOT IS_DIRECTORY "${_f}")
              set_property(DIRECTORY ${PROJECT_SOURCE_DIR} APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${_f}")
            endif()
          endforeach()
        endif()
      endif()
    endif()
  endif()
endif()
message(STATUS "umpath ${PROJECT_VERSION}, revision ${UMPATH_REVISION}")
