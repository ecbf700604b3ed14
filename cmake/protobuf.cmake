# protobuf.cmake — C for a .proto file, made at build time by protoc-c
# (Debian's protobuf-c-compiler) and never checked in.
#
#   ag_protobuf_c(agora ${PROJECT_SOURCE_DIR}/proto grpc/health/v1/health.proto)
#
# writes <current build dir>/proto/grpc/health/v1/health.pb-c.{c,h} from
# <root>/grpc/health/v1/health.proto, adds the .c to the target and
# that proto/ to its include path (PUBLIC: "grpc/health/v1/health.pb-c.h"),
# and links libprotobuf-c. The generated code is protoc-c's, not ours: it is
# compiled without -Werror and without banned.h.
find_program(AG_PROTOC_C protoc-c REQUIRED)
pkg_check_modules(PROTOBUF_C REQUIRED IMPORTED_TARGET libprotobuf-c)

function(ag_protobuf_c target root rel)
  get_filename_component(dir ${rel} DIRECTORY)
  get_filename_component(stem ${rel} NAME_WE)
  set(out_dir ${CMAKE_CURRENT_BINARY_DIR}/proto)
  set(c ${out_dir}/${dir}/${stem}.pb-c.c)
  set(h ${out_dir}/${dir}/${stem}.pb-c.h)
  add_custom_command(OUTPUT ${c} ${h}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${out_dir}
    COMMAND ${AG_PROTOC_C} --c_out=${out_dir} -I${root} ${root}/${rel}
    DEPENDS ${root}/${rel}
    COMMENT "protoc-c ${rel}")
  target_sources(${target} PRIVATE ${c})
  set_source_files_properties(${c} PROPERTIES COMPILE_OPTIONS "-Wno-error;-w")
  target_include_directories(${target} PUBLIC ${out_dir})
  target_link_libraries(${target} PUBLIC PkgConfig::PROTOBUF_C)
endfunction()
