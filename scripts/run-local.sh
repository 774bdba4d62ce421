#!/usr/bin/env bash
# The main job on one machine: installs what it needs, builds, prepares the
# Fashion-MNIST data set (from Debian's package) into a local directory, and
# trains with local processes: N parameter shards, M workers and the
# evaluator. Ends with the final test accuracy and where the metrics were.
#
# Usage: scripts/run-local.sh [--rule dcasgd-a|dcasgd-c|asgd] [--sync async|ssgd|ssp]
#          [--shards 2] [--workers 4] [--epochs 5] [--model mlp:256,128|softmax|cnn|cnn:C1,C2,H]
#          [--lr 0.1] [--lambda0 X] [--batch-size 64] [--data DIR|s3://bucket/prefix]
#          [--gap-aware on|off] [--staleness-aware auto|on|off]
#          [--backup-dtype float32|bfloat16|float16] [--wire-dtype float32|bfloat16|float16]
#          [--pipeline-depth auto|0|1|2|3|4] [--replicas 1|2]
# --gap-aware on (the default, async and ssp) damps each stale gradient
# coordinate by how far it moved since the worker pulled, and then uses lr 0.2
# unless --lr is given: the most accurate rule measured at every worker count,
# with no per-count tuning (docs/convergence.md). --staleness-aware auto
# divides the rate by the staleness from 16 workers on when gap-aware damping
# is off (plain DC-ASGD and ASGD there need a rate so small that they barely
# train in a few epochs), and also uses lr 0.2. --backup-dtype keeps each
# worker's backup on the shards in 16 bits (half their memory; float16 also
# sets --max_weight_abs=65504, its range; docs/operations.md). --wire-dtype
# sends gradients and weights between workers and shards in 16 bits (half the
# bytes; float16 also sets --max_weight_abs=65504; docs/api.md).
# --pipeline-depth is the workers' --pipeline_depth: PushPulls in flight while
# the next gradient is computed; auto (the default) is 1 under dcasgd-c and
# dcasgd-a with --sync async, else 0 (docs/algorithm.md, "Pipelined workers").
# --replicas 2 runs each shard as a pair (docs/design.md, "Replicated
# shards"): a witness (dcasgd-witness) and 2N shard processes, members a and b
# of each shard, each with its own port and checkpoint directory; workers and
# the evaluator get both members of each shard ("a|b") and move to the other
# member when one fails. The output says where each member listens.
# Exits non-zero, saying why, when no worker can make progress (e.g. every
# worker diverged). DCASGD_PREBUILT=1 skips installing and building (tests).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

rule=dcasgd-a sync=async shards=2 workers=4 epochs=5 model=mlp:256,128 lr= batch=64
staleness_aware=auto gap_aware=on backup_dtype=float32 wire_dtype=float32 pipeline_depth=auto
replicas=1
lambda0=()
data="$root/.cache/data/fashion-mnist"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rule) rule=$2; shift 2 ;;
    --sync) sync=$2; shift 2 ;;
    --shards) shards=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --lr) lr=$2; shift 2 ;;
    --lambda0) lambda0=(--lambda0="$2"); shift 2 ;;
    --batch-size) batch=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --staleness-aware) staleness_aware=$2; shift 2 ;;
    --gap-aware) gap_aware=$2; shift 2 ;;
    --backup-dtype) backup_dtype=$2; shift 2 ;;
    --wire-dtype) wire_dtype=$2; shift 2 ;;
    --pipeline-depth) pipeline_depth=$2; shift 2 ;;
    --replicas) replicas=$2; shift 2 ;;
    -h|--help) sed -n 2,33p "$0"; exit 0 ;;
    *) echo "run-local: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

case "$gap_aware" in
  on) [[ "$sync" == ssgd ]] && gap_aware=off ;;  # SSGD applies no stale gradient
  off) ;;
  *) echo "run-local: --gap-aware takes on or off" >&2; exit 2 ;;
esac
case "$staleness_aware" in
  auto) if [[ "$sync" == async && "$gap_aware" == off ]] && ((workers >= 16)); then
          staleness_aware=on; else staleness_aware=off; fi ;;
  on|off) ;;
  *) echo "run-local: --staleness-aware takes auto, on or off" >&2; exit 2 ;;
esac
backup_flags=(--backup_dtype="$backup_dtype")
case "$backup_dtype" in
  float32|bfloat16) ;;
  float16) backup_flags+=(--max_weight_abs=65504) ;;  # float16's largest value
  *) echo "run-local: --backup-dtype takes float32, bfloat16 or float16" >&2; exit 2 ;;
esac
case "$wire_dtype" in
  float32|bfloat16) ;;
  float16) [[ "$backup_dtype" == float16 ]] || backup_flags+=(--max_weight_abs=65504) ;;
  *) echo "run-local: --wire-dtype takes float32, bfloat16 or float16" >&2; exit 2 ;;
