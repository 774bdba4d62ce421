#!/usr/bin/env python3
"""Convergence: wall time to a test-accuracy target (default 85%) for
mlp:256,128 with 1, 2 and 4 workers, DC-ASGD-a against ASGD, on 2 local
shards with the same learning rate and schedule.

Per run: 2 fresh shards, the evaluator (--eval_interval_seconds 0.5) started
first, then the workers one after the other. The clock starts just before the
first worker is started. The run stops when the evaluator first reports an
accuracy >= the target ("[eval] model version V: test accuracy A"), recording
the wall time at which this script saw that line and V (the sum of the shard
versions: with 2 shards and every push touching both, 2 per worker step), or
after --cap_seconds ("not reached"). With --finish the run instead goes on
until the job's epochs are done (or --finish_cap_seconds) and the evaluator's
final accuracy is recorded as well.

Also reported: the mean staleness of the pushes the shards applied up to the
stop (dcasgd_ps_staleness_sum / _count over both shards).

With --pipeline_depths 0,1 each cell also runs with the workers'
--pipeline_depth=1 (the next gradient computed while the PushPull is in
flight: one more step of staleness, which DC-ASGD compensates and ASGD does
not); --seeds runs each cell with several worker seeds (data order and
initial weights).

  python3 bench/convergence.py [--workers 1,2,4] [--rules dcasgd-a,asgd]
      [--target 0.85] [--cap_seconds 150] [--finish] [--data DIR]
      [--pipeline_depths 0] [--seeds 1] [--ps_flags "--gap_aware=true"]
Environment: DCASGD_BUILD_DIR (default build/release).
"""

import argparse
import os
import re
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import harness  # noqa: E402

MODEL = "mlp:256,128"
SHARDS = 2
EVAL_LINE = re.compile(r"^\[eval\] model version (\d+): test accuracy ([0-9.]+)", re.M)


