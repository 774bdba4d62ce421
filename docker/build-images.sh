#!/usr/bin/env bash
# Builds the container images dcasgd/ps and dcasgd/worker with podman (and,
# on request, dcasgd/worker-torch: the worker with LibTorch).
#
# Steps (each one skipped when already done, so running it again is cheap):
#   1. installs podman and its network stack from apt if missing
#      (scripts/install-deps.sh containers: podman, buildah, runc,
#      debootstrap, netavark, aardvark-dns, iptables);
#   2. points CONTAINERS_CONF at docker/containers.conf (runc, no default
#      ulimits) unless the caller set CONTAINERS_CONF;
#   3. makes the base images debian:bookworm-slim and debian:bookworm with
#      debootstrap from the Debian mirror apt already uses (no registry is
#      needed); the root file system tarball is cached in
#      $DCASGD_CONTAINER_CACHE (default .cache/containers);
#   4. builds the images from docker/Dockerfile (the build stage compiles the
#      project) with a snapshot of the whole source tree as the context
#      (.dockerignore filters it). Layers are cached; the compile step uses
#      the host's ccache directory (bind-mounted), so after a host build of
#      the same sources (scripts/test.sh) it is mostly cache hits.
#
# Usage: docker/build-images.sh [options]
#   --tag TAG          image tag (default: the project version from CMakeLists.txt);
#                      the default tag also gets :latest
#   --only ps|worker|worker-torch   build one image
#   --torch            also build dcasgd/worker-torch (the worker with LibTorch
#                      for --model=torchscript:PATH; about 0.8 GB larger than
#                      dcasgd/worker, so not built by default)
#   --jobs N           compile jobs in the build stage (default 2)
#   --ccache DIR       host ccache directory to compile with (default: the
#                      one `ccache -k cache_dir` names, if ccache is
#                      installed; "none": the builder's own cache mount)
#   --refresh          re-run every build step (no layer cache) but compile
#                      with ccache: what a new machine pays after its host build
#   --no-cache         rebuild every layer without ccache (a cold build)
#   --base-only        stop after step 3
#   --install-only     stop after step 1 (exit 0 when podman is usable)
# Environment: DCASGD_IMAGE_SOURCE (org.opencontainers.image.source; default
# the git remote "origin", if any), DCASGD_CONTAINER_CACHE.
set -euo pipefail
# The whole script is one brace group: bash parses it completely before
# running, so editing the file during a (long) run cannot break that run.
{

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly repo
version_default="$(sed -n 's/^project(dcasgd VERSION \([0-9.]*\).*/\1/p' \
  "$repo/CMakeLists.txt")"
readonly version_default

tag="$version_default"
only=""
ccache_dir=""
jobs=2
stop_after=""
no_cache=()
torch=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --ccache) ccache_dir="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    --torch) torch=1; shift ;;
    --jobs) jobs="$2"; shift 2 ;;
    --refresh) no_cache=(--build-arg "REFRESH=$(date +%s)"); shift ;;
    --no-cache) no_cache=(--build-arg "REFRESH=$(date +%s)" --build-arg USE_CCACHE=0)
                ccache_dir=none; shift ;;
    --base-only) stop_after=base; shift ;;
    --install-only) stop_after=install; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "build-images: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$only" in
  ""|ps|worker|worker-torch) ;;
  *) echo "build-images: --only ps|worker|worker-torch" >&2; exit 2 ;;
esac

log() { echo "build-images: $*" >&2; }
sudo_cmd() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

# --- 1. tools ---------------------------------------------------------------
# The package list (with why each is needed) is scripts/deps/containers.txt.
"$repo/scripts/install-deps.sh" containers

# --- 2. podman configuration ------------------------------------------------
export CONTAINERS_CONF="${CONTAINERS_CONF:-$repo/docker/containers.conf}"
if [[ "$stop_after" == install ]]; then
  podman --version >/dev/null
  exit 0
fi

# --- 3. base images ---------------------------------------------------------
# The Debian mirror (and security mirror) apt uses on this host, from the
# one-line or deb822 source lists; deb.debian.org when none is found.
apt_mirror() {  # $1 = suite
  local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
  local f
  for f in "${files[@]}"; do
    [[ -f "$f" ]] || continue
    if [[ "$f" == *.sources ]]; then
      # deb822 stanzas: print the first URI of a stanza whose Suites has $1.
      awk -v suite="$1" '
        function flush() { if (uri != "" && found) { print uri; exit } uri = ""; found = 0 }
        /^[[:space:]]*$/ { flush(); next }
        tolower($1) == "uris:" { uri = $2 }
        tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) found = 1 }
        END { flush() }' "$f"
    else
      awk -v suite="$1" '$1 == "deb" {
          i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
          if ($(i + 1) == suite) { print $i; exit } }' "$f"
    fi
  done | head -n 1
}

