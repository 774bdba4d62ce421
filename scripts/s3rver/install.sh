#!/usr/bin/env bash
# Installs the S3 test server (@20minutes/s3rver, pinned in package.json and
# package-lock.json) into scripts/s3rver/node_modules. Idempotent: does
# nothing when the pinned version is already installed.
# Usage: scripts/s3rver/install.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

want="5.0.0"
have_file="node_modules/@20minutes/s3rver/package.json"
if [[ -f "$have_file" ]] &&
   node -e "process.exit(require('./$have_file').version === '$want' ? 0 : 1)" 2>/dev/null; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "s3rver/install.sh: npm not found; run scripts/install-deps.sh test first" >&2
  exit 1
fi
echo "s3rver/install.sh: installing @20minutes/s3rver@$want" >&2
# The package declares node >= 24 but runs on node 20; the engine warning is
# expected.
if [[ -f package-lock.json ]]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi
