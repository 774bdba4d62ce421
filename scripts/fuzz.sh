#!/usr/bin/env bash
# The fuzz stage of scripts/test.sh (tests/fuzz/README.md): builds the fuzz
# targets with clang, libFuzzer, AddressSanitizer and UBSan (preset `fuzz`,
# build/fuzz) and runs each for a bounded time, two at a time. Fails (exit 1)
# when a target crashes, leaks, trips a sanitizer or breaks an invariant,
# showing the report and where libFuzzer saved the input.
#
# Usage: scripts/fuzz.sh [TARGET...]     (default: every target)
#   DCASGD_FUZZ_SECONDS  seconds per target (default 25)
#   DCASGD_FUZZ_JOBS     targets at once (default 2)
# New inputs that reach new code accumulate in build/fuzz/corpus/<target>
# (not in the repository: add a seed by hand, README.md "Seeds").
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${DCASGD_FUZZ_SECONDS:-25}
jobs=${DCASGD_FUZZ_JOBS:-2}
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=(ps_requests coordinator_requests checkpoint schedule witness_state exchange_reply)
fi

export CCACHE_BASEDIR="$root"
start=$(date +%s)
if [[ ! -f build/fuzz/CMakeCache.txt ]]; then
  cmake --preset fuzz >/dev/null
fi
cmake --build --preset fuzz -j"$(nproc)"
built=$(date +%s)

runs="$root/build/fuzz/runs"
mkdir -p "$runs"
# The checkpoint and schedule targets write each input to a file.
if [[ -d /dev/shm && -w /dev/shm ]]; then export TMPDIR=/dev/shm; fi

run_one() {
  local t=$1
  local work="$root/build/fuzz/corpus/$t"
  mkdir -p "$work"
  rm -f "$runs/$t-"crash-* "$runs/$t-"leak-* "$runs/$t-"timeout-* "$runs/$t-"oom-*
  # Work corpus first (libFuzzer adds to it), then the committed seeds.
  if "$root/build/fuzz/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=20 \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$runs/$t-" \
      "$work" "$root/tests/fuzz/corpus/$t" >"$runs/$t.log" 2>&1; then
    echo "fuzz: $t passed: $(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$runs/$t.log" | grep -Eo '[0-9]+$' || echo '?') runs in ${seconds} s"
  else
    echo "fuzz: $t FAILED (log: $runs/$t.log); the input is saved as:" >&2
    ls "$runs/$t-"* 2>/dev/null >&2 || true
    grep -v '^#' "$runs/$t.log" | tail -60 >&2
    return 1
  fi
}
export -f run_one
export root seconds runs

status=0
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one "$1"' _ {} || status=1
end=$(date +%s)
echo "fuzz: build $((built - start)) s, runs $((end - built)) s"
exit $status
