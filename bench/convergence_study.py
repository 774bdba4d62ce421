#!/usr/bin/env python3
"""The convergence study (docs/convergence.md): final test accuracy of every
update rule as the number of asynchronous workers M grows, at a staleness
that is under control.

Every cell is one training job on real dcasgd-ps shards (2, on loopback) fed
by one dcasgd-worker process running M virtual workers
(--virtual_workers=M, services/worker/virtual_workers.h): each is a full
worker to the shards (own join, backup, data leases), and a schedule decides
who pushes next (round-robin: staleness exactly M-1; random: geometric with
mean M-1). Every cell trains the same number of epochs over Fashion-MNIST
split into 64 equal data shards (every M in the study divides 64), batch 64,
with the learning rate decayed x0.3 at each third of the job's updates.

Rules (names used in the results):
  sgd          M = 1: sequential SGD, the baseline of every rule
  ssgd         --sync=ssgd: each update is the mean of M gradients
  asgd         plain asynchronous SGD
  dcasgd-c     DC-ASGD with a constant lambda
  dcasgd-a     DC-ASGD with the adaptive (mean-square) lambda
  asgd-sa      asgd with the staleness-aware rate lr / max(1, staleness)
  dcasgd-a-sa  dcasgd-a with the staleness-aware rate
  asgd-ga      asgd with gap-aware damping (--gap_aware: each gradient
               coordinate divided by its gap since the pull, in mean steps)
  dcasgd-a-ga  dcasgd-a with gap-aware damping
  dcasgd-a-bf16, dcasgd-a-ga-bf16
               the same with each worker's backup kept in bfloat16 on the
               shards (--backup_dtype=bfloat16): the accuracy cost of
               16-bit backups
  dcasgd-a-wbf16, dcasgd-a-ga-wbf16
               the same with gradients and weights sent as bfloat16 between
               the workers and the shards (the worker's --wire_dtype): the
               accuracy cost of the 16-bit wire

Results are appended, one JSON object per cell, to --results (cells already
there are skipped, so an interrupted study resumes). --report reads them and
writes the tables (markdown) and the plots (PNG, matplotlib) into --out.

  python3 bench/convergence_study.py --quick            # ~10 min on 2 cores
  python3 bench/convergence_study.py --full             # hours
  python3 bench/convergence_study.py --workers 1,8 --rules asgd,dcasgd-a \\
      --lrs 0.1 --seeds 1 --epochs 1 --results /tmp/r.jsonl --report --out /tmp/plots
Environment: DCASGD_BUILD_DIR (default build/release).
"""

import argparse
import atexit
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import harness  # noqa: E402

DATA_SHARDS = 64
BATCH = 64
SHARDS = 2
# 64 shards of 937 or 938 examples: 15 batches of <= 64 each.
STEPS_PER_EPOCH = DATA_SHARDS * math.ceil(60000 / DATA_SHARDS / BATCH)

RULES = {
    # name: (shard flags, worker schedule override)
    "sgd": (["--update_rule=asgd"], None),
    "ssgd": (["--update_rule=asgd", "--sync=ssgd"], "free"),
    "asgd": (["--update_rule=asgd"], None),
    "dcasgd-c": (["--update_rule=dcasgd-c"], None),
    "dcasgd-a": (["--update_rule=dcasgd-a"], None),
    "asgd-sa": (["--update_rule=asgd", "--staleness_aware"], None),
    "dcasgd-a-sa": (["--update_rule=dcasgd-a", "--staleness_aware"], None),
    "asgd-ga": (["--update_rule=asgd", "--gap_aware"], None),
    "dcasgd-a-ga": (["--update_rule=dcasgd-a", "--gap_aware"], None),
    "dcasgd-a-bf16": (["--update_rule=dcasgd-a", "--backup_dtype=bfloat16"], None),
    "dcasgd-a-ga-bf16": (["--update_rule=dcasgd-a", "--gap_aware", "--backup_dtype=bfloat16"],
                         None),
    "dcasgd-a-wbf16": (["--update_rule=dcasgd-a"], None),
    "dcasgd-a-ga-wbf16": (["--update_rule=dcasgd-a", "--gap_aware"], None),
}
# Worker flags of the rules that need some (the rest: none).
WORKER_FLAGS = {
    "dcasgd-a-wbf16": ["--wire_dtype=bfloat16"],
    "dcasgd-a-ga-wbf16": ["--wire_dtype=bfloat16"],
}

