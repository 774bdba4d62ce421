#!/usr/bin/env bash
# Fails (exit 1) when any tracked C++ file differs from what clang-format makes
# of it with the committed .clang-format, and shows the difference. Registered
# with ctest as format.clang_format; fix with
#   git ls-files '*.cc' '*.h' '*.inc' | xargs clang-format -i
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v clang-format >/dev/null; then
  echo "check-format: clang-format is missing (scripts/install-deps.sh installs it)" >&2
  exit 1
fi
mapfile -t files < <(git ls-files '*.cc' '*.h' '*.inc')
if [[ ${#files[@]} -eq 0 ]]; then
  echo "check-format: no C++ files found (not a git checkout?)" >&2
  exit 1
fi
bad=0
for f in "${files[@]}"; do
  if ! diff -u --label "$f" --label "$f (clang-format)" "$f" <(clang-format --style=file "$f"); then
    bad=$((bad + 1))
  fi
done
if [[ $bad -gt 0 ]]; then
  echo "check-format: $bad of ${#files[@]} files are not clang-formatted ($(clang-format --version))" >&2
  exit 1
fi
echo "check-format: ${#files[@]} files clang-formatted"
