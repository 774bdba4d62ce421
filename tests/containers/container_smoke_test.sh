#!/usr/bin/env bash
# Container smoke test: the release images, built from docker/Dockerfile by
# docker/build-images.sh, run a small job on a podman network the way the
# Helm chart runs it.
#
# What it exercises: dcasgd/ps and dcasgd/worker (tag smoke-test) built by
# docker/build-images.sh, the full multi-stage build: its layers are cached
# and its compile step uses the host's ccache, so after the host build of the
# same sources (scripts/test.sh) it costs seconds, not a cold compile.
#
# Checks: image user 10001, OCI labels and entrypoints; every container runs
# as uid 10001 with a read-only root file system, no capabilities and a /tmp
# tmpfs; the worker image has dcasgd-prepare-data on PATH and the Fashion-MNIST
# files. Two shards run as the chart's StatefulSet names them, reachable by
# the chart's DNS names (dcasgd-ps-<i>.dcasgd-ps-headless.default.svc.
# cluster.local, network aliases on a podman network with DNS); the worker
# image's dcasgd-prepare-data writes the data set to the S3 test server
# (s3rver, SigV4), and two workers find the shards through the chart's
# --ps_address_template: one reads its data from S3, one the copy baked into
# the image. Both train and exit 0; the shards' /metrics (published port)
# count their pushes; on SIGTERM shard 0 exits 0 and leaves its checkpoint in
# the mounted volume. As the chart does by default, everything runs with TLS
# and bearer tokens (certificates made by tests/security/make-certs.sh with
# the openssl CLI, mounted read-only as the chart mounts its Secrets): a
# plaintext client gets no answer, a client without a token is refused.
#
# Usage: container_smoke_test.sh DCASGD_PREPARE_DATA
#   (the host-built dcasgd-prepare-data is not used in a container: it only
#   proves the host build exists, so the image build finds a warm ccache)
# Exit: 0 pass, 1 fail, 77 skipped (prints "SKIPPED: <reason>") only when
# this machine cannot run containers at all (podman cannot be installed, or
# cannot start a container); ctest lists the test as skipped in its summary.
set -euo pipefail
# The whole script is one brace group: bash parses it completely before
# running, so editing the file during a (long) run cannot break that run.
{

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
readonly repo
readonly tag=smoke-test
readonly steps=150
readonly bucket=dcasgd-smoke

skip() { echo "SKIPPED: $*"; exit 77; }
fail() { echo "FAILED: $*" >&2; exit 1; }
log() { echo "container_smoke_test: $*"; }

[[ $# -eq 1 ]] || fail "usage: $0 DCASGD_PREPARE_DATA"
[[ -x "$1" ]] || fail "binary $1 missing: build it first"
TMPDIR_LOG="$(mktemp)"
trap 'rm -f "$TMPDIR_LOG"' EXIT

# --- can this machine run containers? -----------------------------------------
# podman and its network stack (scripts/deps/containers.txt); scripts/test.sh
# installs them already, this covers a direct run. Idempotent.
if [[ $(id -u) -eq 0 ]] || sudo -n true 2>/dev/null; then
  "$repo/scripts/install-deps.sh" containers >"$TMPDIR_LOG" 2>&1 ||
    skip "podman could not be installed from apt: $(tail -n 1 "$TMPDIR_LOG")"
elif ! command -v podman >/dev/null 2>&1; then
  skip "podman is not installed, and installing it needs root"
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
# A container on the default bridge network (netavark) must start; a kernel
# without the namespaces it needs is the one reason to skip.
if ! out="$(podman run --rm debian:bookworm-slim true 2>&1)"; then
  skip "podman run fails on this machine: $out"
fi

# --- images (the full build of docker/Dockerfile) --------------------------------
work="$(mktemp -d)"
net="dcasgd-smoke-$$"
ps_names=("dcasgd-smoke-$$-ps-0" "dcasgd-smoke-$$-ps-1")
worker_name="dcasgd-smoke-$$-worker-s3"
worker2_name="dcasgd-smoke-$$-worker-baked"
prep_name="dcasgd-smoke-$$-prepare"
s3rver_pid=""
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  podman rm -f -t 0 "${ps_names[@]}" "$worker_name" "$worker2_name" "$prep_name" \
    >/dev/null 2>&1 || true
  podman network rm -f "$net" >/dev/null 2>&1 || true
  if [[ -n "$s3rver_pid" ]]; then kill "$s3rver_pid" 2>/dev/null || true; fi
  rm -rf "$work" "$TMPDIR_LOG"
}
trap cleanup EXIT
dump_logs() {
  for c in "${ps_names[@]}" "$prep_name" "$worker_name" "$worker2_name"; do
    echo "--- podman logs $c" >&2
    podman logs "$c" >&2 2>&1 || true
  done
  if [[ -f "$work/s3rver.log" ]]; then
    echo "--- s3rver" >&2
    tail -n 20 "$work/s3rver.log" >&2
  fi
}

start=$SECONDS
"$repo/docker/build-images.sh" --tag "$tag" >"$work/build.log" 2>&1 || {
  tail -n 40 "$work/build.log" >&2
  fail "building the images failed"
}
log "images built in $((SECONDS - start)) s ($(grep -c 'Using cache' "$work/build.log" || true) cached steps)"
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
# The witness of replicated shards ships in the shard image
# (services/witness/README.md) and starts there with its libraries.
out="$(podman run --rm "${hardened[@]}" --entrypoint dcasgd-witness "$ps_image" --help 2>&1)" ||
  fail "dcasgd-witness does not run in $ps_image: $out"
grep -q -- '--state_dir' <<<"$out" || fail "dcasgd-witness --help in $ps_image: $out"

# --- the shards, as the chart's StatefulSet names them -----------------------
# The chart (deploy/helm/dcasgd, release "dcasgd" in namespace "default")
# gives shard i the DNS name below and the workers the same template
# (templates/_helpers.tpl, dcasgd.psAddressTemplate).
readonly shard_count=2
readonly dns_template="dcasgd-ps-{i}.dcasgd-ps-headless.default.svc.cluster.local"
mkdir "$work/checkpoints"
chmod 0755 "$work"
chmod 0777 "$work/checkpoints"  # uid 10001 in the container writes there
# TLS and tokens as the chart's Secrets hold them: the shards' certificate
# (tls.crt, tls.key, ca.crt) and the token file; the clients' CA and tokens.
"$repo/tests/security/make-certs.sh" "$work/certs" || fail "making certificates failed"
mkdir "$work/tls" "$work/auth" "$work/client-tls" "$work/worker-auth"
cp "$work/certs/server.pem" "$work/tls/tls.crt"
cp "$work/certs/server.key" "$work/tls/tls.key"
cp "$work/certs/ca.pem" "$work/tls/ca.crt"
cp "$work/certs/ca.pem" "$work/client-tls/ca.crt"
worker_token="worker-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
reader_token="reader-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s worker smoke-workers\n%s reader smoke-reader\n' "$worker_token" "$reader_token" \
  >"$work/auth/tokens"
printf '%s\n' "$worker_token" >"$work/worker-auth/token"
chmod -R a+rX "$work/tls" "$work/auth" "$work/client-tls" "$work/worker-auth"
tls_mounts=(-v "$work/tls:/etc/dcasgd/tls:ro" -v "$work/auth:/etc/dcasgd/auth:ro")
client_mounts=(-v "$work/client-tls:/etc/dcasgd/tls:ro" -v "$work/worker-auth:/etc/dcasgd/auth:ro")
client_flags=(--tls_ca=/etc/dcasgd/tls/ca.crt --auth_token_file=/etc/dcasgd/auth/token)

podman network create "$net" >/dev/null || fail "podman network create failed"
for i in $(seq 0 $((shard_count - 1))); do
  dns="${dns_template//\{i\}/$i}"
  podman run -d --name "${ps_names[$i]}" --network "$net" \
    --network-alias "$dns" --network-alias "dcasgd-ps-$i" "${hardened[@]}" \
    -p 127.0.0.1::9100 -p 127.0.0.1::7000 -v "$work/checkpoints:/var/lib/dcasgd/checkpoints" \
    "${tls_mounts[@]}" \
    "$ps_image" --shard_index="$i" --shard_count=$shard_count --update_rule=dcasgd-a \
    --lr=0.05 --checkpoint_dir=/var/lib/dcasgd/checkpoints --checkpoint_interval_seconds=3600 \
    --tls_cert=/etc/dcasgd/tls/tls.crt --tls_key=/etc/dcasgd/tls/tls.key \
    --auth_tokens_file=/etc/dcasgd/auth/tokens \
    >/dev/null || fail "could not start shard container $i"
done

fetch() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsS --max-time 5 "$1"
  else
    python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"
  fi
}
metrics_url() { echo "http://$(podman port "${ps_names[$1]}" 9100/tcp | head -n 1)/metrics"; }
# Sum of a counter's samples (all label sets) on shard $2; empty if absent.
counter() { fetch "$(metrics_url "$2")" | awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $NF; f = 1 } END { if (f) print s }'; }

for i in $(seq 0 $((shard_count - 1))); do
  deadline=$((SECONDS + 60))
  until fetch "$(metrics_url "$i")" >/dev/null 2>&1; do
    if [[ "$(podman inspect --format '{{.State.Running}}' "${ps_names[$i]}")" != true ]]; then
      dump_logs
      fail "shard container $i exited"
    fi
    ((SECONDS < deadline)) || { dump_logs; fail "no /metrics from shard $i within 60 s"; }
    sleep 0.5
  done
  pushes_before="$(counter dcasgd_ps_pushes_total "$i")" || true
  [[ "${pushes_before:-x}" == 0 ]] ||
    { dump_logs; fail "shard $i: dcasgd_ps_pushes_total before training is '${pushes_before}'"; }
done

# TLS and tokens are on: the published gRPC port of shard 0 answers a
# plaintext health check with nothing, a TLS one (the chart's name verified)
# with SERVING, and a TLS status call without a token with UNAUTHENTICATED.
grpc_addr="$(podman port "${ps_names[0]}" 7000/tcp | head -n 1)"
grep -q "serving without" <<<"$(podman logs "${ps_names[0]}" 2>&1)" &&
  { dump_logs; fail "shard 0 says it serves without TLS or authentication"; }
PYTHONPATH="$repo/clients/python" /usr/bin/python3 - "$grpc_addr" "$work/certs/ca.pem" \
  "${dns_template//\{i\}/0}" <<'PY' || { dump_logs; fail "the shard's TLS and token checks"; }
import sys
import dcasgd
address, ca, name = sys.argv[1:4]
try:
    dcasgd.health_check(address, timeout=3, credentials=dcasgd.Credentials(env={}))
    sys.exit("a plaintext health check was answered")
except dcasgd.Error as error:
    assert error.code.name == "UNAVAILABLE", error
tls = dcasgd.Credentials(tls_ca=ca, tls_server_name=name, env={})
assert dcasgd.health_check(address, credentials=tls) == "SERVING"
with dcasgd.Client([address], None, credentials=tls, max_attempts=1) as client:
    try:
        client.status()
        sys.exit("a status call without a token was answered")
    except dcasgd.Error as error:
        assert error.code.name == "UNAUTHENTICATED", error
PY

# --- the S3 test server, reachable from the network -----------------------------
# s3rver runs on the host, bound to the podman network's gateway address
# (an address of this machine on the bridge the network made), where the
# containers reach it; nothing listens beyond this machine.
gateway="$(podman network inspect "$net" --format '{{range .Subnets}}{{.Gateway}}{{end}}')"
[[ -n "$gateway" ]] || fail "podman network $net has no gateway address"
[[ -d "$repo/scripts/s3rver/node_modules" ]] || "$repo/scripts/s3rver/install.sh" >/dev/null ||
  fail "could not install the S3 test server (scripts/s3rver/install.sh)"
s3_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir "$work/s3"
node --openssl-legacy-provider "$repo/scripts/s3rver/start.js" -d "$work/s3" -a "$gateway" \
  -p "$s3_port" --configure-bucket "$bucket" >"$work/s3rver.log" 2>&1 &
s3rver_pid=$!
s3_endpoint="http://$gateway:$s3_port"
deadline=$((SECONDS + 30))
# Any HTTP answer (403 without a signature) means it is up.
until python3 -c 'import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=1)
except urllib.error.HTTPError:
    pass' "$s3_endpoint/" 2>/dev/null; do
  kill -0 "$s3rver_pid" 2>/dev/null || { dump_logs; fail "s3rver exited"; }
  ((SECONDS < deadline)) || { dump_logs; fail "s3rver did not answer at $s3_endpoint"; }
  sleep 0.2
done
s3_env=(-e AWS_ACCESS_KEY_ID=S3RVER -e AWS_SECRET_ACCESS_KEY=S3RVER -e AWS_REGION=us-east-1
        -e "AWS_ENDPOINT_URL_S3=$s3_endpoint")

# The worker image's dcasgd-prepare-data writes the data set to S3, as the
# chart's data-prep Job does (60 shards, like the baked-in copy, so both
# workers below agree with the coordinator on the job's data shard count).
podman run --name "$prep_name" --network "$net" "${hardened[@]}" "${s3_env[@]}" \
  --entrypoint dcasgd-prepare-data "$worker_image" --dest="s3://$bucket/fashion-mnist" \
  --shards=60 >"$work/prepare.log" 2>&1 ||
  { cat "$work/prepare.log" >&2; dump_logs; fail "dcasgd-prepare-data to S3 failed"; }
[[ -s "$work/s3/$bucket/fashion-mnist/manifest.json._S3rver_object" ||
   -n "$(find "$work/s3" -path '*fashion-mnist/manifest.json*' -print -quit)" ]] ||
  { ls -R "$work/s3" | head -n 20 >&2; fail "no manifest.json in the S3 bucket"; }

# --- two workers, through the chart's address template --------------------------
start_worker() {  # $1 = container name, $2 = data, rest = podman run options
  local name="$1" data="$2"
  shift 2
  podman run -d --name "$name" --network "$net" "${hardened[@]}" "${client_mounts[@]}" "$@" \
    "$worker_image" "${client_flags[@]}" \
    --role=train --ps_address_template="$dns_template:7000" --shard_count=$shard_count \
    --data="$data" --model=softmax --batch_size=32 --max_steps=$steps --log_every=50 \
    --worker_name="$name" >/dev/null || fail "could not start the worker container $name"
}
start_worker "$worker_name" "s3://$bucket/fashion-mnist" "${s3_env[@]}"
start_worker "$worker2_name" /usr/share/datasets/fashion-mnist
for w in "$worker_name" "$worker2_name"; do
  worker_exit="$(timeout 300 podman wait "$w")" ||
    { dump_logs; fail "worker $w did not finish $steps steps within 300 s"; }
  [[ "$worker_exit" == 0 ]] || { dump_logs; fail "worker $w exited with $worker_exit"; }
  grep -q "left after $steps steps" <<<"$(podman logs "$w" 2>&1)" ||
    { dump_logs; fail "worker $w did not report $steps steps"; }
done
grep -q "training data shards" <<<"$(podman logs "$worker_name" 2>&1)" ||
  { dump_logs; fail "the S3 worker did not list its data shards"; }

for i in $(seq 0 $((shard_count - 1))); do
  pushes="$(counter dcasgd_ps_pushes_total "$i")" || true
  log "shard $i counted ${pushes:-no} pushes after 2 workers x $steps steps"
  if [[ -z "$pushes" ]] || ! awk -v p="$pushes" -v n=$((2 * steps)) 'BEGIN { exit !(p >= n) }'; then
    dump_logs
    fail "shard $i: dcasgd_ps_pushes_total is '${pushes}' after training, want >= $((2 * steps))"
  fi
done

# Graceful stop: SIGTERM -> final checkpoint into the volume, exit 0.
podman stop -t 30 "${ps_names[0]}" >/dev/null
ps_exit="$(podman inspect --format '{{.State.ExitCode}}' "${ps_names[0]}")"
[[ "$ps_exit" == 0 ]] || { dump_logs; fail "shard 0 exited with $ps_exit on SIGTERM"; }
[[ -s "$work/checkpoints/shard-0.ckpt" ]] ||
  { dump_logs; ls -la "$work/checkpoints" >&2; fail "no checkpoint shard-0.ckpt after SIGTERM"; }
owner="$(stat -c %u "$work/checkpoints/shard-0.ckpt")"
[[ "$owner" == 10001 || $(id -u) -ne 0 ]] ||
  fail "the checkpoint is owned by uid $owner, want 10001 (the image user)"

log "PASSED: images from docker/Dockerfile, shards by the chart's DNS names with TLS and tokens, data from S3; checkpoint $(stat -c %s "$work/checkpoints/shard-0.ckpt") bytes"
exit
}
