# llhttp, built from the C sources Debian's node-llhttp package ships in
# /usr/share/llhttp (they are generated from llhttp's TypeScript by llparse;
# Debian publishes the generated C). Nothing of llhttp is copied into this
# repository. The sources are third-party, so our warning flags do not apply.
set(LLHTTP_SRC_DIR /usr/share/llhttp CACHE PATH "llhttp C sources (node-llhttp)")
set(LLHTTP_INCLUDE_DIR /usr/share/include/llhttp CACHE PATH "llhttp header (node-llhttp)")
foreach(f api.c http.c llhttp.c)
  if(NOT EXISTS ${LLHTTP_SRC_DIR}/${f})
    message(FATAL_ERROR "llhttp source ${LLHTTP_SRC_DIR}/${f} missing: run scripts/install-deps (package node-llhttp)")
  endif()
endforeach()
add_library(llhttp STATIC ${LLHTTP_SRC_DIR}/api.c ${LLHTTP_SRC_DIR}/http.c ${LLHTTP_SRC_DIR}/llhttp.c)
target_include_directories(llhttp SYSTEM PUBLIC ${LLHTTP_INCLUDE_DIR})
target_compile_options(llhttp PRIVATE -w -O2)
set_target_properties(llhttp PROPERTIES POSITION_INDEPENDENT_CODE ON)
