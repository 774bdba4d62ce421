#!/usr/bin/env bash
# Builds dcasgd (release preset, warnings as errors) and runs every test.
# Installs what it needs first (Debian packages, npm test tools).
# Usage: scripts/test.sh [extra ctest args]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/install-deps.sh all
if [[ -x scripts/s3rver/install.sh ]]; then scripts/s3rver/install.sh; fi
examples/node/install.sh

export CCACHE_BASEDIR="$root"
# With LibTorch: the TorchScript model and its tests (services/worker/model).
cmake --preset release -DDCASGD_WITH_TORCH=ON >/dev/null
cmake --build --preset release -j"$(nproc)"

# Tests that start servers run in parallel on 2 cores; each picks free ports.
ctest --preset release -j2 --timeout 600 "$@"
