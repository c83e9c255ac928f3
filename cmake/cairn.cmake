# Helpers that give every module the same shape: one static library per module,
# one gtest binary per module built from the *_test.cpp files beside the code.

# cairn_module(<name> SOURCES ... DEPS ... [TORCH])
function(cairn_module name)
  cmake_parse_arguments(M "TORCH" "" "SOURCES;DEPS" ${ARGN})
  add_library(cairn_${name} STATIC ${M_SOURCES})
  target_include_directories(cairn_${name}
                             PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
                                    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>
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
  # One ctest test per binary, not one process per case: a torch binary spends about a second
  # loading libtorch before its first case, which dominated the unit tests' time. gtest names the
  # failed cases in the output ctest prints on failure; run one case with --gtest_filter.
  add_test(NAME ${name}_tests COMMAND ${name}_tests --gtest_brief=1)
  set_tests_properties(${name}_tests PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2")
endfunction()

# cairn_check_listed(<dir> <files...>): fails the configuration when a .cpp file in <dir> is in
# none of the lists (the lists are explicit; this only catches a file added and forgotten).
function(cairn_check_listed dir)
  file(GLOB present RELATIVE ${dir} ${dir}/*.cpp)
  foreach(f ${present})
    if(NOT f IN_LIST ARGN)
      message(FATAL_ERROR "${dir}/${f} is in no source list of ${dir}/CMakeLists.txt")
    endif()
  endforeach()
endfunction()

# cairn_module_files(<name> SOURCES ... [TESTS ...] DEPS ... [TORCH] [TEST_DEPS ...]
#                    [NO_TORCH_SOURCES ...] [BASE_SOURCES ... BASE_DEPS ...]): a module from the
# listed sources of the current directory; TESTS (the *_test.cpp files) form its gtest binary.
# NO_TORCH_SOURCES names the files of a TORCH module that include no torch header (directly or
# through ours): they skip the torch precompiled header, whose load alone costs ~8 s of compile
# per file. BASE_SOURCES form a second, torch-free library cairn_<name>_base (linked by
# cairn_<name>; DEPS of its own in BASE_DEPS): what the `cairn` front binary, which never loads
# libtorch, may use of a TORCH module.
function(cairn_module_files name)
  cmake_parse_arguments(M "TORCH" "" "SOURCES;TESTS;DEPS;TEST_DEPS;NO_TORCH_SOURCES;BASE_SOURCES;BASE_DEPS"
                        ${ARGN})
  cairn_check_listed(${CMAKE_CURRENT_SOURCE_DIR} ${M_SOURCES} ${M_TESTS} ${M_BASE_SOURCES})
  if(M_NO_TORCH_SOURCES)
    set_source_files_properties(${M_NO_TORCH_SOURCES} PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
  endif()
  if(M_BASE_SOURCES)
    cairn_module(${name}_base SOURCES ${M_BASE_SOURCES} DEPS ${M_BASE_DEPS})
    list(APPEND M_DEPS cairn_${name}_base)
  endif()
  if(M_TORCH)
    cairn_module(${name} SOURCES ${M_SOURCES} DEPS ${M_DEPS} TORCH)
  else()
    cairn_module(${name} SOURCES ${M_SOURCES} DEPS ${M_DEPS})
  endif()
  if(M_TESTS)
    if(M_TORCH)
      cairn_tests(${name} SOURCES ${M_TESTS} DEPS cairn_${name} ${M_TEST_DEPS} TORCH)
    else()
      cairn_tests(${name} SOURCES ${M_TESTS} DEPS cairn_${name} ${M_TEST_DEPS})
    endif()
  endif()
endfunction()
