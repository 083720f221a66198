#!/usr/bin/env bash
# Installs the Debian 12 packages kestrel needs, with apt-get (as root, or
# through sudo). Packages already installed are not asked for again, so on a
# machine that has them this needs no root and no network.
#
#   tools/install-deps.sh          # build the library, CLI, benches and tests; run the host tests
#   tools/install-deps.sh --all    # also what tests/run_all.sh's other steps need: the aarch64 and
#                                  # armhf cross compilers, qemu, clang + sanitizer runtimes, llvm, and
#                                  # the HTTP server tests' Python packages (openai, pytest,
#                                  # pytest-timeout from PyPI, in the virtual environment build/pyvenv)
#   tools/install-deps.sh --print  # list the packages (with --all: all of them) and exit
#
# python3-jinja2 checks the chat-template interpreter against jinja2 (the test
# is skipped without it). libcpp-httplib-dev: `kestrel serve` (the CLI is built
# without it when it is missing). The CUDA step needs the CUDA toolkit (nvcc), which
# is not a Debian 12 main package: it is skipped when nvcc is not on PATH.
set -euo pipefail

build=(cmake make g++ gcc pkg-config libeigen3-dev libxsimd-dev catch2 libcli11-dev nlohmann-json3-dev
       python3 python3-jinja2 libcpp-httplib-dev)
extra=(g++-aarch64-linux-gnu g++-arm-linux-gnueabihf qemu-user clang llvm libclang-rt-14-dev python3-venv)
# PyPI packages of the server tests only (tests/server): the official OpenAI client.
pip_test=(openai pytest pytest-timeout)
venv=${KESTREL_PYVENV:-$(cd "$(dirname "$0")/.." && pwd)/build/pyvenv}

all=0 print=0
for arg in "$@"; do
  case $arg in
    --all) all=1 ;;
    --print) print=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "install-deps.sh: unknown argument '$arg' (--all, --print)" >&2; exit 2 ;;
  esac
done
packages=("${build[@]}")
[[ $all == 1 ]] && packages+=("${extra[@]}")
if [[ $print == 1 ]]; then
  printf '%s\n' "${packages[@]}"
  [[ $all == 1 ]] && printf 'pip: %s\n' "${pip_test[@]}"
  exit 0
fi

# The server tests' Python packages, in their own virtual environment (Debian's
# python3 refuses pip installs into the system); tests/run_all.sh uses it.
install_pip_tests() {
  [[ $all == 1 ]] || return 0
  if [[ -x $venv/bin/python ]] && "$venv/bin/python" -c "import openai, pytest, pytest_timeout" 2>/dev/null; then
    echo "install-deps.sh: ${pip_test[*]} are installed in $venv"
    return 0
  fi
  echo "install-deps.sh: installing ${pip_test[*]} into $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet "${pip_test[@]}"
}

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$p")
done
if [[ ${#missing[@]} == 0 ]]; then
  echo "install-deps.sh: all ${#packages[@]} packages are installed"
  install_pip_tests
  exit 0
fi

sudo=()
if [[ $(id -u) != 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps.sh: run as root (or install sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
echo "install-deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update
"${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
install_pip_tests
