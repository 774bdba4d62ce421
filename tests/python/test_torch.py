"""dcasgd.torch against real dcasgd-ps shards: the parameter round trip bit
for bit, the optimizer's push/pull and recovery, the leased data set over
data shards made by dcasgd-prepare-data, and a short CNN run whose accuracy
rises. Needs python3-torch (scripts/install-deps.sh torch): without it the
suite fails, it does not skip."""

import os
import subprocess
import tempfile
import threading
import unittest
import zlib

import grpc
import numpy as np
import torch
import torch.nn.functional as F

import dcasgd
import dcasgd.data
import dcasgd.torch
from shard_cluster import ShardCluster, require_ps_binary

PREPARE = os.environ.get("DCASGD_PREPARE_DATA_BINARY", "")
FASHION = "/usr/share/datasets/fashion-mnist"


def bits(tensor):
    """The float32 bit patterns of a tensor (exact comparison, NaN-safe)."""
    return tensor.detach().contiguous().view(torch.int32).clone()


class Toy(torch.nn.Module):
    """Parameters of every shape the contract allows: a scalar, a vector,
    a matrix spanning many chunks, a frozen one (not shared), a buffer."""

    def __init__(self, seed):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.scale = torch.nn.Parameter(torch.randn((), generator=generator))
        self.bias = torch.nn.Parameter(torch.randn(7, generator=generator))
        self.weight = torch.nn.Parameter(torch.randn(33, 9, generator=generator))
        self.frozen = torch.nn.Parameter(torch.randn(3, generator=generator), requires_grad=False)
        self.register_buffer("running", torch.zeros(3))

    def forward(self, x):
        return self.scale * (x @ self.weight).sum() + self.bias.sum()


def make_shard_bytes(pixels, labels, rows, cols, classes):
    """A .dsd object as docs/data-format.md specifies it."""
    header = (b"DCASGDDS" + (1).to_bytes(4, "little") + (0).to_bytes(4, "little") +
              len(labels).to_bytes(8, "little") + rows.to_bytes(4, "little") +
              cols.to_bytes(4, "little") + classes.to_bytes(4, "little") +
              (0).to_bytes(4, "little"))
    body = header + bytes(pixels) + bytes(labels)
    return body + (zlib.crc32(body) & 0xFFFFFFFF).to_bytes(4, "little")


