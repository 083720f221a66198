# Install and export: libkestrel.a, the public headers, a CMake package
# (find_package(kestrel) -> kestrel::kestrel, and kestrel::cuda when built with
# KESTREL_CUDA=ON) and a pkg-config file.
#
#   cmake --install build/release --prefix /opt/kestrel
#   find_package(kestrel REQUIRED)  +  target_link_libraries(app PRIVATE kestrel::kestrel)
#   cc main.c $(pkg-config --cflags --libs kestrel)
#
# xsimd and Eigen are used privately through $<BUILD_INTERFACE:...>, so the
# exported targets name only OpenMP, Threads and (for kestrel::cuda) CUDAToolkit.
include(CMakePackageConfigHelpers)

set(KESTREL_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/kestrel" CACHE STRING
    "Where kestrelConfig.cmake is installed, relative to the prefix")

# The include directory is already the target's $<INSTALL_INTERFACE:...>.
install(TARGETS kestrel EXPORT kestrelTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/runtime/include/kestrel
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h" PATTERN "*.hpp")

set(KESTREL_PACKAGE_HAS_CUDA OFF)
if(TARGET kestrel_cuda)
  set(KESTREL_PACKAGE_HAS_CUDA ON)
  set_target_properties(kestrel_cuda PROPERTIES EXPORT_NAME cuda)  # kestrel::cuda
  install(TARGETS kestrel_cuda EXPORT kestrelTargets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()

install(EXPORT kestrelTargets
  NAMESPACE kestrel::
  FILE kestrelTargets.cmake
  DESTINATION ${KESTREL_INSTALL_CMAKEDIR})

configure_package_config_file(
  ${CMAKE_CURRENT_LIST_DIR}/kestrelConfig.cmake.in
  ${PROJECT_BINARY_DIR}/kestrelConfig.cmake
  INSTALL_DESTINATION ${KESTREL_INSTALL_CMAKEDIR})
# 0.x: a minor version may break the API, so only the same major.minor matches.
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/kestrelConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMinorVersion)
install(FILES
  ${PROJECT_BINARY_DIR}/kestrelConfig.cmake
  ${PROJECT_BINARY_DIR}/kestrelConfigVersion.cmake
  DESTINATION ${KESTREL_INSTALL_CMAKEDIR})

# pkg-config: a static archive carries no dependencies, so Libs names them all.
# The prefix is computed from the .pc file's own location, so the file stays
# right under `cmake --install --prefix <anywhere>` and DESTDIR staging.
set(KESTREL_PC_LIBS "-lkestrel")
if(KESTREL_OPENMP)
  string(APPEND KESTREL_PC_LIBS " -fopenmp")
endif()
string(APPEND KESTREL_PC_LIBS " -lpthread -lstdc++ -lm")
file(RELATIVE_PATH KESTREL_PC_TO_PREFIX
  "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
string(REGEX REPLACE "/$" "" KESTREL_PC_TO_PREFIX "${KESTREL_PC_TO_PREFIX}")
configure_file(${CMAKE_CURRENT_LIST_DIR}/kestrel.pc.in ${PROJECT_BINARY_DIR}/kestrel.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/kestrel.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
if(TARGET kestrel_cuda)
  # kestrel-cuda.pc: the CUDA archive, which needs libkestrel, cudart and cuBLAS.
  # (ops/cuda found CUDAToolkit in its own directory scope; find it here too.)
  find_package(CUDAToolkit REQUIRED)
  file(CONFIGURE OUTPUT ${PROJECT_BINARY_DIR}/kestrel-cuda.pc @ONLY CONTENT [=[
prefix=${pcfiledir}/@KESTREL_PC_TO_PREFIX@
libdir=${prefix}/@CMAKE_INSTALL_LIBDIR@

Name: kestrel-cuda
Description: kestrel's CUDA backend (kestrel::cuda)
Version: @PROJECT_VERSION@
Requires: kestrel = @PROJECT_VERSION@
Libs: -L${libdir} -lkestrel_cuda -L@CUDAToolkit_LIBRARY_DIR@ -lcublas -lcudart
]=])
  install(FILES ${PROJECT_BINARY_DIR}/kestrel-cuda.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endif()
