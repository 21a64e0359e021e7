# Every target of ours builds with these; third-party headers come in as SYSTEM.
add_compile_options(-Wall -Wextra -Werror -Wno-missing-field-initializers)
if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang" AND UMPATH_THREAD_SAFETY)
  add_compile_options(-Wthread-safety -Wthread-safety-beta)
endif()
