"""dcasgd.Client against in-process fake shards (fake_shard.py): routing,
retries, heartbeats, re-join and the checks made before sending. Needs no
dcasgd-ps."""

import time
import unittest

import grpc
import numpy as np

import dcasgd
from dcasgd import _rpc
from fake_shard import FakeCluster
import gen_placement_vectors


def _poll(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class ClientRoutingTest(unittest.TestCase):

    def setUp(self):
        self.cluster = FakeCluster(3)
        self.addCleanup(self.cluster.stop)

    def test_pushpull_sends_each_chunk_to_its_owner_only(self):
        with dcasgd.Client(self.cluster.addresses, "w0") as client:
            client.declare([dcasgd.TensorSpec("layer/w", (4, 5), chunk_elements=3),
                            dcasgd.TensorSpec("b", (7,), chunk_elements=1)])
            gradient = {"layer/w": np.arange(20, dtype=np.float32).reshape(4, 5),
                        "b": np.linspace(-1, 1, 7).astype(np.float32)}
            weights = client.pushpull(gradient)
        for name, num_chunks in (("layer/w", 7), ("b", 7)):
            for s, shard in enumerate(self.cluster.shards):
                got = sorted(i for rpc, t, i in shard.received if t == name)
                # The independent reference implementation, not the client's.
                want = [i for i in range(num_chunks)
                        if gen_placement_vectors.shard_of(name.encode(), i, 3) == s]
                self.assertEqual(got, want, "shard %d, tensor %s" % (s, name))
        # lr = 1 from zeros: w = -g, reassembled in the declared shape.
        self.assertEqual(weights["layer/w"].shape, (4, 5))
        np.testing.assert_array_equal(weights["layer/w"], -gradient["layer/w"])
        np.testing.assert_array_equal(weights["b"], -gradient["b"])

    def test_pull_reassembles_constant_and_scalar_tensors(self):
        with dcasgd.Client(self.cluster.addresses) as evaluator:
            evaluator.declare([dcasgd.TensorSpec("c", (2, 3, 4), 5, dcasgd.constant(1.5)),
                               dcasgd.TensorSpec("s", (), 0, dcasgd.constant(-2))])
            values = evaluator.pull(["c", "s"])
        self.assertEqual(values["c"].shape, (2, 3, 4))
        self.assertEqual(values["c"].dtype, np.float32)
        np.testing.assert_array_equal(values["c"], np.full((2, 3, 4), 1.5, np.float32))
        self.assertEqual(values["s"].shape, ())
        self.assertEqual(float(values["s"]), -2.0)

    def test_evaluator_learns_specs_from_status(self):
        with dcasgd.Client(self.cluster.addresses) as declarer:
            declarer.declare([dcasgd.TensorSpec("x", (9,), 2, dcasgd.constant(3))])
        with dcasgd.Client(self.cluster.addresses) as evaluator:
            self.assertIsNone(evaluator.layout("x"))
            values = evaluator.pull()
        self.assertEqual(list(values), ["x"])
        np.testing.assert_array_equal(values["x"], np.full(9, 3, np.float32))

    def test_checks_before_sending(self):
        with dcasgd.Client(self.cluster.addresses, "w0") as client:
            client.declare([dcasgd.TensorSpec("w", (6,), 2)])
            calls = [s.calls for s in self.cluster.shards]
            with self.assertRaises(dcasgd.Error) as wrong_size:
                client.push({"w": np.zeros(5, np.float32)})
            self.assertEqual(wrong_size.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
            self.assertEqual([s.calls for s in self.cluster.shards], calls)
            with self.assertRaises(dcasgd.Error) as unknown:
                client.pull(["nope"])
            self.assertEqual(unknown.exception.code, grpc.StatusCode.NOT_FOUND)
            self.assertIn("nope", unknown.exception.message)
        with dcasgd.Client(self.cluster.addresses) as evaluator:
            evaluator.fetch_specs()
            with self.assertRaises(dcasgd.Error) as no_worker:
                evaluator.push({"w": np.zeros(6, np.float32)})
            self.assertEqual(no_worker.exception.code, grpc.StatusCode.FAILED_PRECONDITION)

    def test_join_rejects_addresses_out_of_shard_order(self):
        swapped = [self.cluster.addresses[1], self.cluster.addresses[0],
                   self.cluster.addresses[2]]
        with self.assertRaises(dcasgd.Error) as error:
            dcasgd.Client(swapped, "w0")
        self.assertEqual(error.exception.code, grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("index 1 of 3", error.exception.message)


class ClientRetryTest(unittest.TestCase):

    def setUp(self):
        self.cluster = FakeCluster(2)
        self.addCleanup(self.cluster.stop)

    def test_unavailable_is_retried_until_success(self):
        with dcasgd.Client(self.cluster.addresses, "w0", initial_backoff=0.001) as client:
            client.declare([dcasgd.TensorSpec("w", (8,), 1, dcasgd.constant(4))])
            shard = self.cluster.shards[1]
            with shard.lock:
                shard.fail_next = 2
                before = shard.calls
            values = client.pull(["w"])
            with shard.lock:
                self.assertEqual(shard.calls - before, 3)
        np.testing.assert_array_equal(values["w"], np.full(8, 4, np.float32))

    def test_unavailable_after_max_attempts_is_raised_with_the_shard(self):
        with dcasgd.Client(self.cluster.addresses, "w0", initial_backoff=0.001,
                           max_attempts=3) as client:
            client.declare([dcasgd.TensorSpec("w", (8,), 1)])
            shard = self.cluster.shards[1]
            with shard.lock:
                shard.fail_next = 100
                before = shard.calls
            with self.assertRaises(dcasgd.Error) as error:
                client.pull(["w"])
            with shard.lock:
                self.assertEqual(shard.calls - before, 3)
                shard.fail_next = 0
        self.assertEqual(error.exception.code, grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(error.exception.shard, 1)
        self.assertEqual(error.exception.address, self.cluster.addresses[1])

    def test_cancelled_and_deadline_exceeded_pushes_are_retried_with_the_same_step(self):
        # A shard shutting down cancels calls in flight; a hung one lets them
        # time out. Both are retried, with the push's step, so a shard that
        # applied the push answers again without applying it twice.
        with dcasgd.Client(self.cluster.addresses, "w0", initial_backoff=0.001) as client:
            client.declare([dcasgd.TensorSpec("w", (8,), 1)])
            client.pull(["w"])
            shard = self.cluster.shards[0]
            for code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
                with shard.lock:
                    shard.fail_code = code
                    shard.fail_next = 2
                    shard.push_steps = []
                result = client.push({"w": np.ones(8, np.float32)})
                with shard.lock:
                    steps = list(shard.push_steps)
                self.assertEqual(len(steps), 3, code)
                self.assertEqual(steps, [result.step] * 3, code)
            # Later pushes take new, increasing steps; an explicit step is kept.
            client.pushpull({"w": np.ones(8, np.float32)})
            self.assertGreater(client.last_pushpull.step, result.step)
            reserved = client.next_step()
            self.assertEqual(client.push({"w": np.ones(8, np.float32)}, step=reserved).step,
                             reserved)

    def test_lost_worker_push_rejoins_and_asks_to_pull_again(self):
        with dcasgd.Client(self.cluster.addresses, "w0") as client:
            client.declare([dcasgd.TensorSpec("w", (8,), 1)])
            client.pull(["w"])
            shard = self.cluster.shards[0]
            old_id = client.worker_id(0)
            shard.forget_workers()
            with self.assertRaises(dcasgd.Error) as error:
                client.push({"w": np.ones(8, np.float32)})
            self.assertEqual(error.exception.code, grpc.StatusCode.FAILED_PRECONDITION)
            self.assertIn("re-joined; pull again", error.exception.message)
            self.assertNotEqual(client.worker_id(0), old_id)
            # After the re-join the next push is accepted again.
            client.pull(["w"])
            client.push({"w": np.ones(8, np.float32)})

    def test_heartbeats_renew_every_shard_lease(self):
        self.cluster.stop()
        self.cluster = FakeCluster(2, lease_ms=150)
        with dcasgd.Client(self.cluster.addresses, "w0"):
            self.assertTrue(_poll(lambda: all(s.heartbeats >= 3 for s in self.cluster.shards)))

    def test_leave_ends_the_leases_and_stops_heartbeats(self):
        self.cluster.stop()
        self.cluster = FakeCluster(2, lease_ms=150)
        client = dcasgd.Client(self.cluster.addresses, "w0")
        self.assertTrue(_poll(lambda: all(s.heartbeats >= 1 for s in self.cluster.shards)))
        client.close()
        for shard in self.cluster.shards:
            with shard.lock:
                self.assertEqual(shard.workers, {})


class RetryPolicyTest(unittest.TestCase):

    def test_delays_grow_geometrically_up_to_the_cap(self):
        policy = _rpc.RetryPolicy(max_attempts=6, initial_backoff=0.1, max_backoff=0.5,
                                  multiplier=2.0, jitter=0.0)
        self.assertEqual([round(d, 9) for d in policy.delays()], [0.1, 0.2, 0.4, 0.5, 0.5])

    def test_jitter_stays_within_bounds(self):
        policy = _rpc.RetryPolicy(max_attempts=50, initial_backoff=1.0, max_backoff=1.0,
                                  multiplier=1.0, jitter=0.2)
        delays = list(policy.delays())
        self.assertEqual(len(delays), 49)
        self.assertTrue(all(0.8 <= d <= 1.0 for d in delays))

    def test_transient_codes_are_retried(self):
        for status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                       grpc.StatusCode.DEADLINE_EXCEEDED):
            attempts = []

            class Failure(grpc.RpcError):

                def code(self, status=status):
                    return status

                def details(self):
                    return "transient"

            def attempt(attempts=attempts, failure=Failure):
                attempts.append(1)
                if len(attempts) < 3:
                    raise failure()
                return "ok"

            self.assertEqual(_rpc.call(attempt, _rpc.RetryPolicy(max_attempts=5),
                                       sleep=lambda s: None), "ok")
            self.assertEqual(len(attempts), 3, status)

    def test_other_codes_are_not_retried(self):
        attempts = []

        class Failure(grpc.RpcError):

            def code(self):
                return grpc.StatusCode.ABORTED

            def details(self):
                return "too stale"

        def attempt():
            attempts.append(1)
            raise Failure()

        with self.assertRaises(dcasgd.Error) as error:
            _rpc.call(attempt, _rpc.RetryPolicy(max_attempts=5), shard=2, address="h:1",
                      sleep=lambda s: None)
        self.assertEqual(len(attempts), 1)
        self.assertEqual(error.exception.code, grpc.StatusCode.ABORTED)
        self.assertEqual(str(error.exception), "ABORTED: shard 2 (h:1): too stale")

    def test_refusals_naming_a_role_do_not_count_for_failover_wait(self):
        class Refusal(grpc.RpcError):

            def code(self):
                return grpc.StatusCode.UNAVAILABLE

            def details(self):
                return "member b is replica"

            def trailing_metadata(self):
                return (("dcasgd-role", "replica"),)

        self.assertEqual(_rpc.refusing_role(Refusal()), "replica")
        attempts = []
        slept = []

        def attempt():
            attempts.append(1)
            if len(attempts) < 6:
                raise Refusal()
            return "ok"

        # One attempt allowed, yet five refusals ride through: each one sent
        # at once to the other member, a wait only once every member refused.
        self.assertEqual(_rpc.call(attempt, _rpc.RetryPolicy(max_attempts=1), sleep=slept.append),
                         "ok")
        self.assertEqual(len(attempts), 6)
        self.assertEqual(len(slept), 5, "one member: each refusal is a full round")
        # Past failover_wait the refusals count again.
        attempts.clear()
        with self.assertRaises(dcasgd.Error) as error:
            _rpc.call(attempt, _rpc.RetryPolicy(max_attempts=2, failover_wait=0),
                      sleep=lambda s: None)
        self.assertEqual(len(attempts), 2)
        self.assertEqual(error.exception.code, grpc.StatusCode.UNAVAILABLE)

    def test_only_an_unavailable_with_the_role_trailer_is_a_refusal(self):
        class Failure(grpc.RpcError):

            def __init__(self, code, trailers):
                self._code = code
                self._trailers = trailers

            def code(self):
                return self._code

            def trailing_metadata(self):
                return self._trailers

        self.assertEqual(_rpc.refusing_role(Failure(grpc.StatusCode.UNAVAILABLE, None)), "")
        self.assertEqual(_rpc.refusing_role(Failure(grpc.StatusCode.UNAVAILABLE,
                                                    (("other", "x"),))), "")
        self.assertEqual(_rpc.refusing_role(Failure(grpc.StatusCode.ABORTED,
                                                    (("dcasgd-role", "replica"),))), "")
        with self.assertRaises(ValueError):
            _rpc.RetryPolicy(failover_wait=-1)


if __name__ == "__main__":
    unittest.main()
