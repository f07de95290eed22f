#!/usr/bin/env bash
# Installs every Debian package hmer's build, tests and reference scripts need.
# Idempotent and quiet: packages already present are skipped; apt runs only when something is missing.
set -euo pipefail

PACKAGES=(
  cmake ninja-build g++ pkg-config
  libeigen3-dev          # CPU GEMM (matmul, linear, conv2d's im2col products)
  libyaml-cpp-dev        # YAML configs
  nlohmann-json3-dev     # safetensors headers, JSON reports
  libopencv-dev          # image decoding/encoding and resizing (data pipeline)
  hershey-fonts-data     # vector stroke glyphs for the built-in synthetic handwriting
  libgoogle-perftools-dev  # tcmalloc_minimal for the hmer CLI (steady large-tensor reuse, low RSS)
  libgtest-dev googletest
  python3-torch python3-numpy   # PyTorch reference scripts (run with /usr/bin/python3)
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
