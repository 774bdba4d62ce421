"""End to end: a TorchScript CNN trained by C++ workers through real shards
(issue 12, section 2). The module is saved at test time by
examples/torchscript/save_modules.py (python3-torch); the workers and the
evaluator load it with --model=torchscript:PATH (a LibTorch build,
-DDCASGD_WITH_TORCH=ON, as scripts/test.sh configures) and train on the real
Fashion-MNIST data set."""

import os
import re
import subprocess
import unittest

import harness
from harness import Cluster, wait_for

# dcasgd-worker-torch: the worker with TorchScript models (dcasgd-worker
# refuses them, see test_the_plain_worker_points_to_the_torch_worker).
TORCH = harness.WORKER_TORCH_BINARY
DATA_SHARDS = 12
SAVE_MODULES = os.path.join(harness.SOURCE_DIR, "examples", "torchscript", "save_modules.py")
STEPS = 250  # per worker, batch 32: 16,000 examples, about a quarter epoch
EVAL_LINE = re.compile(r"\[eval\] model version (\d+): test accuracy ([0-9.]+)")


def evaluations(output):
    """(model version, test accuracy) of every evaluation the evaluator logged."""
    return [(int(v), float(a)) for v, a in EVAL_LINE.findall(output)]


class TorchScriptTraining(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.store = Cluster("torchscript-data")
        cls.data = cls.store.path("fashion-mnist")
        harness.prepare_data(cls.data, DATA_SHARDS)
        modules = cls.store.path("modules")
        subprocess.run(["/usr/bin/python3", SAVE_MODULES, modules], check=True, timeout=300)
        cls.cnn = os.path.join(modules, "cnn.pt")

    @classmethod
    def tearDownClass(cls):
        cls.store.close()

    def setUp(self):
        self.cluster = Cluster(self._testMethodName)

    def tearDown(self):
        self.cluster.close()

    def test_scripted_cnn_trains_through_the_shards(self):
        self.cluster.start_shards(2, "--update_rule=dcasgd-a", "--lr=0.05")
        model = f"--model=torchscript:{self.cnn}"
        # One step declares the module (its saved weights) and barely moves
        # it: the evaluator's first evaluation is of a near-untrained model,
        # whatever the machine's load.
        declare = self.cluster.start_worker("declare", self.data, model, "--batch_size=32",
                                            "--max_steps=1", binary=TORCH)
        self.assertEqual(declare.wait(300), 0, declare.output()[-2000:])
        evaluator = self.cluster.start_worker("evaluator", self.data, model,
                                              "--eval_interval_seconds=2", role="eval",
                                              binary=TORCH)
        first = wait_for(lambda: evaluations(evaluator.output()), 120,
                         "the evaluator's first evaluation")[0]
        self.assertEqual(first[0], 2, "one push to each of the two shards")
        workers = [self.cluster.start_worker(f"worker-{i}", self.data, model,
                                             "--batch_size=32", f"--max_steps={STEPS}",
                                             "--log_every=50", binary=TORCH)
                   for i in range(2)]
        for w in workers:
            self.assertEqual(w.wait(600), 0, w.output()[-2000:])
        # Every step pushed to every shard: each shard's version counts the
        # pushes, and the evaluator's model version is their sum.
        versions = [harness.shard_status(f"127.0.0.1:{g}").version
                    for _, g, _ in self.cluster.shards]
        self.assertEqual(versions, [1 + 2 * STEPS] * 2)
        final = wait_for(lambda: [e for e in evaluations(evaluator.output())
                                  if e[0] == sum(versions)], 120,
                         "an evaluation of the trained model")[0]
        print(f"torchscript cnn: test accuracy {first[1]:.4f} at model version {first[0]}, "
              f"{final[1]:.4f} after {2 * STEPS} more pushes of batch 32")
        self.assertLess(first[1], 0.3, "one step from the saved module")
        self.assertGreater(final[1], 0.65, evaluator.output()[-2000:])
        # The shards hold the module's parameters under their torch names.
        status = harness.shard_status(self.cluster.addresses().split(",")[0])
        names = {t.spec.name for t in status.tensors}
        self.assertEqual(names, {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                                 "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"})

    def test_a_wrong_module_ends_the_worker_with_the_contract(self):
        self.cluster.start_shards(1)
        modules = os.path.dirname(self.cnn)
        worker = self.cluster.start_worker(
            "worker-0", self.data,
            f"--model=torchscript:{os.path.join(modules, 'broken_output_width.pt')}",
            binary=TORCH)
        self.assertEqual(worker.wait(120), 1, worker.output()[-2000:])
        self.assertIn("return one float32 tensor of N x 10 logits", worker.output())
        # Nothing was declared on the shard.
        self.assertEqual(len(harness.shard_status(self.cluster.addresses()).tensors), 0)

    def test_the_plain_worker_points_to_the_torch_worker(self):
        # dcasgd-worker never loads LibTorch (it would add seconds to every
        # start); asked for a TorchScript model it names the program that can.
        self.cluster.start_shards(1)
        worker = self.cluster.start_worker("worker-0", self.data,
                                           f"--model=torchscript:{self.cnn}")
        self.assertEqual(worker.wait(120), 1, worker.output()[-2000:])
        self.assertIn("built without LibTorch: run dcasgd-worker-torch", worker.output())


if __name__ == "__main__":
    unittest.main()