QUICK = dict(models=["mlp:256,128"], workers=[1, 4, 16, 32],
             rules=["ssgd", "asgd", "dcasgd-a", "dcasgd-a-ga"], lrs=[0.05, 0.1], seeds=[1],
             schedules=["round-robin"], epochs=1)
FULL = dict(models=["mlp:256,128", "cnn"], workers=[1, 4, 8, 16, 32, 64],
            rules=["ssgd", "asgd", "dcasgd-c", "dcasgd-a", "asgd-sa", "dcasgd-a-sa", "asgd-ga",
                   "dcasgd-a-ga"],
            lrs=[0.025, 0.05, 0.1, 0.2], seeds=[1, 2, 3], schedules=["round-robin", "random"],
            epochs=3)

EVAL = re.compile(r"^eval step (\d+): test accuracy ([0-9.]+)", re.M)
FINAL = re.compile(r"^final test accuracy: ([0-9.]+)", re.M)
STALENESS = re.compile(r"^staleness: (\{.*\})$", re.M)
WALL = re.compile(r"^wall seconds: ([0-9.]+)", re.M)


def cell_key(c):
    return (c["model"], c["workers"], c["rule"], c["lr"], c["seed"], c["schedule"], c["epochs"])


def cells(cfg):
    """Every job of the study; M = 1 only as 'sgd' (all rules equal there)."""
    for model in cfg["models"]:
        for schedule in cfg["schedules"]:
            for m in cfg["workers"]:
                rules = ["sgd"] if m == 1 else [r for r in cfg["rules"] if r != "sgd"]
                for rule in rules:
                    for lr in cfg["lrs"]:
                        for seed in cfg["seeds"]:
                            if m == 1 and schedule != cfg["schedules"][0]:
                                continue  # one worker: the schedule does not matter
                            yield dict(model=model, workers=m, rule=rule, lr=lr, seed=seed,
                                       schedule=schedule, epochs=cfg["epochs"])


def run_cell(c, data, timeout):
    shard_flags, schedule = RULES[c["rule"]]
    schedule = schedule or c["schedule"]
    updates = STEPS_PER_EPOCH * c["epochs"]
    if c["rule"] == "ssgd":
        updates //= c["workers"]  # one update per round of M pushes
    cluster = harness.Cluster("study")
    started = time.time()
    try:
        cluster.start_shards(SHARDS, *shard_flags, f"--lr={c['lr']}", "--lr_schedule=step",
                             f"--lr_decay_every={max(1, updates // 3)}",
                             "--lr_decay_factor=0.3", "--max_workers=256")
        worker = cluster.start_worker(
            "study", data, f"--virtual_workers={c['workers']}", f"--schedule={schedule}",
            f"--model={c['model']}", f"--epochs={c['epochs']}", f"--seed={c['seed']}",
            f"--batch_size={BATCH}", f"--eval_every_steps={STEPS_PER_EPOCH}",
            "--log_every=1000000", *WORKER_FLAGS.get(c["rule"], []))
        try:
            code = worker.wait(timeout)
        except TimeoutError:
            code = "timeout"
        out = worker.output()
    finally:
        cluster.close()
    result = dict(c)
    result["wall_seconds"] = round(time.time() - started, 1)
    final = FINAL.search(out)
    result["final_accuracy"] = float(final.group(1)) if final and code == 0 else None
    result["diverged"] = "training diverged" in out
    if result["final_accuracy"] is None:
        lines = [l for l in out.splitlines() if l.startswith("dcasgd-worker:")]
        result["error"] = (lines[-1] if lines else f"exit {code}")[:300]
    epochs = [(int(s), float(a)) for s, a in EVAL.findall(out)]
    result["epoch_accuracy"] = [a for s, a in epochs if s % STEPS_PER_EPOCH == 0]
    hist = STALENESS.search(out)
    if hist:
        h = {int(k): v for k, v in json.loads(hist.group(1)).items()}
        result["staleness"] = h
        n = sum(h.values())
        result["mean_staleness"] = round(sum(k * v for k, v in h.items()) / n, 3) if n else None
    wall = WALL.search(out)
    if wall:
        result["train_seconds"] = float(wall.group(1))
    return result


