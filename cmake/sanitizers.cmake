# UMPATH_SANITIZE=address,undefined or thread. Fuzz builds add -fsanitize=fuzzer
# per target; with UMPATH_FUZZ everything is instrumented for coverage.
if(UMPATH_SANITIZE)
  add_compile_options(-fsanitize=${UMPATH_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${UMPATH_SANITIZE})
endif()
if(UMPATH_FUZZ)
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
