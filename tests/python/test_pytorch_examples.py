"""examples/pytorch/train_cnn.py as a user runs it, against real dcasgd-ps
shards and data made by dcasgd-prepare-data: two PyTorch workers train the
CNN together (their accuracy rises, they lease different data shards), and a
mixed job of a PyTorch worker and a C++ dcasgd-worker on the same model runs
to its end with every data shard trained once. Needs python3-torch and the
dcasgd-ps, dcasgd-worker and dcasgd-prepare-data binaries: without them the
suite fails, it does not skip."""

import os
import re
import subprocess
import tempfile
import time
import unittest

import dcasgd
from shard_cluster import ShardCluster

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLE = os.path.join(REPO, "examples", "pytorch", "train_cnn.py")
DATA_SHARDS = 60
TORCH_DONE = re.compile(r"^\[[^\]]+\] trained data shard (\d+) of epoch (\d+)$", re.M)
CPP_DONE = re.compile(r"^\[[^\]]+\] trained data shard (\d+) of epoch (\d+) \(lease", re.M)
ACCURACY = re.compile(r"^final test accuracy: ([0-9.]+)", re.M)


def binary(variable):
    path = os.environ.get(variable, "")
    if not (path and os.access(path, os.X_OK)):
        raise AssertionError("$%s does not name an executable (tests/python/CMakeLists.txt "
                             "sets it)" % variable)
    return path


class PyTorchExamplesTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="dcasgd-torch-examples-")
        cls.data = os.path.join(cls.tmp.name, "data")
        subprocess.run([binary("DCASGD_PREPARE_DATA_BINARY"), "--dest=" + cls.data,
                        "--shards=%d" % DATA_SHARDS], check=True, capture_output=True,
                       timeout=300)
        cls.env = dict(os.environ)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def torch_worker(self, cluster, name, *flags):
        log = open(os.path.join(self.tmp.name, name + ".log"), "w+", encoding="utf-8")
        self.addCleanup(log.close)
        process = subprocess.Popen(
            ["/usr/bin/python3", EXAMPLE, "--ps=" + ",".join(cluster.addresses),
             "--data=" + self.data, "--worker_name=" + name, "--test_examples=2000"]
            + list(flags), stdout=log, stderr=subprocess.STDOUT, env=self.env)
        self.addCleanup(lambda: process.poll() is None and process.kill())
        return process, log

    def cpp_worker(self, cluster, name, *flags):
        log = open(os.path.join(self.tmp.name, name + ".log"), "w+", encoding="utf-8")
        self.addCleanup(log.close)
        process = subprocess.Popen(
            [binary("DCASGD_WORKER_BINARY"), "--role=train",
             "--ps_addresses=" + ",".join(cluster.addresses), "--data=" + self.data,
             "--worker_name=" + name, "--metrics_address=127.0.0.1:0", "--model=cnn",
             "--batch_size=64"] + list(flags), stdout=log, stderr=subprocess.STDOUT)
        self.addCleanup(lambda: process.poll() is None and process.kill())
        return process, log

    def finish(self, process, log, timeout=300):
        code = process.wait(timeout=timeout)
        log.seek(0)
        output = log.read()
        self.assertEqual(code, 0, output[-3000:])
        return output

    def test_two_pytorch_workers_train_the_cnn_together(self):
        with ShardCluster(2, ["--update_rule=dcasgd-a", "--lr=0.1"]) as cluster:
            workers = [self.torch_worker(cluster, "torch-%d" % i, "--max_steps=150",
                                         "--seed=%d" % (i + 1)) for i in range(2)]
            outputs = [self.finish(*w) for w in workers]
            with dcasgd.Client(cluster.addresses) as evaluator:
                versions = [s.version for s in evaluator.status()]
        # Both pushed every step to both shards (the CNN's tensors span them).
        self.assertEqual(versions, [300, 300])
        done = [set(TORCH_DONE.findall(out)) for out in outputs]
        self.assertTrue(done[0] and done[1], outputs)
        self.assertEqual(done[0] & done[1], set(), "a data shard was leased to both")
        for out in outputs:
            self.assertIn("stopped after 150 steps", out)
            accuracy = float(ACCURACY.search(out).group(1))
            # From chance (0.1) to well above it in 300 shared updates.
            self.assertGreater(accuracy, 0.6, out[-1500:])
            print("two PyTorch workers, 150 steps each: accuracy %.3f" % accuracy)

    def test_mixed_pytorch_and_cpp_job_runs_to_its_end(self):
        with ShardCluster(2, ["--update_rule=dcasgd-a", "--lr=0.1"]) as cluster:
            # The PyTorch worker declares the model first; the C++ worker
            # joins the declared tensors (same names and shapes).
            torch_worker = self.torch_worker(cluster, "torch", "--epochs=1", "--log_every=20")
            deadline = time.monotonic() + 120
            while "step 20:" not in open(torch_worker[1].name, encoding="utf-8").read():
                self.assertIsNone(torch_worker[0].poll(), "the PyTorch worker exited early")
                self.assertLess(time.monotonic(), deadline, "the PyTorch worker did not train")
                time.sleep(0.1)
            cpp_worker = self.cpp_worker(cluster, "cpp", "--epochs=1")
            torch_out = self.finish(*torch_worker)
            cpp_out = self.finish(*cpp_worker)
            with dcasgd.Client(cluster.addresses) as evaluator:
                versions = [s.version for s in evaluator.status()]
            with dcasgd.DataCoordinatorClient(cluster.addresses[0]) as coordinator:
                job = coordinator.job_status()
        self.assertIn("model already declared with another initialiser; joining it", cpp_out)
        self.assertTrue(job.done)
        self.assertEqual(job.completed, DATA_SHARDS)
        torch_done = set(TORCH_DONE.findall(torch_out))
        cpp_done = set(CPP_DONE.findall(cpp_out))
        self.assertTrue(torch_done and cpp_done, (len(torch_done), len(cpp_done)))
        self.assertEqual(torch_done & cpp_done, set(), "a data shard was trained twice")
        self.assertEqual(torch_done | cpp_done, {(str(s), "1") for s in range(DATA_SHARDS)})
        torch_steps = int(re.search(r"job done after (\d+) steps", torch_out).group(1))
        cpp_steps = int(re.search(r"job done after (\d+) steps", cpp_out).group(1))
        self.assertEqual(versions, [torch_steps + cpp_steps] * 2)
        accuracy = float(ACCURACY.search(torch_out).group(1))
        # One epoch of the CNN (docs/benchmarks.md: ~85-90% after an epoch).
        self.assertGreater(accuracy, 0.75, torch_out[-1500:])
        print("mixed job: %d PyTorch + %d C++ steps, %d + %d data shards, accuracy %.3f" %
              (torch_steps, cpp_steps, len(torch_done), len(cpp_done), accuracy))


if __name__ == "__main__":
    unittest.main()