def load(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def converged(r):
    return r["final_accuracy"] is not None and r["final_accuracy"] >= 0.5


def summarize(results):
    """{(model, schedule, M, rule): {lr: [accuracies or None per seed]}}"""
    table = {}
    for r in results:
        key = (r["model"], r["schedule"], r["workers"], r["rule"])
        table.setdefault(key, {}).setdefault(r["lr"], []).append(
            r["final_accuracy"] if converged(r) else None)
    return table


def failures(results, model, schedule, m, rule):
    """For a cell where no lr converged: 'diverged at 0.1, 0.2; 21.4 at 0.05'."""
    diverged, low = [], []
    for r in results:
        if (r["model"], r["schedule"], r["workers"], r["rule"]) != (model, schedule, m, rule):
            continue
        if r["final_accuracy"] is None:
            diverged.append(r["lr"])
        else:
            low.append(f"{100 * r['final_accuracy']:.1f} at {r['lr']}")
    parts = []
    if diverged:
        parts.append("diverged at " + ", ".join(str(lr) for lr in sorted(set(diverged))))
    if low:
        parts.append("below 50%: " + ", ".join(low))
    return "; ".join(parts)


def mean_std(values):
    ok = [v for v in values if v is not None]
    if len(ok) < len(values) or not ok:
        return None, None
    return statistics.mean(ok), (statistics.stdev(ok) if len(ok) > 1 else 0.0)


def best(lrs):
    """(best lr, mean, std, seeds) by mean over seeds, and the largest lr
    at which every seed converged."""
    scored = [(lr, *mean_std(v), len(v)) for lr, v in lrs.items()]
    good = [s for s in scored if s[1] is not None]
    top = max(good, key=lambda s: s[1]) if good else None
    largest = max((s[0] for s in good), default=None)
    return top, largest


def report(results, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    table = summarize(results)
    lines = ["Best final test accuracy (%) over the learning rates tried (mean ± std over "
             "seeds when there are several), its lr, and the largest lr at which every seed "
             "converged (final accuracy >= 50%)."]
    for model in sorted({k[0] for k in table}):
        for schedule in sorted({k[1] for k in table if k[0] == model}):
            ms = sorted({k[2] for k in table if k[0] == model and k[1] == schedule})
            rules = [r for r in RULES if r != "sgd" and
                     any((model, schedule, m, r) in table for m in ms)]
            base = table.get((model, schedule, 1, "sgd")) or next(
                (v for k, v in table.items() if k[0] == model and k[2] == 1), None)
            base_top = best(base)[0] if base else None
            lines.append(f"\n### {model}, {schedule} schedule\n")
            if base_top:
                lines.append(f"Sequential SGD (M = 1): {fmt(base_top)}.\n")
            lines.append("| rule | " + " | ".join(f"M = {m}" for m in ms if m > 1) + " |")
            lines.append("|---|" + "---|" * len([m for m in ms if m > 1]))
            for rule in rules:
                cells_ = []
                for m in ms:
                    if m == 1:
                        continue
                    lrs = table.get((model, schedule, m, rule))
                    if not lrs:
                        cells_.append("-")
                        continue
                    top, largest = best(lrs)
                    cells_.append(fmt(top, largest) if top else
                                  failures(results, model, schedule, m, rule))
                lines.append(f"| {rule} | " + " | ".join(cells_) + " |")
    lines += staleness_lines(results)
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out_dir, "tables.md"), "w") as f:
        f.write("<!-- written by bench/convergence_study.py --report -->\n" + text)
    plot(results, table, out_dir)
    return text


def percentile(hist, q):
    """The smallest staleness s with at least a fraction q of pushes <= s."""
    total = sum(hist.values())
    seen = 0
    for s in sorted(hist):
        seen += hist[s]
        if seen >= q * total:
            return s
    return None


