# The build's vocabulary: every library, executable, test and generated proto
# of dcasgd is declared with one of these functions, so that all targets get
# the same warnings and include path and the folders' CMakeLists.txt stay lists
# of sources and dependencies.

# Project warnings apply to dcasgd's own targets only (generated code is exempt).
# GCC's -Wshadow=local is clang's -Wshadow-uncaptured-local (clang builds:
# the fuzz preset).
if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  set(DCASGD_SHADOW_WARNING -Wshadow-uncaptured-local)
else()
  set(DCASGD_SHADOW_WARNING -Wshadow=local)
endif()
set(DCASGD_WARNINGS -Wall -Wextra -Wpedantic ${DCASGD_SHADOW_WARNING} -Wnon-virtual-dtor
    -Wno-unused-parameter)
if(DCASGD_WERROR)
  list(APPEND DCASGD_WARNINGS -Werror)
endif()

# dcasgd_library(name SOURCES a.cc ... [DEPS public deps] [PRIVATE_DEPS ...])
# A static library of the repository's sources; its users include its headers
# by their path from the repository root ("core/tensor.h").
function(dcasgd_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  target_compile_options(${name} PRIVATE ${DCASGD_WARNINGS})
endfunction()

# dcasgd_executable(name SOURCES main.cc ... DEPS ...)
function(dcasgd_executable name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
  dcasgd_sanitizer_support(${name})
  target_compile_options(${name} PRIVATE ${DCASGD_WARNINGS})
endfunction()

# dcasgd_protoc(OUT var ROOT dir PROTOS rel/a.proto ...)
# The one protoc rule: generates the C++ messages and gRPC stubs of PROTOS
# (paths relative to ROOT, which is also the import path) into
# ${CMAKE_CURRENT_BINARY_DIR}/gen and appends the generated sources to `var`.
function(dcasgd_protoc)
  cmake_parse_arguments(ARG "" "OUT;ROOT" "PROTOS" ${ARGN})
  set(gen ${CMAKE_CURRENT_BINARY_DIR}/gen)
  set(srcs ${${ARG_OUT}})
  foreach(rel ${ARG_PROTOS})
    string(REGEX REPLACE "\\.proto$" "" stem ${rel})
    get_filename_component(out_dir ${gen}/${stem} DIRECTORY)
    file(MAKE_DIRECTORY ${out_dir})
    set(outs ${gen}/${stem}.pb.cc ${gen}/${stem}.pb.h
             ${gen}/${stem}.grpc.pb.cc ${gen}/${stem}.grpc.pb.h)
    add_custom_command(
      OUTPUT ${outs}
      COMMAND protobuf::protoc
        --proto_path=${ARG_ROOT}
        --cpp_out=${gen} --grpc_out=${gen}
        --plugin=protoc-gen-grpc=$<TARGET_FILE:gRPC::grpc_cpp_plugin>
        ${ARG_ROOT}/${rel}
      DEPENDS ${ARG_ROOT}/${rel}
      COMMENT "protoc ${rel}")
    list(APPEND srcs ${outs})
  endforeach()
  set(${ARG_OUT} ${srcs} PARENT_SCOPE)
endfunction()

# dcasgd_proto_library(name SOURCES <generated sources>)
# Generated code compiled once into one library (without the project's
# warnings); its users include "dcasgd/v1/ps.pb.h" and the like.
function(dcasgd_proto_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${CMAKE_CURRENT_BINARY_DIR}/gen)
  target_link_libraries(${name} PUBLIC gRPC::grpc++ protobuf::libprotobuf)
endfunction()

# dcasgd_tests(DIR dir [LABEL label] [FIXTURE name] DEPS ... TESTS name ...)
# One GoogleTest binary per tests/<dir>/<name>.cc, named <dir>_<name> ('/'
# becomes '_'), registered with ctest under LABEL (default: dir), each test
# requiring the ctest fixture FIXTURE if given. Tests find the repository and
# the build tree through DCASGD_SOURCE_DIR and DCASGD_BINARY_DIR.
function(dcasgd_tests)
  cmake_parse_arguments(ARG "" "DIR;LABEL;FIXTURE" "DEPS;TESTS" ${ARGN})
  set(fixture_properties)
  if(ARG_FIXTURE)
    set(fixture_properties FIXTURES_REQUIRED ${ARG_FIXTURE})
  endif()
  if(NOT ARG_LABEL)
    set(ARG_LABEL ${ARG_DIR})
  endif()
  foreach(name ${ARG_TESTS})
    string(REPLACE "/" "_" target ${ARG_DIR}_${name})
    add_executable(${target} ${CMAKE_CURRENT_SOURCE_DIR}/${ARG_DIR}/${name}.cc)
    target_link_libraries(${target} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock
                          GTest::gtest_main)
    dcasgd_sanitizer_support(${target})
    target_compile_options(${target} PRIVATE ${DCASGD_WARNINGS})
    target_compile_definitions(${target} PRIVATE
      DCASGD_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
      DCASGD_BINARY_DIR="${PROJECT_BINARY_DIR}")
    gtest_discover_tests(${target} DISCOVERY_TIMEOUT 60
      PROPERTIES LABELS ${ARG_LABEL} TIMEOUT ${DCASGD_TEST_TIMEOUT} ${fixture_properties})
  endforeach()
endfunction()
