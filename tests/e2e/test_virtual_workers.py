"""Virtual workers (issue 8, section 1): M logical workers in one
dcasgd-worker process against real shards, with a staleness under control.

Checks what the convergence study relies on: round-robin turns give every
push after the first round staleness exactly M-1, as the shards measure it
(their dcasgd_ps_staleness histograms) and as the worker reports it; every
logical worker is a worker of its own on every shard (joined, with its own
backup); with one worker the compensation term is zero, so DC-ASGD-c and
DC-ASGD-a train bit-identical models to ASGD, while with four they differ."""

import json
import re
import unittest

import harness
from harness import Cluster, wait_for

# 64 equal data shards: every M in the study divides them, so all M logical
# workers hold a lease until the job's last step.
DATA_SHARDS = 64
PS_FLAGS = ["--lr=0.05", "--lr_schedule=step", "--lr_decay_every=300", "--lr_decay_factor=0.3"]


def staleness_line(output):
    """The worker's 'staleness: {...}' line as {staleness: pushes}."""
    for line in output.splitlines():
        if line.startswith("staleness: "):
            return {int(k): v for k, v in json.loads(line[len("staleness: "):]).items()}
    return None


def fingerprint(output):
    match = re.search(r"^final test accuracy: .*weights ([0-9a-f]{16})\)$", output, re.M)
    return match.group(1) if match else None




class VirtualWorkers(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.store = Cluster("virtual-data")
        cls.data = cls.store.path("data")
        harness.prepare_data(cls.data, DATA_SHARDS)

    @classmethod
    def tearDownClass(cls):
        cls.store.close()

    def setUp(self):
        self.cluster = Cluster(self._testMethodName)

    def tearDown(self):
        self.cluster.close()

    def train(self, rule, workers, *flags, model="softmax"):
        self.cluster.start_shards(2, f"--update_rule={rule}", *PS_FLAGS)
        worker = self.cluster.start_worker(
            "vw", self.data, f"--virtual_workers={workers}", f"--model={model}", "--epochs=1",
            "--log_every=100000", *flags)
        self.assertEqual(worker.wait(300), 0, worker.output())
        return worker.output()

    def test_round_robin_staleness_is_exactly_m_minus_one(self):
        m = 4
        output = self.train("dcasgd-a", m, "--schedule=round-robin")
        seen = staleness_line(output)
        self.assertIsNotNone(seen, output)
        pushes = sum(seen.values())
        # 64 shards of 937 or 938 examples, batches of 64: 15 steps each.
        self.assertEqual(pushes, DATA_SHARDS * 15)
        # Everyone pulled version 0: the first round sees 0, 1, ..., M-1.
        self.assertEqual(seen, {**{s: 1 for s in range(m - 1)}, m - 1: pushes - (m - 1)})
        # The shards measured the same on every push.
        for _, _, metrics_port in self.cluster.shards:
            h = harness.metric_histogram(metrics_port, "dcasgd_ps_staleness")
            self.assertEqual(h["count"], pushes)
            self.assertEqual(h[m - 2], m - 1, h)   # the first round's 0 .. M-2
            self.assertEqual(h[m - 1], pushes, h)  # nothing above M-1
            self.assertEqual(h["sum"], sum(range(m)) + (pushes - m) * (m - 1))

    def test_every_logical_worker_has_its_own_backup_on_every_shard(self):
        m = 5
        self.cluster.start_shards(2, "--update_rule=dcasgd-c", *PS_FLAGS)
        worker = self.cluster.start_worker(
            "vw", self.data, f"--virtual_workers={m}", "--model=mlp:64", "--epochs=5",
            "--log_every=100000")
        addresses = self.cluster.addresses().split(",")

        def all_joined():
            statuses = [harness.shard_status(a) for a in addresses]
            return all(s.active_workers == m and s.weight_bytes > 0 and s.version > 0 and
                       s.backup_bytes == m * s.weight_bytes for s in statuses) and statuses
        wait_for(all_joined, 60, f"{m} training workers with a backup each on both shards")
        worker.signal(__import__("signal").SIGTERM)
        self.assertEqual(worker.wait(60), 0, worker.output())
        # Leaving frees every backup.
        wait_for(lambda: all(harness.shard_status(a).backup_bytes == 0 for a in addresses),
                 30, "the backups to be freed")

    def test_one_worker_makes_dcasgd_equal_asgd_bit_for_bit(self):
        prints = {}
        for rule in ("asgd", "dcasgd-c", "dcasgd-a"):
            for m in (1, 4):
                output = self.train(rule, m)
                prints[(rule, m)] = fingerprint(output)
                self.assertIsNotNone(prints[(rule, m)], output)
                self.cluster.close()
                self.cluster = Cluster(f"{self._testMethodName}-{rule}-{m}")
        self.assertEqual(prints[("dcasgd-c", 1)], prints[("asgd", 1)])
        self.assertEqual(prints[("dcasgd-a", 1)], prints[("asgd", 1)])
        # With staleness the compensation changes the model.
        self.assertNotEqual(prints[("dcasgd-c", 4)], prints[("asgd", 4)])
        self.assertNotEqual(prints[("dcasgd-a", 4)], prints[("asgd", 4)])

    def test_the_data_cache_changes_what_is_read_not_what_is_trained(self):
        """Two epochs: with the cache (the default) the second reads no data
        shard; the model is bit-identical to one trained without it. (One
        logical worker: with more, which of them leases which data shard
        depends on thread timing, so runs differ anyway.)"""
        prints, outputs = {}, {}
        for cache_mb in (0, 256):
            output = self.train("dcasgd-a", 1, "--epochs=2", f"--data_cache_mb={cache_mb}")
            prints[cache_mb], outputs[cache_mb] = fingerprint(output), output
            self.assertIsNotNone(prints[cache_mb], output)
            self.cluster.close()
            self.cluster = Cluster(f"{self._testMethodName}-{cache_mb}")
        self.assertEqual(prints[0], prints[256])
        self.assertNotIn("data cache:", outputs[0])
        # Every data shard decoded once (the first epoch), found the second.
        self.assertIn(f"data cache: {DATA_SHARDS} hits, {DATA_SHARDS} misses", outputs[256])

    def test_turns_on_ssgd_shards_are_refused_with_a_hint(self):
        self.cluster.start_shards(1, "--sync=ssgd")
        worker = self.cluster.start_worker("vw", self.data, "--virtual_workers=2",
                                           "--model=softmax", "--schedule=round-robin")
        self.assertNotEqual(worker.wait(60), 0)
        self.assertIn("use --schedule=free", worker.output())

    def test_free_schedule_runs_ssgd_rounds(self):
        # M divides the 64 equal data shards: an SSGD round waits for every
        # joined worker, so one waiting for a lease would stall it.
        self.cluster.start_shards(1, "--sync=ssgd", "--update_rule=asgd", "--lr=0.1")
        worker = self.cluster.start_worker("vw", self.data, "--virtual_workers=4",
                                           "--model=softmax", "--schedule=free", "--epochs=1",
                                           "--log_every=100000")
        self.assertEqual(worker.wait(300), 0, worker.output())
        accuracy = harness.final_accuracy(worker.output())
        self.assertIsNotNone(accuracy, worker.output())
        self.assertGreater(accuracy, 0.7)


if __name__ == "__main__":
    unittest.main()
