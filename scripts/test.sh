#!/usr/bin/env bash
# The test command: install dependencies, configure, build, run every test (fast and slow labels).
#   scripts/test.sh                 all tests
#   scripts/test.sh -L fast         only the fast label (extra arguments go to ctest)
# BUILD_DIR (default build) and HMER_CUDA (default AUTO) can be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHMER_CUDA="${HMER_CUDA:-AUTO}" -DHMER_BUILD_TESTS=ON
cmake --build "$BUILD_DIR" --parallel "$(nproc)"
cd "$BUILD_DIR"
ctest --output-on-failure --timeout 900 "$@"
