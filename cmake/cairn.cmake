# Helpers that give every module the same shape: one static library per module,
# one gtest binary per module built from the *_test.cpp files beside the code.

# cairn_module(<name> SOURCES ... DEPS ... [TORCH])
function(cairn_module name)
  cmake_parse_arguments(M "TORCH" "" "SOURCES;DEPS" ${ARGN})
  add_library(cairn_${name} STATIC ${M_SOURCES})
  target_include_directories(cairn_${name} PUBLIC ${PROJECT_SOURCE_DIR}/include
                                           PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_compile_options(cairn_${name} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  target_link_libraries(cairn_${name} PUBLIC ${M_DEPS})
  if(M_TORCH)
    target_link_libraries(cairn_${name} PUBLIC ${TORCH_LIBRARIES})
    target_precompile_headers(cairn_${name} REUSE_FROM cairn_pch)
  endif()
endfunction()

# cairn_tests(<module> SOURCES ... DEPS ... [TORCH])
function(cairn_tests name)
  cmake_parse_arguments(T "TORCH" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name}_tests ${T_SOURCES})
  target_include_directories(${name}_tests PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(${name}_tests PRIVATE ${T_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  if(T_TORCH)
    target_precompile_headers(${name}_tests REUSE_FROM cairn_pch)
  endif()
  target_compile_definitions(${name}_tests PRIVATE
    CAIRN_SOURCE_DIR="${PROJECT_SOURCE_DIR}" CAIRN_BINARY_DIR="${PROJECT_BINARY_DIR}")
  include(GoogleTest)
  gtest_discover_tests(${name}_tests DISCOVERY_MODE PRE_TEST
    PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2")
endfunction()
