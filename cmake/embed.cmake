# embed.cmake — a service's OpenAPI document (services/<name>/openapi.json)
# compiled into it as a C string.
#
#   ag_embed_json(agora-rooms rooms_openapi_json openapi.json)
#
# adds a generated source defining `const char rooms_openapi_json[]` (the
# file's bytes and a NUL) to the target, made again whenever the file
# changes. A file that is not JSON fails the build, with CMake's reason.
# Run as a script (cmake -DEMBED_IN=… -DEMBED_OUT=… -DEMBED_SYMBOL=… -P
# embed.cmake), it writes that source.

if(DEFINED EMBED_IN)
  file(READ "${EMBED_IN}" text)
  string(JSON kind ERROR_VARIABLE err TYPE "${text}")
  if(err)
    message(FATAL_ERROR "${EMBED_IN} is not JSON: ${err}")
  endif()
  file(READ "${EMBED_IN}" hex HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n    "
         bytes "${bytes}")
  file(WRITE "${EMBED_OUT}"
       "/* Generated from ${EMBED_IN} by cmake/embed.cmake: edit that file. */\n"
       "const char ${EMBED_SYMBOL}[] = {\n    ${bytes}0x00};\n")
  return()
endif()

set(AG_EMBED_SCRIPT ${CMAKE_CURRENT_LIST_FILE})

function(ag_embed_json target symbol file)
  get_filename_component(in ${file} ABSOLUTE)
  set(out ${CMAKE_CURRENT_BINARY_DIR}/${symbol}.c)
  add_custom_command(OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -DEMBED_IN=${in} -DEMBED_OUT=${out} -DEMBED_SYMBOL=${symbol}
            -P ${AG_EMBED_SCRIPT}
    DEPENDS ${in} ${AG_EMBED_SCRIPT}
    COMMENT "Embedding ${file} as ${symbol}"
    VERBATIM)
  target_sources(${target} PRIVATE ${out})
endfunction()