def staleness_lines(results):
    """The measured staleness per schedule and M, every cell's shard
    histograms pooled: what each schedule really did."""
    pooled = {}
    for r in results:
        if not r.get("staleness") or r["workers"] == 1:
            continue
        h = pooled.setdefault((r["schedule"], r["workers"]), {})
        for k, v in r["staleness"].items():
            h[int(k)] = h.get(int(k), 0) + v
    if not pooled:
        return []
    lines = ["\n### Measured staleness\n",
             "Every push of every cell at that M (all models and rules pooled), as the "
             "shards counted it.\n",
             "| schedule | M | pushes | mean | p50 | p90 | p99 | max | share at 0 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (schedule, m), h in sorted(pooled.items()):
        n = sum(h.values())
        mean = sum(k * v for k, v in h.items()) / n
        lines.append(f"| {schedule} | {m} | {n} | {mean:.1f} | {percentile(h, 0.5)} | "
                     f"{percentile(h, 0.9)} | {percentile(h, 0.99)} | {max(h)} | "
                     f"{100 * h.get(0, 0) / n:.1f}% |")
    return lines


def fmt(top, largest=None):
    lr, mean, std, n = top
    s = f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if n > 1 else "") + f" (lr {lr}"
    if largest is not None and largest != lr:
        s += f"; converges up to {largest}"
    return s + ")"


# One colour per rule in every plot and panel.
COLORS = {"ssgd": "tab:blue", "asgd": "tab:orange", "dcasgd-c": "tab:green",
          "dcasgd-a": "tab:red", "asgd-sa": "tab:purple", "dcasgd-a-sa": "tab:brown",
          "asgd-ga": "tab:pink", "dcasgd-a-ga": "tab:olive"}


def plot(results, table, out_dir):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (python3-matplotlib): no plots", file=sys.stderr)
        return
    for model in sorted({k[0] for k in table}):
        for schedule in sorted({k[1] for k in table if k[0] == model}):
            ms = sorted({k[2] for k in table if k[0] == model and k[1] == schedule})
            # Final accuracy vs M, one line per rule (best lr, error bars: std).
            fig, ax = plt.subplots(figsize=(7, 4.5))
            base = table.get((model, schedule, 1, "sgd"))
            base_top = best(base)[0] if base else None
            for rule in RULES:
                if rule == "sgd":
                    continue
                xs, ys, es = [], [], []
                for m in ms:
                    lrs = table.get((model, schedule, m, rule)) if m > 1 else base
                    top = best(lrs)[0] if lrs else None
                    if top:
                        xs.append(m)
                        ys.append(100 * top[1])
                        es.append(100 * top[2])
                if len(xs) > 1:
                    ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=rule,
                                color=COLORS.get(rule))
            if base_top:
                ax.axhline(100 * base_top[1], color="gray", ls="--", label="sequential SGD")
                ax.axhline(100 * base_top[1] - 0.5, color="gray", ls=":", label="SGD - 0.5 pp")
            ax.set_xscale("log", base=2)
            ax.set_xticks(ms)
            ax.set_xticklabels([str(m) for m in ms])
            ax.set_xlabel("workers M (round-robin: staleness M-1)" if schedule == "round-robin"
                          else "workers M (random schedule: mean staleness M-1)")
            ax.set_ylabel("final test accuracy (%), best lr")
            ax.set_title(f"{model}, {schedule}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            name = f"final-vs-workers-{slug(model)}-{schedule}.png"
            fig.savefig(os.path.join(out_dir, name), dpi=90)
            plt.close(fig)
            # Accuracy per epoch, one panel per M (best lr of each rule, seed 1).
            panels = [m for m in ms if m > 1]
            if not panels:
                continue
            fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2),
                                     sharey=True, squeeze=False)
            for ax, m in zip(axes[0], panels):
                for rule in RULES:
                    lrs = table.get((model, schedule, m, rule))
                    top = best(lrs)[0] if lrs else None
                    if not top:
                        continue
                    runs = [r for r in results if r["model"] == model and
                            r["schedule"] == schedule and r["workers"] == m and
                            r["rule"] == rule and r["lr"] == top[0] and r["epoch_accuracy"]]
                    if runs:
                        acc = runs[0]["epoch_accuracy"]
                        ax.plot(range(1, len(acc) + 1), [100 * a for a in acc], marker=".",
                                label=rule, color=COLORS.get(rule))
                ax.set_title(f"M = {m}")
                ax.set_xlabel("epoch")
                ax.set_xticks(range(1, max(1, max((len(r["epoch_accuracy"]) for r in results
                                                   if r["epoch_accuracy"]), default=1)) + 1))
                ax.grid(alpha=0.3)
            axes[0][0].set_ylabel("test accuracy (%), best lr")
            # One legend for every rule drawn in any panel (SSGD has no
            # per-epoch points: its free schedule evaluates only at the end).
            handles = {}
            for ax in axes[0]:
                for h, label in zip(*ax.get_legend_handles_labels()):
                    handles.setdefault(label, h)
            axes[0][0].legend(handles.values(), handles.keys(), fontsize=7)
            fig.tight_layout()
            fig.savefig(os.path.join(out_dir, f"accuracy-per-epoch-{slug(model)}-{schedule}.png"),
                        dpi=90)
            plt.close(fig)


