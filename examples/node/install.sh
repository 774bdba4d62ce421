#!/usr/bin/env bash
# Installs the Node.js example's packages (@grpc/grpc-js, @grpc/proto-loader,
# pinned in package.json and package-lock.json) into
# examples/node/node_modules from the npm registry. Idempotent.
# Usage: examples/node/install.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
if [[ -f node_modules/@grpc/grpc-js/package.json && -f node_modules/@grpc/proto-loader/package.json ]] &&
   node -e "process.exit(require('./node_modules/@grpc/grpc-js/package.json').version ===
     require('./package.json').dependencies['@grpc/grpc-js'] ? 0 : 1)" 2>/dev/null; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "examples/node/install.sh: npm not found; run scripts/install-deps.sh test first" >&2
  exit 1
fi
echo "examples/node/install.sh: installing @grpc/grpc-js and @grpc/proto-loader" >&2
npm ci --no-audit --no-fund --loglevel=error