def metric_sum(port, name):
    """Sum of the samples of `name` on a /metrics endpoint (None if it does not answer)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        return None
    total = 0.0
    for line in text.decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def ps_flags(args, rule):
    return [f"--update_rule={rule}", f"--lr={args.lr}", "--lr_schedule=step",
            f"--lr_decay_every={args.lr_decay_every}", f"--lr_decay_factor={args.lr_decay_factor}",
            *args.ps_flags.split()]


def run(args, data, rule, workers, depth, seed):
    cluster = harness.Cluster(f"convergence-{rule}-{workers}-d{depth}-s{seed}")
    try:
        cluster.start_shards(SHARDS, *ps_flags(args, rule))
        evaluator = cluster.start_worker("evaluator", data, f"--model={MODEL}",
                                         "--eval_interval_seconds=0.5", role="eval")
        load = os.getloadavg()[0]
        start = time.monotonic()
        trainers = [cluster.start_worker(f"worker-{i}", data, f"--model={MODEL}",
                                         f"--batch_size={args.batch_size}",
                                         f"--epochs={args.epochs}", "--log_every=200",
                                         f"--pipeline_depth={depth}", f"--seed={seed}")
                    for i in range(workers)]
        reached = None  # (seconds, version, accuracy)
        best = (0.0, 0)  # (accuracy, version)
        final = None
        cap = args.finish_cap_seconds if args.finish else args.cap_seconds
        seen = 0
        while True:
            now = time.monotonic() - start
            out = evaluator.output()
            matches = EVAL_LINE.findall(out)
            for version, accuracy in matches[seen:]:
                accuracy, version = float(accuracy), int(version)
                if accuracy > best[0]:
                    best = (accuracy, version)
                if reached is None and accuracy >= args.target and version > 0:
                    reached = (now, version, accuracy)
            seen = len(matches)
            if args.finish:
                final = harness.final_accuracy(out)
                if final is not None or evaluator.poll() is not None:
                    break
            elif reached is not None:
                break
            if now > cap:
                break
            for t in trainers:
                if t.poll() not in (None, 0):
                    raise RuntimeError(f"a worker failed:\n{t.output()[-2000:]}")
            time.sleep(0.05)
        elapsed = time.monotonic() - start
        staleness_sum = sum(metric_sum(m, "dcasgd_ps_staleness_sum") or 0
                            for _, _, m in cluster.shards)
        staleness_count = sum(metric_sum(m, "dcasgd_ps_staleness_count") or 0
                              for _, _, m in cluster.shards)
        return {
            "reached": reached,
            "best": best,
            "final": final,
            "elapsed": elapsed,
            "staleness": staleness_sum / staleness_count if staleness_count else float("nan"),
            "load": load,
        }
    finally:
        cluster.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--rules", default="dcasgd-a,asgd")
    parser.add_argument("--target", type=float, default=0.85)
    parser.add_argument("--cap_seconds", type=float, default=150)
    parser.add_argument("--finish", action="store_true",
                        help="let every run finish its epochs and record the final accuracy")
    parser.add_argument("--finish_cap_seconds", type=float, default=600)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    # As scripts/run-local.sh: decay in the last third of a 5-epoch job
    # (shard versions ~ steps of all workers together).
    parser.add_argument("--lr_decay_every", type=int, default=60000 // 64 * 5 // 3)
    parser.add_argument("--lr_decay_factor", type=float, default=0.3)
    parser.add_argument("--data", help="prepared data directory (default: prepared here)")
    parser.add_argument("--pipeline_depths", default="0",
                        help="comma-separated worker --pipeline_depth values")
    parser.add_argument("--seeds", default="1", help="comma-separated worker --seed values")
    parser.add_argument("--ps_flags", default="",
                        help="more dcasgd-ps flags, space-separated (e.g. --gap_aware=true)")
    args = parser.parse_args()

    data_cluster = harness.Cluster("convergence-data")
    try:
        data = args.data
        if data is None:
            data = data_cluster.path("data")
            harness.prepare_data(data, 20)
        results = []
        for workers in [int(w) for w in args.workers.split(",")]:
            for rule in args.rules.split(","):
                for depth in [int(d) for d in args.pipeline_depths.split(",")]:
                    for seed in [int(x) for x in args.seeds.split(",")]:
                        r = run(args, data, rule, workers, depth, seed)
                        r["depth"], r["seed"] = depth, seed
                        results.append((workers, rule, r))
                        what = (f"{args.target:.0%} after {r['reached'][0]:.1f} s at version "
                                f"{r['reached'][1]}" if r["reached"] else "target not reached")
                        print(f"{rule} workers={workers} depth={depth} seed={seed}: {what}; "
                              f"best {r['best'][0]:.4f}; final {r['final']}; staleness "
                              f"{r['staleness']:.2f}; load {r['load']:.2f}", file=sys.stderr)

        cores = os.cpu_count()
        print(f"\nTime to {args.target:.0%} test accuracy, {MODEL}, {SHARDS} shards, lr {args.lr}, "
              f"batch {args.batch_size}, step decay x{args.lr_decay_factor} every "
              f"{args.lr_decay_every} shard versions, {args.epochs} epochs, evaluator every 0.5 s. "
              f"{cores} CPU cores: {SHARDS} shards + evaluator + N workers share them "
              f"(4 workers oversubscribe the machine).\n")
        header = ("| workers | rule | pipeline depth | seed | time to target (s) "
                  "| time / ASGD time "
                  "| model version at target | best accuracy seen (version) | mean staleness "
                  "| load avg (1 min) |")
        sep = "|---|---|---|---|---|---|---|---|---|---|"
        # The baseline: ASGD at the same worker count, depth and seed.
        asgd_time = {(w, r["depth"], r["seed"]): r["reached"][0] for w, rule, r in results
                     if rule == "asgd" and r["reached"]}
        if args.finish:
            header += " final accuracy | run time (s) |"
            sep += "---|---|"
        print(header)
        print(sep)
        for workers, rule, r in results:
            if r["reached"]:
                t, v = f"{r['reached'][0]:.1f}", str(r["reached"][1])
            else:
                t, v = f"not reached in {r['elapsed']:.0f} s", "–"
            key = (workers, r["depth"], r["seed"])
            ratio = (f"{r['reached'][0] / asgd_time[key]:.2f}"
                     if r["reached"] and key in asgd_time else "–")
            line = (f"| {workers} | {rule} | {r['depth']} | {r['seed']} | {t} | {ratio} | {v} "
                    f"| {r['best'][0]:.4f} ({r['best'][1]}) | {r['staleness']:.2f} "
                    f"| {r['load']:.2f} |")
            if args.finish:
                final = f"{r['final']:.4f}" if r["final"] is not None else "not finished"
                line += f" {final} | {r['elapsed']:.1f} |"
            print(line)
    finally:
        data_cluster.close()


if __name__ == "__main__":
    main()
