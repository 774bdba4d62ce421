"""examples/node/worker.js (Node.js, @grpc/grpc-js, the repository's protos)
against real dcasgd-ps shards: its join, declare, pull and PushPull agree bit
for bit with what the Python client reads from the same shards, its chunks
land where the placement rule says, and a wrong shard order is refused."""

import json
import os
import subprocess
import unittest

import numpy as np

import dcasgd
from shard_cluster import ShardCluster

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLE = os.path.join(REPO, "examples", "node", "worker.js")


def run_example(*args):
    return subprocess.run(["node", EXAMPLE] + list(args), capture_output=True, text=True,
                          timeout=60, check=False)


class NodeExampleTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if not os.path.isdir(os.path.join(REPO, "examples", "node", "node_modules", "@grpc")):
            raise AssertionError("examples/node has no node_modules: run examples/node/install.sh")
        # ASGD with lr = 1: w <- w - g exactly, so every value is known.
        cls.cluster = ShardCluster(3, ["--update_rule=asgd", "--lr=1"])

    @classmethod
    def tearDownClass(cls):
        cls.cluster.stop()

    def test_node_worker_joins_pulls_and_pushes_on_real_shards(self):
        result = run_example("--ps", ",".join(self.cluster.addresses), "--name", "node-1",
                             "--tensor", "node/w")
        self.assertEqual(result.returncode, 0, result.stderr)
        out = json.loads(result.stdout)
        w0 = np.arange(6, dtype=np.float32) * np.float32(0.5)
        g = np.float32(0.25) * np.arange(1, 7, dtype=np.float32)
        np.testing.assert_array_equal(np.array(out["pulled"], np.float32), w0)
        np.testing.assert_array_equal(np.array(out["after"], np.float32), w0 - g)

        # The shards agree, read by another client in another language.
        with dcasgd.Client(self.cluster.addresses) as evaluator:
            evaluator.fetch_specs()
            layout = evaluator.layout("node/w")
            self.assertEqual((layout.shape, layout.chunk_elements), ((6,), 2))
            np.testing.assert_array_equal(evaluator.pull(["node/w"])["node/w"], w0 - g)
            statuses = evaluator.status()
            # Node's placement matches the Python (and C++) rule.
            self.assertEqual(out["owned"], [list(layout.chunks_of_shard(s, 3))
                                            for s in range(3)])
            for s, status in enumerate(statuses):
                owned = sum(t.owned_chunks for t in status.tensors if t.spec.name == "node/w")
                self.assertEqual(owned, len(out["owned"][s]))
                if owned:
                    self.assertEqual(out["versions"][s], status.version)
                # The worker left: no live session remains.
                self.assertEqual(status.active_workers, 0)

    def test_shards_in_the_wrong_order_are_refused(self):
        addresses = list(reversed(self.cluster.addresses))
        result = run_example("--ps", ",".join(addresses), "--tensor", "node/refused")
        self.assertEqual(result.returncode, 1)
        self.assertIn("is shard 2 of 3, not 0 of 3", result.stderr)
        with dcasgd.Client(self.cluster.addresses) as evaluator:
            names = {t.spec.name for s in evaluator.status() for t in s.tensors}
        self.assertNotIn("node/refused", names)

    def test_an_unreachable_shard_is_a_clear_error(self):
        result = run_example("--ps", "127.0.0.1:1")
        self.assertEqual(result.returncode, 1)
        self.assertIn("UNAVAILABLE", result.stderr)


if __name__ == "__main__":
    unittest.main()
