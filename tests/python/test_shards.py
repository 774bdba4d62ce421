"""dcasgd.Client against real dcasgd-ps processes on loopback: exact round
trips, the documented status codes, health and reflection, the data
coordinator. Skipped without $DCASGD_PS_BINARY."""

import time
import unittest

import grpc
import numpy as np

import dcasgd
from dcasgd.v1 import ps_pb2
from shard_cluster import ShardCluster, require_ps_binary


@require_ps_binary
class AsgdRoundTripTest(unittest.TestCase):
    """Three shards, plain ASGD with lr = 1: w <- w - g exactly."""

    @classmethod
    def setUpClass(cls):
        cls.cluster = ShardCluster(3, ["--update_rule=asgd", "--lr=1"])

    @classmethod
    def tearDownClass(cls):
        cls.cluster.stop()

    def test_declare_pull_pushpull_push_exact_values(self):
        w0 = np.arange(35, dtype=np.float32).reshape(5, 7) / 4
        with dcasgd.Client(self.cluster.addresses, "round-trip") as client:
            registered = client.declare([
                dcasgd.TensorSpec("rt/w", (5, 7), chunk_elements=3, init=dcasgd.values(w0)),
                dcasgd.TensorSpec("rt/b", (), init=dcasgd.constant(2.5))])
            self.assertEqual([s.chunk_elements for s in registered], [3, 65536])
            pulled = client.pull(["rt/w", "rt/b"])
            np.testing.assert_array_equal(pulled["rt/w"], w0)
            self.assertEqual(pulled["rt/w"].shape, (5, 7))
            self.assertEqual(float(pulled["rt/b"]), 2.5)

            g = np.linspace(-1, 1, 35, dtype=np.float32).reshape(5, 7)
            after = client.pushpull({"rt/w": g, "rt/b": np.float32(0.5)})
            np.testing.assert_array_equal(after["rt/w"], w0 - g)
            self.assertEqual(float(after["rt/b"]), 2.0)

            result = client.push({"rt/w": g})
            self.assertEqual(len(result.versions), 3)
            self.assertTrue(all(v >= 2 for v in result.versions))
            np.testing.assert_array_equal(client.pull(["rt/w"])["rt/w"], (w0 - g) - g)

        with dcasgd.Client(self.cluster.addresses) as evaluator:
            np.testing.assert_array_equal(evaluator.pull(["rt/w"])["rt/w"], (w0 - g) - g)

    def test_async_pushes_finish_in_order_and_raise_at_result(self):
        w0 = np.zeros(12, dtype=np.float32)
        with dcasgd.Client(self.cluster.addresses, "async") as client:
            client.declare([dcasgd.TensorSpec("as/w", (12,), chunk_elements=5,
                                              init=dcasgd.values(w0))])
            client.pull(["as/w"])
            g = np.ones(12, dtype=np.float32)
            futures = [client.pushpull_async({"as/w": g * k}) for k in (1, 2, 3)]
            g[:] = 100  # copied when started: this changes nothing
            results = [f.result(timeout=60) for f in futures]
            applied = 0
            for k, (weights, result) in zip((1, 2, 3), results):
                applied += k
                np.testing.assert_array_equal(weights["as/w"], w0 - applied)
                self.assertEqual(result.step, k)
            pushed = client.push_async({"as/w": np.ones(12, dtype=np.float32)}).result(60)
            self.assertTrue(all(v >= 4 for v in pushed.versions if v))
            with self.assertRaises(dcasgd.Error) as raised:
                client.pushpull_async({"as/nope": np.ones(3, dtype=np.float32)}).result(60)
            self.assertEqual(raised.exception.code, grpc.StatusCode.NOT_FOUND)
            np.testing.assert_array_equal(client.pull(["as/w"])["as/w"], w0 - 7)

    def test_default_chunking_matches_the_shards_ownership(self):
        elements = 2 * 65536 + 5
        with dcasgd.Client(self.cluster.addresses, "chunking") as client:
            (spec,) = client.declare([dcasgd.TensorSpec("big/w", (elements,),
                                                        init=dcasgd.uniform(-1, 1, seed=7))])
            self.assertEqual(spec.chunk_elements, 65536)
            layout = client.layout("big/w")
            owned = [sum(t.owned_chunks for t in status.tensors if t.spec.name == "big/w")
                     for status in client.status()]
            expected = [int(np.sum(layout.chunk_shards(3) == s)) for s in range(3)]
            self.assertEqual(owned, expected)
            values = client.pull(["big/w"])["big/w"]
            self.assertEqual(values.shape, (elements,))
            self.assertTrue(np.all((values >= -1) & (values < 1)))
            # Every chunk is filled (uniform values are not all equal).
            for i in range(layout.num_chunks):
                offset, length = layout.chunk_range(i)
                self.assertGreater(np.ptp(values[offset:offset + length]), 0)

    def test_unknown_tensor_is_not_found(self):
        with dcasgd.Client(self.cluster.addresses) as evaluator:
            with self.assertRaises(grpc.RpcError) as error:
                list(evaluator.stub(0).Pull(ps_pb2.PullRequest(worker_id=0, tensors=["no/such"]),
                                            timeout=10))
            self.assertEqual(error.exception.code(), grpc.StatusCode.NOT_FOUND)
            with self.assertRaises(dcasgd.Error) as client_error:
                evaluator.pull(["no/such"])
        self.assertEqual(client_error.exception.code, grpc.StatusCode.NOT_FOUND)

    def test_nan_gradient_is_invalid_argument_and_nothing_is_applied(self):
        with dcasgd.Client(self.cluster.addresses, "nan") as client:
            client.declare([dcasgd.TensorSpec("nan/w", (10,), 2, dcasgd.constant(1))])
            client.pull(["nan/w"])
            g = np.zeros(10, np.float32)
            g[7] = np.nan
            with self.assertRaises(dcasgd.Error) as error:
                client.push({"nan/w": g})
            self.assertEqual(error.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
            np.testing.assert_array_equal(client.pull(["nan/w"])["nan/w"],
                                          np.ones(10, np.float32))

    def test_unknown_worker_is_failed_precondition(self):
        with dcasgd.Client(self.cluster.addresses, "fp") as client:
            client.declare([dcasgd.TensorSpec("fp/w", (4,), 1)])
            stub = client.stub(0)
            with self.assertRaises(grpc.RpcError) as heartbeat:
                stub.Heartbeat(ps_pb2.HeartbeatRequest(worker_id=987654321), timeout=10)
            self.assertEqual(heartbeat.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
            chunk = ps_pb2.Chunk(tensor="fp/w", chunk_index=0,
                                 values=np.zeros(1, "<f4").tobytes())
            owner = dcasgd.shard_of_chunk("fp/w", 0, 3)
            with self.assertRaises(grpc.RpcError) as push:
                client.stub(owner).Push(
                    iter([ps_pb2.PushRequest(worker_id=987654321, chunk_count=1,
                                             gradient=chunk)]), timeout=10)
            self.assertEqual(push.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)

    def test_a_push_applies_only_with_exactly_its_announced_chunks(self):
        with dcasgd.Client(self.cluster.addresses, "counted") as client:
            # 4 chunks on 3 shards: chunk 0's shard also owns chunk 3.
            client.declare([dcasgd.TensorSpec("count/w", (16,), 4, init=dcasgd.constant(1))])
            client.pull(["count/w"])
            owner = dcasgd.shard_of_chunk("count/w", 0, 3)
            worker = client.worker_id(owner)
            session = client.session(owner)
            chunk = ps_pb2.Chunk(tensor="count/w", chunk_index=0,
                                 values=np.ones(4, "<f4").tobytes())
            for announced in (0, 2):  # missing, and more than the stream carries
                with self.assertRaises(grpc.RpcError) as push:
                    client.stub(owner).Push(iter([ps_pb2.PushRequest(
                        worker_id=worker, session=session, chunk_count=announced,
                        gradient=chunk)]), timeout=10)
                self.assertEqual(push.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
                self.assertIn("chunk", push.exception.details())
            np.testing.assert_array_equal(client.pull(["count/w"])["count/w"],
                                          np.ones(16, np.float32))

    def test_another_client_cannot_act_as_a_worker(self):
        # Worker B knows worker A's id on a shard, not A's session: its push,
        # pull and heartbeat as A are UNAUTHENTICATED and change nothing.
        with dcasgd.Client(self.cluster.addresses, "victim") as a, \
                dcasgd.Client(self.cluster.addresses, "intruder") as b:
            a.declare([dcasgd.TensorSpec("sess/w", (4,), 4, init=dcasgd.constant(1))])
            a.pull(["sess/w"])
            owner = dcasgd.shard_of_chunk("sess/w", 0, 3)
            victim = a.worker_id(owner)
            self.assertEqual(len(a.session(owner)), 16)
            chunk = ps_pb2.Chunk(tensor="sess/w", chunk_index=0,
                                 values=np.full(4, 100, "<f4").tobytes())
            stub = b.stub(owner)
            for forged in (b"", b.session(owner)):
                with self.assertRaises(grpc.RpcError) as push:
                    stub.Push(iter([ps_pb2.PushRequest(worker_id=victim, session=forged,
                                                       chunk_count=1, gradient=chunk)]),
                              timeout=10)
                self.assertEqual(push.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
                self.assertIn("session", push.exception.details())
                with self.assertRaises(grpc.RpcError) as beat:
                    stub.Heartbeat(ps_pb2.HeartbeatRequest(worker_id=victim, session=forged),
                                   timeout=10)
                self.assertEqual(beat.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
                with self.assertRaises(grpc.RpcError) as pull:
                    list(stub.Pull(ps_pb2.PullRequest(worker_id=victim, session=forged),
                                   timeout=10))
                self.assertEqual(pull.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
            np.testing.assert_array_equal(b.pull(["sess/w"])["sess/w"], np.ones(4, np.float32))
            a.push({"sess/w": np.ones(4, np.float32)})  # A trains on

    def test_push_after_leave_is_failed_precondition(self):
        client = dcasgd.Client(self.cluster.addresses, "leaver")
        try:
            client.declare([dcasgd.TensorSpec("leave/w", (4,), 1)])
            client.pull(["leave/w"])
            client.leave()
            with self.assertRaises(dcasgd.Error) as error:
                client.push({"leave/w": np.ones(4, np.float32)})
            self.assertEqual(error.exception.code, grpc.StatusCode.FAILED_PRECONDITION)
        finally:
            client.close()

    def test_redeclare_with_another_shape_is_already_exists(self):
        with dcasgd.Client(self.cluster.addresses) as client:
            client.declare([dcasgd.TensorSpec("re/w", (4,), 1)])
            client.declare([dcasgd.TensorSpec("re/w", (4,), 1)])  # identical: OK
            with self.assertRaises(dcasgd.Error) as error:
                client.declare([dcasgd.TensorSpec("re/w", (5,), 1)])
        self.assertEqual(error.exception.code, grpc.StatusCode.ALREADY_EXISTS)

    def test_health_and_reflection(self):
        for index, address in enumerate(self.cluster.addresses):
            self.assertEqual(dcasgd.health_check(address), "SERVING")
            self.assertEqual(dcasgd.health_check(address, "dcasgd.v1.ParameterShard"),
                             "SERVING")
            services = dcasgd.list_services(address)
            for name in ("dcasgd.v1.ParameterShard", "grpc.health.v1.Health",
                         "grpc.reflection.v1alpha.ServerReflection"):
                self.assertIn(name, services)
            # The data coordinator is hosted by shard 0 only.
            self.assertEqual("dcasgd.v1.DataCoordinator" in services, index == 0)
        with self.assertRaises(dcasgd.Error) as error:
            dcasgd.health_check(self.cluster.addresses[0], "no.such.Service")
        self.assertEqual(error.exception.code, grpc.StatusCode.NOT_FOUND)


@require_ps_binary
class DelayCompensationTest(unittest.TestCase):
    """DC-ASGD-c over two shards: a stale gradient gets the compensation
    lambda0 * g * g * (w - w_backup) (ALGORITHM.md, paper eq. for DC-ASGD)."""

    def test_stale_push_is_compensated(self):
        lr, lam = 0.5, 0.25
        with ShardCluster(2, ["--update_rule=dcasgd-c", "--lr=%g" % lr,
                              "--lambda0=%g" % lam]) as cluster:
            w0 = np.linspace(-2, 2, 9, dtype=np.float32)
            with dcasgd.Client(cluster.addresses, "a") as a, \
                    dcasgd.Client(cluster.addresses, "b") as b:
                a.declare([dcasgd.TensorSpec("dc/w", (9,), 2, dcasgd.values(w0))])
                b.fetch_specs()
                np.testing.assert_array_equal(a.pull(["dc/w"])["dc/w"], w0)
                np.testing.assert_array_equal(b.pull(["dc/w"])["dc/w"], w0)
                g_b = np.full(9, 0.5, np.float32)
                w1 = b.pushpull({"dc/w": g_b})["dc/w"]
                self.assertEqual(max(b.last_pushpull.staleness), 0)
                # b's backup was the current w: no compensation.
                np.testing.assert_allclose(w1, w0 - lr * g_b, rtol=1e-6)
                g_a = np.linspace(1, 2, 9, dtype=np.float32)
                w2 = a.pushpull({"dc/w": g_a})["dc/w"]
                # b's push landed between a's pull and a's push, on every shard
                # that owns chunks of dc/w.
                touched = [s for s, v in enumerate(a.last_pushpull.versions) if v]
                self.assertTrue(touched)
                self.assertEqual([a.last_pushpull.staleness[s] for s in touched],
                                 [1] * len(touched))
        w1_64, g_64 = w1.astype(np.float64), g_a.astype(np.float64)
        expected = w1_64 - lr * (g_64 + lam * g_64 * g_64 * (w1_64 - w0.astype(np.float64)))
        np.testing.assert_allclose(w2, expected, rtol=1e-5, atol=1e-6)
        # And it differs from plain ASGD.
        self.assertGreater(np.max(np.abs(w2 - (w1_64 - lr * g_64))), 1e-3)


@require_ps_binary
class DataCoordinatorTest(unittest.TestCase):

    def test_leases_cover_every_data_shard_once(self):
        with ShardCluster(1, ["--lease_seconds=30"]) as cluster, \
                dcasgd.DataCoordinatorClient(cluster.addresses[0]) as coordinator:
            seen = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                response = coordinator.acquire("py-worker", num_data_shards=3, epochs=2)
                kind = response.WhichOneof("result")
                if kind == "job_done":
                    break
                self.assertEqual(kind, "lease")
                seen.append((response.lease.epoch, response.lease.data_shard))
                coordinator.complete(response.lease)
            self.assertEqual(sorted(seen), [(e, d) for e in range(2) for d in range(3)])
            status = coordinator.job_status()
            self.assertTrue(status.done)
            self.assertEqual(status.completed, 6)
            with self.assertRaises(dcasgd.Error) as error:
                coordinator.renew(123456789)
            self.assertEqual(error.exception.code, grpc.StatusCode.FAILED_PRECONDITION)

    def test_a_lease_needs_its_secret(self):
        with ShardCluster(1, ["--lease_seconds=30"]) as cluster, \
                dcasgd.DataCoordinatorClient(cluster.addresses[0]) as coordinator:
            lease = coordinator.acquire("holder", num_data_shards=2, epochs=1).lease
            self.assertEqual(len(lease.lease_secret), 16)
            for forged in (b"", b"x" * 16):
                with self.assertRaises(dcasgd.Error) as error:
                    coordinator.complete(lease.lease_id, forged)
                self.assertEqual(error.exception.code, grpc.StatusCode.UNAUTHENTICATED)
                with self.assertRaises(dcasgd.Error) as error:
                    coordinator.renew(lease.lease_id, forged)
                self.assertEqual(error.exception.code, grpc.StatusCode.UNAUTHENTICATED)
            self.assertEqual(coordinator.job_status().completed, 0)
            coordinator.renew(lease)
            coordinator.complete(lease)
            self.assertEqual(coordinator.job_status().completed, 1)


if __name__ == "__main__":
    unittest.main()
