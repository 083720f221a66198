# Cross-compiling for 64-bit ARM Linux (Debian's g++-aarch64-linux-gnu).
#
#   cmake --preset aarch64        # or: cmake -S . -B b -DCMAKE_TOOLCHAIN_FILE=toolchains/aarch64-linux-gnu.cmake
#
# Only the target system, the compilers and the find-root modes live here: no
# CPU tuning (pin a kernel variant with -DKESTREL_CPU_ISAS=neon, tune with
# CMAKE_CXX_FLAGS in a preset), no project options. Target libraries (libgomp,
# libstdc++) come from the cross root; header-only packages installed on the
# host under /usr (xsimd, Eigen, Catch2) are still found because includes and
# packages are searched in both roots.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
