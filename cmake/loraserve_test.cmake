# loraserve_add_test(<source> LIBS <targets...> [LABELS <labels...>] [FIXTURES <names...>]
#                    [TIMEOUT <seconds>] [CONFIGURATIONS <names...>])
# One gtest executable per tests/<module>/<name>_test.cpp, named <module>_<name>_test, registered
# with ctest under the same name and run from the source root (so fixtures are found by path).
# With CONFIGURATIONS the test runs only under `ctest -C <name>` (e.g. the soak test).
function(loraserve_add_test source)
  cmake_parse_arguments(T "" "TIMEOUT" "LIBS;LABELS;FIXTURES;CONFIGURATIONS" ${ARGN})
  get_filename_component(_stem ${source} NAME_WE)
  get_filename_component(_dir ${CMAKE_CURRENT_SOURCE_DIR} NAME)
  set(_name ${_dir}_${_stem})
  add_executable(${_name} ${source})
  target_link_libraries(${_name} PRIVATE ${T_LIBS} ls::gtest_main)
  if(T_CONFIGURATIONS)
    add_test(NAME ${_name} COMMAND ${_name} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
             CONFIGURATIONS ${T_CONFIGURATIONS})
  else()
    add_test(NAME ${_name} COMMAND ${_name} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  endif()
  # Tests run tiny models: a step is a few short OpenMP regions, and threads that spin between
  # them (OpenMP's default) slow everything tens of times over when tests share the cores.
  set_tests_properties(${_name} PROPERTIES ENVIRONMENT OMP_WAIT_POLICY=PASSIVE)
  if(T_LABELS)
    set_tests_properties(${_name} PROPERTIES LABELS "${T_LABELS}")
  endif()
  if(T_FIXTURES)
    set_tests_properties(${_name} PROPERTIES FIXTURES_REQUIRED "${T_FIXTURES}")
  endif()
  if(T_TIMEOUT)
    set_tests_properties(${_name} PROPERTIES TIMEOUT ${T_TIMEOUT})
  endif()
endfunction()