def slug(model):
    return re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the ~10 minute study")
    ap.add_argument("--full", action="store_true", help="the whole grid (hours)")
    ap.add_argument("--models")
    ap.add_argument("--workers")
    ap.add_argument("--rules")
    ap.add_argument("--lrs")
    ap.add_argument("--seeds")
    ap.add_argument("--schedules")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--data", help="prepared data (64 shards); default: prepared in a temp dir")
    ap.add_argument("--results", default="docs/convergence/results.jsonl")
    ap.add_argument("--out", default="docs/convergence")
    ap.add_argument("--report", action="store_true", help="write tables and plots into --out")
    ap.add_argument("--report_only", action="store_true", help="only --report, run nothing")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per cell")
    a = ap.parse_args()
    cfg = dict(FULL if a.full else QUICK)
    if a.models:
        # Model names hold commas ("mlp:256,128,cnn" is two models): a part
        # that is only digits continues the previous name.
        models = []
        for part in a.models.split(","):
            if part.isdigit() and models:
                models[-1] += "," + part
            else:
                models.append(part)
        cfg["models"] = models
    for field, conv in (("workers", int), ("rules", str), ("lrs", float), ("seeds", int),
                        ("schedules", str)):
        value = getattr(a, field)
        if value:
            cfg[field] = [conv(v) for v in value.split(",")]
    if a.epochs:
        cfg["epochs"] = a.epochs
    for rule in cfg["rules"]:
        if rule not in RULES:
            ap.error(f"unknown rule {rule}: use {', '.join(RULES)}")
    for m in cfg["workers"]:
        if m < 1 or DATA_SHARDS % m:
            ap.error(f"M = {m}: use divisors of {DATA_SHARDS} (every worker holds a lease)")

    if not a.report_only:
        done = {cell_key(r) for r in load(a.results)}
        todo = [c for c in cells(cfg) if cell_key(c) not in done]
        print(f"{len(todo)} cells to run ({len(done)} already in {a.results})", flush=True)
        data = a.data
        if todo and not data:
            scratch = tempfile.mkdtemp(prefix="dcasgd-study-")
            atexit.register(shutil.rmtree, scratch, ignore_errors=True)
            data = os.path.join(scratch, "data")
            harness.prepare_data(data, DATA_SHARDS)
        os.makedirs(os.path.dirname(os.path.abspath(a.results)), exist_ok=True)
        for i, c in enumerate(todo):
            r = run_cell(c, data, a.timeout)
            with open(a.results, "a") as f:
                f.write(json.dumps(r, sort_keys=True) + "\n")
            acc = r["final_accuracy"]
            print(f"[{i + 1}/{len(todo)}] {c['model']} {c['schedule']} M={c['workers']} "
                  f"{c['rule']} lr={c['lr']} seed={c['seed']}: "
                  f"{'%.4f' % acc if acc is not None else r.get('error')} "
                  f"(staleness {r.get('mean_staleness')}, {r['wall_seconds']} s)", flush=True)
    if a.report or a.report_only:
        print(report(load(a.results), a.out))


if __name__ == "__main__":
    main()