@require_ps_binary
class ShardOptimizerTest(unittest.TestCase):

    def test_parameters_round_trip_bit_for_bit(self):
        # Three shards and 16-element chunks: weight (297 elements) spans 19
        # chunks over every shard.
        with ShardCluster(3, ["--update_rule=asgd", "--lr=0.5"]) as cluster:
            first = Toy(seed=1)
            declared = {n: bits(p) for n, p in first.named_parameters()}
            with dcasgd.Client(cluster.addresses, worker_name="w1") as ps:
                opt = dcasgd.torch.ShardOptimizer(first, ps, chunk_elements=16)
                self.assertEqual(opt.tensor_names, ["scale", "bias", "weight"])
                for name, param in first.named_parameters():
                    self.assertTrue(torch.equal(bits(param), declared[name]), name)

                # A second worker with other initial values joins the job:
                # it gets the first worker's values, bit for bit; its frozen
                # parameter and buffer stay its own.
                second = Toy(seed=2)
                frozen = bits(second.frozen)
                with dcasgd.Client(cluster.addresses, worker_name="w2") as ps2:
                    dcasgd.torch.ShardOptimizer(second, ps2, chunk_elements=16)
                for name in ("scale", "bias", "weight"):
                    self.assertTrue(torch.equal(bits(getattr(second, name)), declared[name]), name)
                self.assertTrue(torch.equal(bits(second.frozen), frozen))
                self.assertNotIn("frozen", [s.spec.name for s in ps.status()[0].tensors])

                # A step: ASGD with lr 0.5 on gradients of small integers is
                # exact in float32: w - 0.5 * g, bit for bit, loaded into the
                # module; 'bias' has no gradient and is pushed as zeros.
                expected = {}
                for name, param in first.named_parameters():
                    if name in ("scale", "weight"):
                        param.grad = torch.arange(param.numel(), dtype=torch.float32).reshape(
                            param.shape) % 5 - 2
                        expected[name] = param.detach() - 0.5 * param.grad
                    elif name == "bias":
                        expected[name] = param.detach().clone()
                opt.step()
                for name, value in expected.items():
                    self.assertTrue(torch.equal(bits(getattr(first, name)), bits(value)), name)
                self.assertEqual(opt.steps, 1)
                self.assertEqual(opt.last_result.versions, [1, 1, 1])
                # What the shards hold now is what the module holds.
                pulled = dcasgd.Client(cluster.addresses)
                try:
                    values = pulled.pull(opt.tensor_names)
                finally:
                    pulled.close()
                for name in opt.tensor_names:
                    self.assertTrue(torch.equal(
                        bits(torch.from_numpy(values[name])), bits(getattr(first, name))), name)

    def test_a_module_of_another_shape_is_refused_by_name(self):
        with ShardCluster(1) as cluster:
            with dcasgd.Client(cluster.addresses, worker_name="a") as ps:
                dcasgd.torch.ShardOptimizer(torch.nn.Linear(4, 3), ps)
            with dcasgd.Client(cluster.addresses, worker_name="b") as ps:
                with self.assertRaisesRegex(ValueError, r"'weight'.*\[3, 4\].*\[2, 4\]"):
                    dcasgd.torch.ShardOptimizer(torch.nn.Linear(4, 2), ps)

    def test_names_map_parameters_to_tensor_names(self):
        with ShardCluster(2) as cluster:
            with dcasgd.Client(cluster.addresses, worker_name="n") as ps:
                opt = dcasgd.torch.ShardOptimizer(torch.nn.Linear(4, 3), ps,
                                                  names=lambda n: "lin/" + n)
                self.assertEqual(opt.tensor_names, ["lin/weight", "lin/bias"])
                self.assertEqual(sorted(t.spec.name for t in ps.status()[0].tensors),
                                 ["lin/bias", "lin/weight"])
                with self.assertRaisesRegex(ValueError, "no tensor name for parameter 'bias'"):
                    dcasgd.torch.ShardOptimizer(torch.nn.Linear(4, 3), ps,
                                                names={"weight": "x"})

    def test_non_finite_gradient_is_refused_before_sending(self):
        with ShardCluster(1, ["--update_rule=asgd"]) as cluster:
            with dcasgd.Client(cluster.addresses, worker_name="nan") as ps:
                model = torch.nn.Linear(2, 2)
                opt = dcasgd.torch.ShardOptimizer(model, ps)
                model.weight.grad = torch.tensor([[1.0, float("nan")], [0.0, 0.0]])
                with self.assertRaises(dcasgd.Error) as caught:
                    opt.step()
                self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
                self.assertIn("'weight'", caught.exception.message)
                self.assertEqual(ps.status()[0].version, 0)

    def test_a_lost_worker_lease_recomputes_with_the_closure_and_applies_once(self):
        with ShardCluster(2, ["--update_rule=asgd", "--lr=0.5"]) as cluster:
            with dcasgd.Client(cluster.addresses, worker_name="lost") as ps:
                model = torch.nn.Linear(300, 300)  # both tensors on both shards
                opt = dcasgd.torch.ShardOptimizer(model, ps, chunk_elements=1024)
                x = torch.ones(1, 300)
                calls = []

                def closure():
                    calls.append(1)
                    opt.zero_grad()
                    loss = model(x).sum()
                    loss.backward()
                    return loss

                # Shard 1 forgets this worker (as after a lease expiry): the
                # push fails there with FAILED_PRECONDITION; shard 0 applied it.
                ps.stub(1).Leave(dcasgd.v1.ps_pb2.LeaveRequest(worker_id=ps.worker_id(1),
                                                               session=ps.session(1)))
                opt.step(closure)
                self.assertEqual(len(calls), 2)  # computed again after the pull
                # Each shard applied the batch exactly once (same step).
                self.assertEqual([s.version for s in ps.status()], [1, 1])
                self.assertEqual(opt.steps, 1)
                self.assertEqual(opt.dropped_batches, 0)

                # Without a closure the batch is dropped after the pull.
                ps.stub(0).Leave(dcasgd.v1.ps_pb2.LeaveRequest(worker_id=ps.worker_id(0),
                                                               session=ps.session(0)))
                closure()
                opt.step()
                self.assertEqual(opt.dropped_batches, 1)
                versions = [s.version for s in ps.status()]
                self.assertEqual(versions[0], 1)  # not applied where it failed
                # The module holds the job's weights again (a valid backup).
                evaluator = dcasgd.Client(cluster.addresses)
                try:
                    weights = evaluator.pull(opt.tensor_names)
                finally:
                    evaluator.close()
                np.testing.assert_array_equal(weights["weight"], model.weight.detach().numpy())


