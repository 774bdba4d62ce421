# Sanitizer builds other than DCASGD_SANITIZE (AddressSanitizer + UBSan, set up
# in the top-level CMakeLists.txt).
#
# DCASGD_TSAN (preset `tsan`): ThreadSanitizer on every target. Debian's
# abseil and gRPC are not built with TSan, so every executable also links
# tests/tsan/absl_sync_annotations.cc, which tells TSan about absl::Mutex,
# CondVar and Notification, and tests/tsan/grpc_callback_annotations.cc, which
# tells it about gRPC's callback hand-offs (tests/tsan/README.md); suppressions for
# third-party code are in tests/tsan/suppressions.txt.
if(DCASGD_TSAN)
  if(DCASGD_SANITIZE)
    message(FATAL_ERROR "DCASGD_TSAN and DCASGD_SANITIZE exclude each other (use the tsan or asan-ubsan preset)")
  endif()
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
  add_library(dcasgd_tsan_annotations OBJECT ${PROJECT_SOURCE_DIR}/tests/tsan/absl_sync_annotations.cc
              ${PROJECT_SOURCE_DIR}/tests/tsan/grpc_callback_annotations.cc)
  target_link_libraries(dcasgd_tsan_annotations INTERFACE ${CMAKE_DL_LIBS})
endif()

# DCASGD_FUZZ (preset `fuzz`, clang only): every target gets libFuzzer's
# coverage instrumentation with AddressSanitizer and UBSan; the fuzz targets
# (tests/fuzz/CMakeLists.txt) link libFuzzer itself.
if(DCASGD_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "DCASGD_FUZZ needs clang (libFuzzer): use the fuzz preset")
  endif()
  if(DCASGD_SANITIZE OR DCASGD_TSAN)
    message(FATAL_ERROR "DCASGD_FUZZ brings its own sanitizers (address, undefined)")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

# dcasgd_sanitizer_support(target): what an executable of a sanitizer build
# needs linked beside its own dependencies (nothing in other builds).
function(dcasgd_sanitizer_support target)
  if(DCASGD_TSAN)
    target_link_libraries(${target} PRIVATE dcasgd_tsan_annotations)
  endif()
endfunction()
