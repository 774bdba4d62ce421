#!/usr/bin/env bash
# Container smoke test: a dcasgd-ps shard and a dcasgd-worker in podman
# containers on a podman bridge network train a few steps together.
#
# What it exercises: the runtime-only image variant (docker/Dockerfile
# targets ps-prebuilt / worker-prebuilt, tags dcasgd/{ps,worker}:smoke-test),
# i.e. the release images' runtime stages with the binaries of the build tree
# under test copied in, built by docker/build-images.sh --prebuilt. It does not
# compile the project inside the build stage (a cold full build takes many
# minutes; docker/build-images.sh without --prebuilt does that). Layers are
# cached, so later runs rebuild only what changed.
#
# Checks: image user 10001 and OCI labels; both containers run as uid 10001
# with a read-only root file system, no capabilities and a /tmp tmpfs; the
# worker image has dcasgd-prepare-data on PATH and the Fashion-MNIST files;
# two workers (one on data prepared on the host by dcasgd-prepare-data,
# mounted read-only, one on the prepared copy baked into the image) reach the
# shard by container name, train and exit 0; the shard's /metrics, through a
# published port, counts their pushes; on SIGTERM
# the shard exits 0 and leaves its checkpoint in the mounted volume.
#
# Usage: container_smoke_test.sh DCASGD_PS DCASGD_WORKER DCASGD_PREPARE_DATA
# Exit: 0 pass, 1 fail, 77 skipped (prints "SKIPPED: <reason>") when this
# machine cannot run containers.
set -euo pipefail
# The whole script is one brace group: bash parses it completely before
# running, so editing the file during a (long) run cannot break that run.
{

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
readonly repo
readonly tag=smoke-test
readonly steps=200

skip() { echo "SKIPPED: $*"; exit 77; }
fail() { echo "FAILED: $*" >&2; exit 1; }
log() { echo "container_smoke_test: $*"; }

[[ $# -eq 3 ]] || fail "usage: $0 DCASGD_PS DCASGD_WORKER DCASGD_PREPARE_DATA"
for b in "$@"; do [[ -x "$b" ]] || fail "binary $b missing: build it first"; done

# --- can this machine run containers? -----------------------------------------
if ! command -v podman >/dev/null 2>&1; then
  if [[ $(id -u) -ne 0 ]] && ! sudo -n true 2>/dev/null; then
    skip "podman is not installed, and installing it needs root"
  fi
  "$repo/docker/build-images.sh" --install-only >/dev/null 2>&1 ||
    skip "podman is not installed and could not be installed from apt"
fi
export CONTAINERS_CONF="${CONTAINERS_CONF:-$repo/docker/containers.conf}"
if ! out="$(podman info 2>&1 >/dev/null)"; then
  skip "podman does not work on this machine: $(tail -n 1 <<<"$out")"
fi
if [[ $(id -u) -ne 0 ]] && ! podman image exists debian:bookworm-slim &&
  ! sudo -n true 2>/dev/null; then
  skip "no base image debian:bookworm-slim, and making one (debootstrap) needs root"
fi
"$repo/docker/build-images.sh" --base-only || fail "could not make the base images"
if ! out="$(podman run --rm debian:bookworm-slim true 2>&1)"; then
  skip "podman run fails on this machine: $out"
fi

# --- images (runtime-only variant from the binaries under test) ---------------
work="$(mktemp -d)"
net="dcasgd-smoke-$$"
ps_name="dcasgd-smoke-ps-$$"
worker_name="dcasgd-smoke-worker-$$"
worker2_name="dcasgd-smoke-worker2-$$"
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  podman rm -f -t 0 "$ps_name" "$worker_name" "$worker2_name" >/dev/null 2>&1 || true
  podman network rm -f "$net" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
dump_logs() {
  for c in "$ps_name" "$worker_name" "$worker2_name"; do
    echo "--- podman logs $c" >&2
    podman logs "$c" >&2 2>&1 || true
  done
}

mkdir "$work/bin"
install -m 0755 "$1" "$work/bin/dcasgd-ps"
install -m 0755 "$2" "$work/bin/dcasgd-worker"
install -m 0755 "$3" "$work/bin/dcasgd-prepare-data"
start=$SECONDS
"$repo/docker/build-images.sh" --prebuilt "$work/bin" --tag "$tag" >"$work/build.log" 2>&1 || {
  tail -n 40 "$work/build.log" >&2
  fail "building the images failed"
}
log "images built in $((SECONDS - start)) s"
ps_image="dcasgd/ps:$tag"
worker_image="dcasgd/worker:$tag"

for image in "$ps_image" "$worker_image"; do
  user="$(podman image inspect --format '{{.Config.User}}' "$image")"
  [[ "$user" == 10001:10001 ]] || fail "$image runs as '$user', want 10001:10001"
  for label in title description source version licenses revision; do
    value="$(podman image inspect \
      --format "{{index .Config.Labels \"org.opencontainers.image.$label\"}}" "$image")"
    [[ -n "$value" ]] || fail "$image lacks the label org.opencontainers.image.$label"
  done
done
[[ "$(podman image inspect --format '{{index .Config.Labels "org.opencontainers.image.version"}}' \
  "$ps_image")" == "$tag" ]] || fail "$ps_image: version label is not '$tag'"
[[ "$(podman image inspect --format '{{json .Config.Entrypoint}}' "$ps_image")" == \
  '["/usr/local/bin/dcasgd-ps"]' ]] || fail "$ps_image: entrypoint is not dcasgd-ps"
[[ "$(podman image inspect --format '{{json .Config.Entrypoint}}' "$worker_image")" == \
  '["/usr/local/bin/dcasgd-worker"]' ]] || fail "$worker_image: entrypoint is not dcasgd-worker"

# Hardened like the Helm chart's pods: read-only root, no capabilities,
# scratch /tmp.
hardened=(--read-only --tmpfs /tmp --cap-drop=ALL --security-opt=no-new-privileges)
out="$(podman run --rm "${hardened[@]}" --entrypoint sh "$worker_image" -c \
  'id -u; command -v dcasgd-prepare-data; ls /usr/share/datasets/fashion-mnist')" ||
  fail "could not look into $worker_image: $out"
grep -qx 10001 <<<"$out" || fail "worker container does not run as uid 10001: $out"
grep -qx /usr/local/bin/dcasgd-prepare-data <<<"$out" ||
  fail "dcasgd-prepare-data is not on PATH in $worker_image: $out"
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz \
  t10k-labels-idx1-ubyte.gz manifest.json train test; do
  grep -qx "$f" <<<"$out" || fail "$worker_image lacks /usr/share/datasets/fashion-mnist/$f"
done

# --- data (host-built dcasgd-prepare-data), checkpoint volume -----------------
"$3" --dest="$work/data" --shards=60 >"$work/prepare.log" 2>&1 || {
  cat "$work/prepare.log" >&2
  fail "dcasgd-prepare-data failed"
}
mkdir "$work/checkpoints"
# uid 10001 in the containers must read the data and write the checkpoints.
chmod 0755 "$work"
chmod -R a+rX "$work/data"
chmod 0777 "$work/checkpoints"

# --- run a shard and a worker -------------------------------------------------
podman network create "$net" >/dev/null || fail "podman network create failed"
podman run -d --name "$ps_name" --network "$net" "${hardened[@]}" \
  -p 127.0.0.1::9100 -v "$work/checkpoints:/var/lib/dcasgd/checkpoints" \
  "$ps_image" --shard_index=0 --shard_count=1 --update_rule=dcasgd-a --lr=0.05 \
  --checkpoint_dir=/var/lib/dcasgd/checkpoints --checkpoint_interval_seconds=3600 \
  >/dev/null || fail "could not start the shard container"
metrics_hostport="$(podman port "$ps_name" 9100/tcp | head -n 1)"
[[ -n "$metrics_hostport" ]] || { dump_logs; fail "the shard's metrics port is not published"; }
metrics_url="http://$metrics_hostport/metrics"

fetch() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsS --max-time 5 "$1"
  else
    python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"
  fi
}
# Sum of a counter's samples (all label sets); empty if absent.
counter() { fetch "$metrics_url" | awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $NF; f = 1 } END { if (f) print s }'; }

deadline=$((SECONDS + 60))
until fetch "$metrics_url" >/dev/null 2>&1; do
  if [[ "$(podman inspect --format '{{.State.Running}}' "$ps_name")" != true ]]; then
    dump_logs
    fail "the shard container exited"
  fi
  ((SECONDS < deadline)) || { dump_logs; fail "no /metrics at $metrics_url within 60 s"; }
  sleep 0.5
done
pushes_before="$(counter dcasgd_ps_pushes_total)" || true
[[ "${pushes_before:-x}" == 0 ]] ||
  { dump_logs; fail "dcasgd_ps_pushes_total before training is '${pushes_before}', want 0"; }

# Two workers train asynchronously, finding the shard by container name
# (podman network DNS): one on the host-prepared data mounted read-only, one
# on the copy baked into the image (both 60 shards of the same data, so the
# coordinator on the shard hands out the same data shards to both).
start_worker() {  # $1 = container name, $2 = data dir, rest = podman run options
  local name="$1" data="$2"
  shift 2
  podman run -d --name "$name" --network "$net" "${hardened[@]}" "$@" "$worker_image" \
    --role=train --ps_addresses="$ps_name:7000" --data="$data" --model=softmax \
    --batch_size=32 --max_steps=$steps --log_every=50 --worker_name="$name" \
    >/dev/null || fail "could not start the worker container $name"
}
start_worker "$worker_name" /data -v "$work/data:/data:ro"
start_worker "$worker2_name" /usr/share/datasets/fashion-mnist
for w in "$worker_name" "$worker2_name"; do
  worker_exit="$(timeout 300 podman wait "$w")" ||
    { dump_logs; fail "worker $w did not finish $steps steps within 300 s"; }
  [[ "$worker_exit" == 0 ]] || { dump_logs; fail "worker $w exited with $worker_exit"; }
  grep -q "left after $steps steps" <<<"$(podman logs "$w" 2>&1)" ||
    { dump_logs; fail "worker $w did not report $steps steps"; }
done

pushes="$(counter dcasgd_ps_pushes_total)" || true
log "shard counted ${pushes:-no} pushes after 2 workers x $steps steps"
if [[ -z "$pushes" ]] || ! awk -v p="$pushes" -v n=$((2 * steps)) 'BEGIN { exit !(p >= n) }'; then
  dump_logs
  fail "dcasgd_ps_pushes_total is '${pushes}' after training, want >= $((2 * steps))"
fi

# Graceful stop: SIGTERM -> final checkpoint into the volume, exit 0.
podman stop -t 30 "$ps_name" >/dev/null
ps_exit="$(podman inspect --format '{{.State.ExitCode}}' "$ps_name")"
[[ "$ps_exit" == 0 ]] || { dump_logs; fail "the shard exited with $ps_exit on SIGTERM"; }
[[ -s "$work/checkpoints/shard-0.ckpt" ]] ||
  { dump_logs; ls -la "$work/checkpoints" >&2; fail "no checkpoint shard-0.ckpt after SIGTERM"; }
owner="$(stat -c %u "$work/checkpoints/shard-0.ckpt")"
[[ "$owner" == 10001 || $(id -u) -ne 0 ]] ||
  fail "the checkpoint is owned by uid $owner, want 10001 (the image user)"

log "PASSED: $pushes pushes, checkpoint $(stat -c %s "$work/checkpoints/shard-0.ckpt") bytes"
exit
}
