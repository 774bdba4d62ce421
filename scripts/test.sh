#!/usr/bin/env bash
# Builds dcasgd (release preset, warnings as errors) and runs every test,
# then the fuzz stage (scripts/fuzz.sh).
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
status=0
ctest --preset release -j2 --timeout 600 "$@" || status=$?

# The fuzz stage (tests/fuzz/README.md): a clang build of the fuzz targets,
# each fuzzed ~25 s, two at a time. DCASGD_FUZZ_SECONDS=0 skips it.
if [[ ${DCASGD_FUZZ_SECONDS:-25} != 0 ]]; then
  scripts/fuzz.sh || status=1
fi
exit $status
