#!/usr/bin/env bash
# Runs the chart tests (chart_test.mjs) with node's test runner. The tools
# (helm, kubernetes-models) are installed on first use by
# scripts/tools/install-helm.sh; if that fails the test fails, it never skips.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! command -v node >/dev/null 2>&1; then
  echo "run_chart_test.sh: node not found; run scripts/install-deps.sh test" >&2
  exit 1
fi
if ! "$here/../../scripts/tools/install-helm.sh"; then
  echo "run_chart_test.sh: FAILED: helm/kubernetes-models could not be installed (see above)" >&2
  exit 1
fi
exec node --test --test-reporter=spec "$here/chart_test.mjs"
