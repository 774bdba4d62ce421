"""The convergence study's script (bench/convergence_study.py) on a tiny grid,
so that it cannot rot: two workers, one epoch, softmax. Checks the results it
records (accuracy, per-epoch accuracy, the staleness the shards reported;
dcasgd-a also with bfloat16 backups on the shards),
that a finished cell is not run again, and the report (tables and PNGs)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import harness

SCRIPT = os.path.join(harness.SOURCE_DIR, "bench", "convergence_study.py")


class ConvergenceStudySmoke(unittest.TestCase):
    def test_tiny_grid_records_results_and_reports(self):
        out = tempfile.mkdtemp(prefix="dcasgd-study-smoke-")
        self.addCleanup(shutil.rmtree, out, ignore_errors=True)
        results = os.path.join(out, "results.jsonl")
        args = [sys.executable, SCRIPT, "--models", "softmax", "--workers", "1,2",
                "--rules", "asgd,dcasgd-a,dcasgd-a-bf16", "--lrs", "0.05", "--seeds", "1", "--epochs", "1",
                "--results", results, "--out", out, "--report"]
        run = subprocess.run(args, capture_output=True, text=True, timeout=600)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        with open(results) as f:
            cells = [json.loads(line) for line in f]
        self.assertEqual(sorted((c["workers"], c["rule"]) for c in cells),
                         [(1, "sgd"), (2, "asgd"), (2, "dcasgd-a"), (2, "dcasgd-a-bf16")])
        for c in cells:
            self.assertGreater(c["final_accuracy"], 0.6, c)
            self.assertEqual(len(c["epoch_accuracy"]), 1, c)
            pushes = sum(c["staleness"].values())
            self.assertEqual(pushes, 960, c)
            # Round-robin: every push sees exactly M-1 others, except the
            # first of each worker and a push right after another worker
            # stepped out of the schedule to wait for a data lease (it pushes
            # again with less): rare, never more than M-1.
            m = c["workers"]
            hist = {int(k): v for k, v in c["staleness"].items()}
            self.assertLessEqual(max(hist), m - 1, c)
            self.assertGreaterEqual(hist.get(m - 1, 0), pushes * 0.98, c)
        with open(os.path.join(out, "tables.md")) as f:
            tables = f.read()
        self.assertIn("Sequential SGD (M = 1):", tables)
        self.assertRegex(tables, r"\| dcasgd-a \| [0-9.]+ \(lr 0\.05\) \|")
        # The measured staleness: the three M = 2 cells' pushes pooled.
        self.assertRegex(tables, r"\| round-robin \| 2 \| 2880 \| 1\.0 \| 1 \| 1 \| 1 \| 1 \| ")
        for name in ("final-vs-workers-softmax-round-robin.png",
                     "accuracy-per-epoch-softmax-round-robin.png"):
            with open(os.path.join(out, name), "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n", name)
        # Resuming: every cell is done, nothing runs again.
        again = subprocess.run(args[:-1], capture_output=True, text=True, timeout=120)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertIn("0 cells to run (4 already", again.stdout)


if __name__ == "__main__":
    unittest.main()