esac
case "$pipeline_depth" in
  auto|0|1|2|3|4) ;;
  *) echo "run-local: --pipeline-depth takes auto or 0 to 4" >&2; exit 2 ;;
esac
case "$replicas" in
  1|2) ;;
  *) echo "run-local: --replicas takes 1 or 2" >&2; exit 2 ;;
esac
if [[ -z "$lr" ]]; then
  if [[ "$staleness_aware" == on || "$gap_aware" == on ]]; then lr=0.2; else lr=0.1; fi
fi
on_off() { [[ "$1" == on ]] && echo true || echo false; }
sa_flag=(--staleness_aware="$(on_off "$staleness_aware")" --gap_aware="$(on_off "$gap_aware")")

if [[ "${DCASGD_PREBUILT:-}" != 1 ]]; then
  scripts/install-deps.sh test
  export CCACHE_BASEDIR="$root"
  cmake --preset release >/dev/null
  cmake --build --preset release --target dcasgd-ps dcasgd-witness dcasgd-worker dcasgd-prepare-data
fi
bin="$root/build/release/services"

if [[ "$data" != s3://* && ! -f "$data/manifest.json" ]]; then
  echo "== preparing Fashion-MNIST data shards in $data"
  "$bin/worker/data/dcasgd-prepare-data" --dest="$data" --shards=20
fi

run=$(mktemp -d "${TMPDIR:-/tmp}/dcasgd-run.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

wait_file() {  # wait_file FILE PID: polls until FILE exists or PID died
  for _ in $(seq 600); do
    [[ -s "$1" ]] && return 0
    kill -0 "$2" 2>/dev/null || { echo "process $2 died; see $run" >&2; exit 1; }
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2; exit 1
}
port() { awk -v k="$2" '$1 == k {print $2}' "$1"; }

# Decay the learning rate in the last part of training so the final model is
# not a noisy iterate of constant-rate SGD (versions ~ steps per shard).
decay_every=$(( 60000 / batch * epochs / 3 ))
echo "== starting $shards shards (rule $rule, sync $sync, lr $lr, gap-aware damping $gap_aware, staleness-aware rate $staleness_aware), backups in $backup_dtype, wire $wire_dtype, worker pipeline depth $pipeline_depth, logs in $run"
ps_flags=(--metrics_address=127.0.0.1:0 --shard_count="$shards"
  --update_rule="$rule" --sync="$sync" --lr="$lr" "${lambda0[@]}" "${sa_flag[@]}" "${backup_flags[@]}" --lr_schedule=step
  --lr_decay_every="$decay_every" --lr_decay_factor=0.3 --checkpoint_interval_seconds=30)
addresses=()
shard_pids=()
members=()  # each shard process's file names: ps-<i>, or ps-<i>-a and ps-<i>-b
labels=()   # and how the output names it
if ((replicas == 1)); then
  for ((i = 0; i < shards; i++)); do
    "$bin/ps/dcasgd-ps" --listen=127.0.0.1:0 --port_file="$run/ps-$i.ports" --shard_index="$i" \
      "${ps_flags[@]}" --checkpoint_dir="$run/checkpoints" >"$run/ps-$i.log" 2>&1 &
    pids+=($!); shard_pids+=($!); members+=("ps-$i"); labels+=("shard $i")
    wait_file "$run/ps-$i.ports" $!
    addresses+=("127.0.0.1:$(port "$run/ps-$i.ports" grpc)")
  done
else
  # The members of a pair name each other's address at start, so each gets a
  # port chosen now; the witness decides which member is primary.
  free_port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
  "$bin/witness/dcasgd-witness" --listen=127.0.0.1:0 --metrics_address=127.0.0.1:0 \
    --state_dir="$run/witness" --shard_count="$shards" --port_file="$run/witness.ports" \
    >"$run/witness.log" 2>&1 &
  witness_pid=$!; pids+=($witness_pid)
  wait_file "$run/witness.ports" $witness_pid
  witness="127.0.0.1:$(port "$run/witness.ports" grpc)"
  echo "== each shard runs as a pair; the witness listens on $witness"
  for ((i = 0; i < shards; i++)); do
    pa=$(free_port) pb=$(free_port)
    addresses+=("127.0.0.1:$pa|127.0.0.1:$pb")
    for m in a b; do
      if [[ $m == a ]]; then own=$pa peer=$pb; else own=$pb peer=$pa; fi
      "$bin/ps/dcasgd-ps" --listen="127.0.0.1:$own" --port_file="$run/ps-$i-$m.ports" \
        --shard_index="$i" "${ps_flags[@]}" --checkpoint_dir="$run/checkpoints/$m" \
        --replicas=2 --member="$m" --peer_address="127.0.0.1:$peer" --witness_address="$witness" \
        >"$run/ps-$i-$m.log" 2>&1 &
      pids+=($!); shard_pids+=($!); members+=("ps-$i-$m"); labels+=("shard $i $m")
    done
  done
  for ((k = 0; k < ${#members[@]}; k++)); do
    wait_file "$run/${members[$k]}.ports" "${shard_pids[$k]}"
  done
  for ((i = 0; i < shards; i++)); do
    echo "   shard $i: member a on ${addresses[$i]%|*}, member b on ${addresses[$i]#*|}"
  done
fi
ps_list=$(IFS=,; echo "${addresses[*]}")
# Local runs serve plaintext without authentication on loopback, and each
# shard says so at start (docs/security.md); show it here, not only in the log.
for ((tries = 0; tries < 50; tries++)); do
  grep -q "serving without" "$run/${members[0]}.log" && break
  sleep 0.1
done
grep -h "serving without" "$run"/ps-*.log | sort -u >&2 || true

common=(--ps_addresses="$ps_list" --data="$data" --model="$model" --epochs="$epochs"
        --batch_size="$batch" --metrics_address=127.0.0.1:0 --wire_dtype="$wire_dtype")
"$bin/worker/dcasgd-worker" --role=eval "${common[@]}" --eval_interval_seconds=5 \
  --stall_timeout_seconds=120 \
  --port_file="$run/evaluator.ports" >"$run/evaluator.out" 2> >(tee "$run/evaluator.log" >&2) &
eval_pid=$!; pids+=($eval_pid)
worker_pids=()
for ((w = 0; w < workers; w++)); do
  "$bin/worker/dcasgd-worker" --role=train "${common[@]}" --worker_name="worker-$w" \
    --log_every=200 --pipeline_depth="$pipeline_depth" --port_file="$run/worker-$w.ports" \
    2> >(tee "$run/worker-$w.log" >&2) &
  pids+=($!); worker_pids+=($!)
done

echo "== training $model with $workers workers for $epochs epochs"
status=0 failed=0
for w in "${!worker_pids[@]}"; do
  wait "${worker_pids[$w]}" || { status=$?; failed=$((failed + 1)); }
done
if ((failed == workers)); then
  # No worker can make progress (all diverged or failed): the job cannot end,
  # so do not wait for the evaluator.
  echo "== all $workers workers failed; the job cannot finish. Their last words:" >&2
  for ((w = 0; w < workers; w++)); do
    echo "   worker $w: $(grep -E '^dcasgd-worker:' "$run/worker-$w.log" | tail -1)" >&2
  done
  kill "$eval_pid" 2>/dev/null || true
  wait "$eval_pid" 2>/dev/null || true
else
  # The evaluator ends once the job is done, or by itself (exit 1) when the
  # job makes no progress for --stall_timeout_seconds.
  wait "$eval_pid" || status=$?
fi

echo
echo "== metrics endpoints (Prometheus text format) while the processes ran:"
for k in "${!members[@]}"; do
  echo "   ${labels[$k]}:   http://127.0.0.1:$(port "$run/${members[$k]}.ports" metrics)/metrics"
done
[[ -f "$run/witness.ports" ]] &&
  echo "   witness: http://127.0.0.1:$(port "$run/witness.ports" metrics)/metrics"
for ((w = 0; w < workers; w++)); do
  [[ -f "$run/worker-$w.ports" ]] &&
    echo "   worker $w:  http://127.0.0.1:$(port "$run/worker-$w.ports" metrics)/metrics"
done
echo "   evaluator: http://127.0.0.1:$(port "$run/evaluator.ports" metrics)/metrics"
for k in "${!members[@]}"; do
  # A member that was never primary served no pushes: no line for it.
  staleness=$(curl -s "http://127.0.0.1:$(port "$run/${members[$k]}.ports" metrics)/metrics" |
    awk '/^dcasgd_ps_staleness_(sum|count)/ {v[$1 ~ /sum/ ? "s" : "c"] = $2}
         END {if (v["c"] > 0) printf "mean %.2f over %d pushes", v["s"] / v["c"], v["c"]}')
  if ((replicas == 1)) || [[ -n "$staleness" ]]; then
    echo "   ${labels[$k]} staleness: $staleness"
  fi
done
# SIGTERM: the shards write a final checkpoint and exit 0.
for pid in "${shard_pids[@]}"; do kill -TERM "$pid"; done
for pid in "${shard_pids[@]}"; do wait "$pid" || status=$?; done
if [[ -n "${witness_pid:-}" ]]; then
  kill -TERM "$witness_pid"
  wait "$witness_pid" || status=$?
fi
pids=()
echo "   checkpoints: $run/checkpoints"
echo
grep "final test accuracy" "$run/evaluator.out" || {
  echo "no final accuracy (see $run)" >&2
  ((status != 0)) || status=1
}
exit $status
