"""examples/python/train_fashion_mnist.py end to end against real dcasgd-ps
shards on Fashion-MNIST: it must learn (softmax regression reaches ~84% after
a full epoch; these short runs must clear lower bars: >= 78% after one epoch on one worker). Skipped without
$DCASGD_PS_BINARY or the data set (apt: dataset-fashion-mnist)."""

import os
import re
import subprocess
import sys
import unittest

import dcasgd
from shard_cluster import ShardCluster, require_ps_binary

_HERE = os.path.dirname(os.path.abspath(__file__))
_EXAMPLE = os.path.join(_HERE, "..", "..", "examples", "python", "train_fashion_mnist.py")
_DATA = "/usr/share/datasets/fashion-mnist"


def _run_example(addresses, *flags):
    result = subprocess.run(
        [sys.executable, _EXAMPLE, "--shards=" + ",".join(addresses), "--data_dir=" + _DATA]
        + list(flags), capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise AssertionError("example failed (%d):\n%s\n%s" % (result.returncode, result.stdout,
                                                               result.stderr))
    match = re.search(r"steps=(\d+) .* test_accuracy=([0-9.]+)", result.stdout)
    if match is None:
        raise AssertionError("no result line in:\n" + result.stdout)
    return int(match.group(1)), float(match.group(2))


@require_ps_binary
@unittest.skipUnless(os.path.exists(os.path.join(_DATA, "train-images-idx3-ubyte.gz")),
                     "Fashion-MNIST not installed")
class TrainExampleTest(unittest.TestCase):

    def test_own_data_two_shards_learns(self):
        with ShardCluster(2, ["--update_rule=dcasgd-a", "--lr=0.1"]) as cluster:
            steps, acc = _run_example(cluster.addresses, "--epochs=1", "--batch_size=100",
                                      "--worker_name=example-own")
            with dcasgd.Client(cluster.addresses) as evaluator:
                versions = [s.version for s in evaluator.status()]
        self.assertEqual(steps, 600)
        # Both shards own chunks of softmax/w and applied every step.
        self.assertEqual(versions, [600, 600])
        self.assertGreaterEqual(acc, 0.78)

    def test_coordinator_leases_cover_the_epoch(self):
        with ShardCluster(2, ["--update_rule=asgd", "--lr=0.1"]) as cluster:
            steps, acc = _run_example(cluster.addresses, "--coordinator", "--epochs=1",
                                      "--num_data_shards=4", "--batch_size=100",
                                      "--train_limit=12000", "--worker_name=example-coord")
            with dcasgd.DataCoordinatorClient(cluster.addresses[0]) as coordinator:
                status = coordinator.job_status()
        self.assertTrue(status.done)
        self.assertEqual(status.completed, 4)
        self.assertEqual(status.num_data_shards, 4)
        self.assertEqual(steps, 4 * 30)  # 3000 examples per data shard
        self.assertGreaterEqual(acc, 0.70)


if __name__ == "__main__":
    unittest.main()
