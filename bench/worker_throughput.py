#!/usr/bin/env python3
"""Worker throughput: one dcasgd-worker training against 1 and 2 local shards
(loopback gRPC), beside the plain single-process SGD loop of local_sgd_bench
for the same model and batch, in the same run. The ratio worker / local is
what the round trip to the parameter server costs.

For each model and shard count, one worker trains --max_steps steps (batch 64,
DC-ASGD-a on the shards) while this script scrapes its /metrics:

  examples/s (wall)   d(dcasgd_worker_examples_total) / d(time) between the
                      first scrape at >= 10% of the steps and the last scrape
                      before the worker exits (start-up and declaration are
                      left out; data-shard loads between steps are in)
  examples/s (busy)   examples / (compute + communication seconds): the step
                      loop alone
  compute %           compute / (compute + communication)
  compute-only ex/s   examples / compute seconds (compare with the local loop)
  CPU ms per step     between the same two scrapes, from /proc: the worker's
                      main thread (gradient, batch copy, encoding the push),
                      the whole worker (with its gRPC threads) and the shards
  CPU bound           the ratio wall/local that no scheduling could beat with
                      that CPU per step on this machine's cores: a step takes
                      at least the main thread's CPU, and at least (worker +
                      shards CPU) / cores; bound = local step time / that

The local baseline is local_sgd_bench's BM_LocalSgdStep (Model::Gradient plus
an in-place SGD step, batch 64), items_per_second from its JSON output.
Each configuration runs --repeats times; the table shows the median run.

With --pipeline_depths 0,1 each configuration also runs with the worker's
--pipeline_depth=1 (the next gradient computed while the PushPull is in
flight); communication is then the time the worker waits for an answer.

  python3 bench/worker_throughput.py [--repeats 3] [--softmax_steps 2000]
      [--mlp_steps 500] [--pipeline_depths 0] [--data DIR]
Environment: DCASGD_BUILD_DIR (default build/release).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import harness  # noqa: E402

BATCH = 64
LOCAL_SGD_BENCH = os.path.join(harness.BUILD_DIR, "bench", "local_sgd_bench")
PS_FLAGS = ["--update_rule=dcasgd-a", "--lr=0.01"]


def scrape(port):
    """{metric name with suffix: sum over its label sets}, or None when the
    endpoint no longer answers (the worker exited)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return None
    values = {}
    for line in text.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0]
        try:
            values[name] = values.get(name, 0.0) + float(value)
        except ValueError:
            pass
    return values


