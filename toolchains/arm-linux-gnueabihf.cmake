# Cross-compiling for 32-bit ARM Linux, hard-float ABI (Debian's
# g++-arm-linux-gnueabihf; ARMv7 boards such as the Raspberry Pi 2/3 in 32-bit mode).
#
#   cmake --preset armhf          # or: cmake -S . -B b -DCMAKE_TOOLCHAIN_FILE=toolchains/arm-linux-gnueabihf.cmake
#
# Only the target system, the compilers and the find-root modes live here. No
# SIMD kernel variant is compiled for 32-bit ARM (KESTREL_CPU_ISAS=auto gives an
# empty list there), so the cpu backend falls back to the scalar ref kernels.
# Header-only host packages under /usr (xsimd, Eigen, Catch2) are still found
# because includes and packages are searched in both roots.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv7l)

set(CMAKE_C_COMPILER arm-linux-gnueabihf-gcc)
set(CMAKE_CXX_COMPILER arm-linux-gnueabihf-g++)

set(CMAKE_FIND_ROOT_PATH /usr/arm-linux-gnueabihf)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