make_rootfs_tar() {  # $1 = output tarball
  local mirror security rootfs
  mirror="$(apt_mirror bookworm)"; mirror="${mirror:-http://deb.debian.org/debian}"
  security="$(apt_mirror bookworm-security)"
  security="${security:-http://deb.debian.org/debian-security}"
  rootfs="$(mktemp -d)"
  log "debootstrap --variant=minbase bookworm from $mirror (about a minute)"
  sudo_cmd debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    tail -n 20 "$rootfs.log" >&2
    return 1
  }
  # apt sources like the official image: the release, its updates and security.
  sudo_cmd rm -f "$rootfs/etc/apt/sources.list"
  sudo_cmd tee "$rootfs/etc/apt/sources.list.d/debian.sources" >/dev/null <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # Slim like debian:bookworm-slim: no manuals, docs (copyrights kept) or
  # translations from packages installed later; no apt caches in layers.
  sudo_cmd tee "$rootfs/etc/dpkg/dpkg.cfg.d/slim" >/dev/null <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  sudo_cmd tee "$rootfs/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Binary::apt::APT::Keep-Downloaded-Packages "false";
Acquire::GzipIndexes "true";
EOF
  sudo_cmd sh -c "rm -rf '$rootfs'/var/lib/apt/lists/* '$rootfs'/var/cache/apt/*.bin \
    '$rootfs'/var/cache/apt/archives/*.deb '$rootfs'/var/log/*.log '$rootfs'/etc/hostname \
    '$rootfs'/etc/resolv.conf; : > '$rootfs'/etc/machine-id 2>/dev/null || true"
  sudo_cmd tar --numeric-owner -C "$rootfs" -cf "$1.partial" .
  mv "$1.partial" "$1"
  sudo_cmd rm -rf "$rootfs" "$rootfs.log"
}

cache="${DCASGD_CONTAINER_CACHE:-$repo/.cache/containers}"
if ! podman image exists debian:bookworm-slim || ! podman image exists debian:bookworm; then
  mkdir -p "$cache"
  tarball="$cache/debian-bookworm-minbase.tar"
  if [[ ! -s "$tarball" ]]; then make_rootfs_tar "$tarball"; fi
  log "importing $tarball as debian:bookworm-slim and debian:bookworm"
  image_id="$(podman import --quiet "$tarball" debian:bookworm-slim)"
  podman tag "$image_id" debian:bookworm
fi
if [[ "$stop_after" == base ]]; then exit 0; fi

# --- 4. images --------------------------------------------------------------
source_url="${DCASGD_IMAGE_SOURCE:-$(git -C "$repo" remote get-url origin 2>/dev/null || true)}"
revision="$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)"
if [[ "$revision" != unknown ]] && ! git -C "$repo" diff --quiet HEAD; then
  revision="$revision-dirty"  # built from uncommitted sources
fi
# The compile step's ccache: the host's directory, bind-mounted for the
# build (root in the build writes as root on the host, which is who runs
# this). Objects of a host build of the same sources are hits (see the build
# stage in docker/Dockerfile).
if [[ -z "$ccache_dir" ]] && command -v ccache >/dev/null 2>&1; then
  ccache_dir="$(ccache -k cache_dir 2>/dev/null || true)"
fi
volumes=()
if [[ -n "$ccache_dir" && "$ccache_dir" != none ]]; then
  mkdir -p "$ccache_dir"
  volumes=(-v "$ccache_dir:/ccache-host:rw")
fi
common=(--pull=never --isolation chroot --layers "${no_cache[@]}" "${volumes[@]}")
# Per-build labels are set on the built image afterwards (buildah config +
# commit: a new image config on the same layers). Given to podman build
# (--label, or LABEL with build args) they would come from the layer cache
# with an earlier build's values when nothing else changed.
labels=(--label "org.opencontainers.image.version=$tag"
        --label "org.opencontainers.image.revision=$revision"
        --label "org.opencontainers.image.source=${source_url:-unknown}"
        --label "org.opencontainers.image.licenses=NOASSERTION")

targets=(ps worker)
if [[ $torch == 1 ]]; then targets+=(worker-torch); fi
if [[ -n "$only" ]]; then targets=("$only"); fi
extra_tags=()
if [[ "$tag" == "$version_default" ]]; then extra_tags=(latest); fi

# Both images are built from one snapshot of the tree, so they hold the same
# sources even if the tree changes meanwhile; unchanged files keep the build
# stage's layers cached (buildah compares content). Build outputs, caches and
# node_modules are not copied at all (they can be large); .dockerignore
# filters the rest.
context="$(mktemp -d)"
iidfile="$(mktemp)"
trap 'rm -rf "$context" "$iidfile"' EXIT
tar -C "$repo" --exclude=./.git --exclude=./build --exclude=./.cache \
  --exclude=node_modules --exclude=__pycache__ -cf - . | tar -C "$context" -xf -
for t in "${targets[@]}"; do
  log "building dcasgd/$t:$tag"
  start=$SECONDS
  podman build "${common[@]}" --build-arg "JOBS=$jobs" --target "$t" \
    --iidfile "$iidfile" -f "$context/docker/Dockerfile" "$context"
  container="$(buildah from --pull=never --quiet "$(cat "$iidfile")")"
  buildah config "${labels[@]}" "$container"
  buildah commit --quiet --rm "$container" "dcasgd/$t:$tag" >/dev/null
  for x in "${extra_tags[@]}"; do podman tag "dcasgd/$t:$tag" "dcasgd/$t:$x"; done
  log "dcasgd/$t:$tag built in $((SECONDS - start)) s"
done
podman image ls --filter "reference=dcasgd/*:$tag" >&2
exit
}