class DataShardTest(unittest.TestCase):

    def test_decode_checks_every_field(self):
        pixels = np.arange(2 * 6, dtype=np.uint8)
        blob = make_shard_bytes(pixels, [1, 2], 2, 3, 3)
        shard = dcasgd.data.decode_data_shard(blob, "mem")
        self.assertEqual((len(shard), shard.rows, shard.cols, shard.num_classes), (2, 2, 3, 3))
        np.testing.assert_array_equal(shard.pixels.reshape(-1), pixels)
        np.testing.assert_array_equal(shard.labels, [1, 2])
        np.testing.assert_allclose(shard.features()[1, 5], 11 / 255.0)
        corrupt = bytearray(blob)
        corrupt[45] ^= 1
        cases = {
            "truncated": blob[:30],
            "bad magic": b"X" + blob[1:],
            "CRC-32 mismatch": bytes(corrupt),
            "label 3 >= 3 classes": make_shard_bytes(pixels, [1, 3], 2, 3, 3),
            "needs": make_shard_bytes(pixels[:-1], [1, 2], 2, 3, 3),
        }
        for message, data in cases.items():
            with self.subTest(message):
                with self.assertRaisesRegex(dcasgd.data.DataError, "^mem: .*" + message):
                    dcasgd.data.decode_data_shard(data, "mem")
        newer = bytearray(make_shard_bytes(pixels, [1, 2], 2, 3, 3))
        newer[8] = 2
        newer[-4:] = (zlib.crc32(bytes(newer[:-4])) & 0xFFFFFFFF).to_bytes(4, "little")
        with self.assertRaisesRegex(dcasgd.data.DataError, "format version 2"):
            dcasgd.data.decode_data_shard(bytes(newer), "mem")


def prepare(dest, shards):
    if not os.access(PREPARE, os.X_OK):
        raise AssertionError("DCASGD_PREPARE_DATA_BINARY does not name dcasgd-prepare-data")
    subprocess.run([PREPARE, "--dest=" + dest, "--shards=%d" % shards], check=True,
                   capture_output=True, timeout=300)


