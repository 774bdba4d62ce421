#!/usr/bin/env bash
# Installs the Debian 12 packages dcasgd needs to build, test and run.
# Idempotent: does nothing when every package is already present.
# Usage: scripts/install-deps.sh [build|test|all]   (default: all)
set -euo pipefail

BUILD_PKGS=(
  build-essential cmake ninja-build pkg-config ccache
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libeigen3-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev libcurl4-openssl-dev libssl-dev zlib1g-dev
  grpc-proto clang-format
)
TEST_PKGS=(
  dataset-fashion-mnist prometheus python3-grpcio python3-protobuf
  python3-numpy python3-matplotlib unzip
)
# Node.js and npm (for the S3 test server and helm): Debian's packages unless
# a Node.js that ships npm (e.g. nodesource) is already installed.
NODE_PKGS=(nodejs npm)

what="${1:-all}"
pkgs=("${BUILD_PKGS[@]}")
if [[ "$what" != build ]]; then
  pkgs+=("${TEST_PKGS[@]}")
  if ! command -v npm >/dev/null 2>&1; then pkgs+=("${NODE_PKGS[@]}"); fi
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