def cpu_seconds(pid, tid=None):
    """User + system CPU seconds of a process (all its threads) or of one of
    its threads, from /proc; None once it is gone."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the name: state is field 3, utime 14 and stime 15 (proc(5)).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_sample(worker_pid, shard_pids):
    """(worker main thread, whole worker, all shards) CPU seconds."""
    return (cpu_seconds(worker_pid, worker_pid), cpu_seconds(worker_pid),
            sum(cpu_seconds(p) or 0.0 for p in shard_pids))


def local_sgd_rates(min_time):
    """items_per_second of BM_LocalSgdStep per model label."""
    result = subprocess.run([LOCAL_SGD_BENCH, "--benchmark_filter=BM_LocalSgdStep",
                             "--benchmark_format=json", f"--benchmark_min_time={min_time}"],
                            capture_output=True, text=True, check=True, timeout=300)
    rates = {}
    for b in json.loads(result.stdout)["benchmarks"]:
        rates[b["label"]] = b["items_per_second"]
    return rates


def run_worker(data, model, shards, steps, depth=0):
    """One worker training `steps` steps against `shards` fresh shards, with
    `depth` pushes in flight (--pipeline_depth)."""
    cluster = harness.Cluster("throughput")
    try:
        cluster.start_shards(shards, *PS_FLAGS)
        # Enough epochs that --max_steps ends the run, not the job.
        epochs = steps * BATCH // 60000 + 2
        worker = cluster.start_worker("w0", data, f"--model={model}", f"--batch_size={BATCH}",
                                      f"--max_steps={steps}", f"--epochs={epochs}",
                                      "--log_every=1000000", f"--pipeline_depth={depth}")
        ports = harness.wait_for(lambda: harness.read_port_file(worker.port_file) or
                                 (worker.poll() is not None and {"exited": 1}),
                                 30, "the worker's port file")
        if "exited" in ports:
            raise RuntimeError(f"worker exited at start:\n{worker.output()[-2000:]}")
        port = ports["metrics"]
        shard_pids = [process.popen.pid for process, _, _ in cluster.shards]
        first = last = None  # (time, metrics, CPU seconds)
        while worker.poll() is None:
            t_before = time.monotonic()
            m = scrape(port)
            cpu = cpu_sample(worker.popen.pid, shard_pids)
            t = (t_before + time.monotonic()) / 2
            if m is not None and m.get("dcasgd_worker_steps_total", 0) > 0 and None not in cpu:
                if first is None and m["dcasgd_worker_steps_total"] >= steps / 10:
                    first = (t, m, cpu)
                elif first is not None:
                    last = (t, m, cpu)
            time.sleep(0.02)
        code = worker.wait(30)
        if code != 0:
            raise RuntimeError(f"worker exited with {code}:\n{worker.output()[-2000:]}")
        if first is None or last is None or last[0] - first[0] < 0.2:
            raise RuntimeError("the run was too short to measure; raise the step count")
        (t0, m0, cpu0), (t1, m1, cpu1) = first, last
        steps_between = m1["dcasgd_worker_steps_total"] - m0["dcasgd_worker_steps_total"]
        main_ms, worker_ms, shards_ms = (1000 * (b - a) / steps_between
                                         for a, b in zip(cpu0, cpu1))
        examples = m1["dcasgd_worker_examples_total"]
        compute = m1["dcasgd_worker_compute_seconds_sum"]
        comm = m1["dcasgd_worker_communication_seconds_sum"]
        return {
            "wall": (examples - m0["dcasgd_worker_examples_total"]) / (t1 - t0),
            "busy": examples / (compute + comm),
            "compute_only": examples / compute,
            "compute_pct": 100 * compute / (compute + comm),
            "step_ms": 1000 * (compute + comm) / m1["dcasgd_worker_steps_total"],
            "comm_ms": 1000 * comm / m1["dcasgd_worker_steps_total"],
            "steps": m1["dcasgd_worker_steps_total"],
            "main_cpu_ms": main_ms,
            "worker_cpu_ms": worker_ms,
            "shards_cpu_ms": shards_ms,
            # The shortest step those CPU costs allow on this machine's cores.
            "min_step_ms": max(main_ms, (worker_ms + shards_ms) / (os.cpu_count() or 1)),
        }
    finally:
        cluster.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--softmax_steps", type=int, default=2000)
    parser.add_argument("--mlp_steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shards", default="1,2", help="comma-separated shard counts")
    parser.add_argument("--pipeline_depths", default="0",
                        help="comma-separated worker --pipeline_depth values")
    parser.add_argument("--data", help="prepared data directory (default: prepared here)")
    parser.add_argument("--local_min_time", type=float, default=1.0,
                        help="local_sgd_bench --benchmark_min_time")
    args = parser.parse_args()

    data_cluster = harness.Cluster("throughput-data")
    try:
        data = args.data
        if data is None:
            data = data_cluster.path("data")
            harness.prepare_data(data, 8)

        load = os.getloadavg()
        print(f"load average before the local baseline: {load[0]:.2f} {load[1]:.2f} "
              f"{load[2]:.2f}", file=sys.stderr)
        local = local_sgd_rates(args.local_min_time)

        rows = []
        for model, steps in [("softmax", args.softmax_steps), ("mlp:256,128", args.mlp_steps)]:
            for shards in [int(s) for s in args.shards.split(",")]:
                for depth in [int(d) for d in args.pipeline_depths.split(",")]:
                    runs = []
                    for r in range(args.repeats):
                        load = os.getloadavg()[0]
                        result = run_worker(data, model, shards, steps, depth)
                        result["load"] = load
                        runs.append(result)
                        print(f"{model} shards={shards} depth={depth} run {r + 1}: "
                              f"{result['wall']:.0f} examples/s (wall), {result['busy']:.0f} "
                              f"(busy), compute {result['compute_pct']:.0f}%, CPU ms/step "
                              f"{result['main_cpu_ms']:.2f} main / {result['worker_cpu_ms']:.2f} "
                              f"worker / {result['shards_cpu_ms']:.2f} shards, load {load:.2f}",
                              file=sys.stderr)
                    median = sorted(runs, key=lambda x: x["wall"])[len(runs) // 2]
                    spread = (min(x["wall"] for x in runs), max(x["wall"] for x in runs))
                    rows.append((model, shards, depth, steps, median, spread, local[model],
                                 statistics.mean(x["load"] for x in runs)))

        print(f"\nWorker throughput, batch {BATCH}, {args.repeats} run(s) per row (median; "
              f"range in brackets), shards on loopback, update rule DC-ASGD-a.\n")
        print("| model | shards | pipeline depth | steps | worker examples/s (wall) "
              "| worker examples/s (busy) "
              "| local SGD examples/s | ratio wall/local | ratio busy/local | step ms "
              "| communication ms/step | compute % | compute-only examples/s "
              "| CPU ms/step: main thread / worker / shards | CPU bound "
              "| load avg (1 min) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for model, shards, depth, steps, m, spread, base, load in rows:
            local_step_ms = 1000 * BATCH / base
            print(f"| {model} | {shards} | {depth} | {steps} | {m['wall']:,.0f} "
                  f"[{spread[0]:,.0f}–{spread[1]:,.0f}] | {m['busy']:,.0f} | {base:,.0f} "
                  f"| {m['wall'] / base:.2f} | {m['busy'] / base:.2f} | {m['step_ms']:.2f} "
                  f"| {m['comm_ms']:.2f} | {m['compute_pct']:.0f}% | {m['compute_only']:,.0f} "
                  f"| {m['main_cpu_ms']:.2f} / {m['worker_cpu_ms']:.2f} / "
                  f"{m['shards_cpu_ms']:.2f} | {local_step_ms / m['min_step_ms']:.2f} "
                  f"| {load:.2f} |")
    finally:
        data_cluster.close()


if __name__ == "__main__":
    main()
