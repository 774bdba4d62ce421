#!/usr/bin/env bash
# Installs the Debian 12 packages dcasgd needs to build, test and run.
# Idempotent: does nothing when every package is already present.
# Usage: scripts/install-deps.sh [GROUP...]   (default: all)
# Groups (package lists in scripts/deps/GROUP.txt):
#   build       compile dcasgd
#   test        build + what the tests need (data set, Prometheus, Python
#               client runtime, Node.js and npm)
#   torch       PyTorch for dcasgd.torch and its tests, LibTorch for the
#               worker's TorchScript model (-DDCASGD_WITH_TORCH=ON)
#   containers  podman and its network stack (container images and their test)
#   all         every group above (what scripts/test.sh installs)
set -euo pipefail
deps="$(cd "$(dirname "${BASH_SOURCE[0]}")/deps" && pwd)"

list() { grep -v '^[[:space:]]*#' "$deps/$1.txt" | tr -s '[:space:]' '\n' | sed '/^$/d'; }

groups=("$@")
if [[ ${#groups[@]} -eq 0 ]]; then groups=(all); fi
pkgs=()
node=0
for g in "${groups[@]}"; do
  case "$g" in
    build) mapfile -t -O "${#pkgs[@]}" pkgs < <(list build) ;;
    test) mapfile -t -O "${#pkgs[@]}" pkgs < <(list build; list test); node=1 ;;
    torch) mapfile -t -O "${#pkgs[@]}" pkgs < <(list torch) ;;
    containers) mapfile -t -O "${#pkgs[@]}" pkgs < <(list containers) ;;
    all) mapfile -t -O "${#pkgs[@]}" pkgs < <(list build; list test; list torch; list containers)
         node=1 ;;
    *) echo "install-deps: unknown group '$g' (build, test, torch, containers, all)" >&2
       exit 2 ;;
  esac
done
# Node.js and npm (S3 test server, helm, the Node.js example): Debian's
# packages unless a Node.js that ships npm (e.g. nodesource) is installed.
if [[ $node == 1 ]] && ! command -v npm >/dev/null 2>&1; then pkgs+=(nodejs npm); fi

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