@require_ps_binary
class LeasedDatasetTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="dcasgd-torch-data-")
        cls.data_dir = os.path.join(cls.tmp.name, "fmnist")
        prepare(cls.data_dir, 60)
        cls.data = dcasgd.data.DataSet.open(cls.data_dir)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_the_data_set_matches_the_idx_files(self):
        self.assertEqual(self.data.num_train_shards, 60)
        shard = self.data.load_train(0)
        self.assertEqual((len(shard), shard.rows, shard.cols, shard.num_classes),
                         (1000, 28, 28, 10))
        test = self.data.load_test()
        self.assertEqual(len(test), 10000)
        # Unshuffled: data shard 0 holds the first 1000 training images.
        import gzip  # pylint: disable=import-outside-toplevel
        with gzip.open(os.path.join(FASHION, "train-labels-idx1-ubyte.gz"), "rb") as f:
            labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
        np.testing.assert_array_equal(shard.labels, labels[:1000])

    def test_two_workers_cover_every_data_shard_once_per_epoch(self):
        with ShardCluster(1) as cluster:
            address = cluster.addresses[0]
            a = dcasgd.torch.LeasedDataset(self.data, address, "a", epochs=2, batch_size=500)
            b = dcasgd.torch.LeasedDataset(self.data, address, "b", epochs=2, batch_size=500)
            seen = {"a": [], "b": []}

            def consume(name, dataset):
                # Two training loops at once, as two worker processes would;
                # each waits for the other's leases at the end of an epoch.
                for x, y in dataset:
                    seen[name].append((tuple(x.shape), x.dtype, y.dtype))

            threads = [threading.Thread(target=consume, args=item)
                       for item in (("a", a), ("b", b))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
                self.assertFalse(thread.is_alive(), "a worker did not finish the job")
            batches = seen["a"] + seen["b"]
            self.assertEqual(set(batches), {((500, 1, 28, 28), torch.float32, torch.int64)})
            with dcasgd.DataCoordinatorClient(address) as coordinator:
                status = coordinator.job_status()
        completed = a.completed + b.completed
        self.assertEqual(sorted(completed), [(e, s) for e in range(2) for s in range(60)])
        self.assertTrue(a.job_done and b.job_done)
        self.assertTrue(status.done)
        self.assertEqual(status.completed, 120)
        self.assertEqual(status.leased, 0)
        self.assertEqual(len(batches), 120 * 2)
        self.assertGreater(min(len(seen["a"]), len(seen["b"])), 0)

    def test_a_stopped_worker_leaves_its_shard_to_the_next(self):
        with ShardCluster(1, ["--lease_seconds=1"]) as cluster:
            address = cluster.addresses[0]
            first = dcasgd.torch.LeasedDataset(self.data, address, "first", batch_size=100,
                                               max_steps=3)
            self.assertEqual(sum(1 for _ in first), 3)
            self.assertEqual(first.completed, [])  # stopped inside data shard 0
            second = dcasgd.torch.LeasedDataset(self.data, address, "second", batch_size=1000)
            steps = sum(1 for _ in second)
            with dcasgd.DataCoordinatorClient(address) as coordinator:
                status = coordinator.job_status()
        self.assertEqual(steps, 60)
        self.assertEqual(sorted(second.completed), [(0, s) for s in range(60)])
        self.assertEqual(status.reissued, 1)


@require_ps_binary
class ShortCnnRunTest(unittest.TestCase):

    def test_accuracy_rises(self):
        with tempfile.TemporaryDirectory(prefix="dcasgd-torch-cnn-") as tmp:
            prepare(os.path.join(tmp, "data"), 60)
            data = dcasgd.data.DataSet.open(os.path.join(tmp, "data"))
            test = data.load_test()
            x_test = torch.from_numpy(test.features()[:2000])
            y_test = torch.from_numpy(test.labels[:2000].astype(np.int64))
            torch.manual_seed(3)
            model = dcasgd.torch.ConvNet()

            def accuracy():
                with torch.no_grad():
                    return float((model(x_test).argmax(1) == y_test).float().mean())

            with ShardCluster(2, ["--update_rule=dcasgd-a", "--lr=0.1"]) as cluster:
                with dcasgd.Client(cluster.addresses, worker_name="cnn") as ps:
                    opt = dcasgd.torch.ShardOptimizer(model, ps)
                    before = accuracy()
                    batches = dcasgd.torch.LeasedDataset(data, cluster.addresses[0], "cnn",
                                                         batch_size=64, max_steps=200)
                    for x, y in batches:
                        opt.zero_grad()
                        F.cross_entropy(model(x), y).backward()
                        opt.step()
                    after = accuracy()
                    versions = [s.version for s in ps.status()]
        self.assertEqual(opt.steps, 200)
        self.assertEqual(versions, [200, 200])
        self.assertLess(before, 0.3)
        self.assertGreater(after, 0.6)
        print("cnn accuracy %.3f -> %.3f after 200 steps" % (before, after))


if __name__ == "__main__":
    unittest.main()
