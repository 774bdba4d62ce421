"""dcasgd.Client(wire_dtype=...) : gradients and weights as bfloat16 or
float16 on the wire (ps.proto Dtype), against real dcasgd-ps processes on
loopback, and the rounding of dcasgd.wire against known bit patterns.
Skipped without $DCASGD_PS_BINARY (CI builds it)."""

import unittest

import grpc
import numpy as np

import dcasgd
from dcasgd import wire
from shard_cluster import ShardCluster, require_ps_binary

DC_FLAGS = ["--update_rule=dcasgd-c", "--lr=0.1", "--lambda0=0.5"]


class RoundingTest(unittest.TestCase):
    def test_bfloat16_rounds_to_nearest_even_and_keeps_nan(self):
        values = np.array([1.0, 1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, 1.0 + 2.0**-8 + 2.0**-20,
                           -2.5, np.inf, -np.inf, 3.4e38, 1e-45],
                          dtype=np.float32)
        bits = wire.to_bfloat16_bits(values)
        # 1 + 2^-8 is a tie: down to 1 (even); 1 + 3 * 2^-8 is a tie: up to
        # 1 + 2^-6 (0x3f82); just above a tie rounds up; 3.4e38 overflows to
        # Inf; the smallest subnormal rounds to zero.
        self.assertEqual([int(b) for b in bits],
                         [0x3f80, 0x3f80, 0x3f82, 0x3f81, 0xc020, 0x7f80, 0xff80, 0x7f80, 0x0000])
        nan = wire.to_bfloat16_bits(np.array([np.nan, -np.nan], dtype=np.float32))
        self.assertTrue(np.isnan(wire.from_bfloat16_bits(nan)).all())
        self.assertEqual(int(nan[1]) >> 15, 1, "the sign of a NaN is kept")
        np.testing.assert_array_equal(wire.from_bfloat16_bits(bits[:5]),
                                      np.array([1, 1, 1 + 2**-6, 1 + 2**-7, -2.5], np.float32))

    def test_encode_decode_round_trip_each_dtype(self):
        values = np.linspace(-3, 3, 101, dtype=np.float32)
        for name, size in [("float32", 4), ("bfloat16", 2), ("float16", 2)]:
            value = wire.dtype_value(name)
            data = wire.encode(values, value)
            self.assertEqual(len(data), size * values.size)
            decoded = wire.decode(data, value)
            np.testing.assert_array_equal(wire.decode(wire.encode(decoded, value), value), decoded)
            self.assertLessEqual(float(np.max(np.abs(decoded - values))),
                                 3 * {4: 0, 2: 2.0**-8}[size] + 1e-7)
        self.assertEqual(float(wire.rounded(np.float32(70000), "float16")), np.inf)

    def test_unknown_wire_dtype_is_a_clear_error(self):
        with self.assertRaisesRegex(ValueError, "wire_dtype 'int8': use one of float32"):
            dcasgd.Client(["127.0.0.1:1"], wire_dtype="int8")


def specs():
    rng = np.random.default_rng(3)
    return [dcasgd.TensorSpec("wd/w", (40, 30), chunk_elements=256,
                              init=dcasgd.values(rng.uniform(-1, 1, (40, 30)).astype(np.float32))),
            dcasgd.TensorSpec("wd/b", (7,), init=dcasgd.constant(0.3))]


def gradient(step):
    i = np.arange(1200, dtype=np.float32)
    return {"wd/w": np.sin(0.37 * i + 1.3 * step).reshape(40, 30).astype(np.float32),
            "wd/b": np.full(7, 0.1 * step + 0.05, dtype=np.float32)}


def rounded(tensors, name):
    return {k: wire.rounded(v, name) for k, v in tensors.items()}


@require_ps_binary
class WireDtypeShardTest(unittest.TestCase):
    """A 16-bit job and a float32 reference job run the same schedule; the
    16-bit worker must match a float32 worker of the rounded values bit for
    bit (the rounding of dcasgd.wire is the shard's)."""

    def assert_same_bits(self, got, want, what):
        self.assertEqual(sorted(got), sorted(want), what)
        for name in want:
            np.testing.assert_array_equal(np.asarray(got[name]).view(np.uint32),
                                          np.asarray(want[name], np.float32).view(np.uint32),
                                          "%s: %s" % (what, name))

    def test_bfloat16_and_float16_workers_match_float32_workers_of_the_rounded_values(self):
        for name in ("bfloat16", "float16"):
            with self.subTest(wire_dtype=name), ShardCluster(2, DC_FLAGS) as job16, \
                    ShardCluster(2, DC_FLAGS) as job32, \
                    dcasgd.Client(job16.addresses, "w16", wire_dtype=name) as w16, \
                    dcasgd.Client(job32.addresses, "w32") as w32:
                w16.declare(specs())
                w32.declare(specs())
                self.assert_same_bits(w16.pull(), rounded(w32.pull(), name), "pull")
                for step in (1, 2, 3):
                    got = w16.pushpull(gradient(step))
                    want = w32.pushpull(rounded(gradient(step), name))
                    self.assert_same_bits(got, rounded(want, name), "pushpull %d" % step)
                w16.push(gradient(4))
                w32.push(rounded(gradient(4), name))
                with dcasgd.Client(job16.addresses) as e16, dcasgd.Client(job32.addresses) as e32:
                    self.assert_same_bits(e16.pull(), e32.pull(), "the shards' weights")

    def test_float16_overflow_is_refused_as_non_finite_and_nothing_is_applied(self):
        with ShardCluster(1, DC_FLAGS) as job, \
                dcasgd.Client(job.addresses, "w16", wire_dtype="float16") as worker:
            worker.declare(specs())
            worker.pull()
            with dcasgd.Client(job.addresses) as evaluator:
                before = evaluator.pull()
            g = gradient(1)
            g["wd/w"][3, 4] = 1e5
            with self.assertRaises(dcasgd.Error) as raised:
                worker.pushpull(g)
            self.assertEqual(raised.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("NaN, Inf or beyond", str(raised.exception))
            with dcasgd.Client(job.addresses) as evaluator:
                after = evaluator.pull()
            self.assert_same_bits(after, before, "nothing applied")


if __name__ == "__main__":
    unittest.main()
