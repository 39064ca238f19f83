# LORASERVE_CUDA: AUTO builds the CUDA backend when nvcc is found, ON requires it, OFF skips it.
set(LORASERVE_HAVE_CUDA OFF)
if(NOT LORASERVE_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    enable_language(CUDA)
    # C++17 for the .cu files: CMake 3.25 knows no C++20 flag for nvcc (the kernels need none).
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    # FindCUDAToolkit of CMake 3.25 (Debian 12's) marks CUDA::nvToolsExt deprecated without
    # checking that the target exists, when the project requires CMake >= 3.25; CUDA 12.9+
    # ships no nvToolsExt, so configuring fails ("set_property could not find TARGET
    # CUDA::nvToolsExt"). Later CMake releases check for the target. loraserve links no
    # nvToolsExt, so the module runs with the version requirement seen as 3.24: that skips only
    # the deprecation marker, on every CMake version.
    set(loraserve_min_version ${CMAKE_MINIMUM_REQUIRED_VERSION})
    set(CMAKE_MINIMUM_REQUIRED_VERSION 3.24)
    find_package(CUDAToolkit REQUIRED)
    set(CMAKE_MINIMUM_REQUIRED_VERSION ${loraserve_min_version})
    unset(loraserve_min_version)
    set(LORASERVE_HAVE_CUDA ON)
    message(STATUS "loraserve: CUDA backend ON (architectures ${CMAKE_CUDA_ARCHITECTURES})")
  elseif(LORASERVE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "LORASERVE_CUDA=ON but no CUDA compiler (nvcc) was found")
  else()
    message(STATUS "loraserve: CUDA backend OFF (no nvcc found)")
  endif()
endif()
