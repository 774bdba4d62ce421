"""`python3 -m dcasgd witness` and `failover --force` against a real
dcasgd-witness process: the registers as an operator reads them, a forced
grant that asks first, says what it may lose, and moves the register.
Skipped without $DCASGD_WITNESS_BINARY (set by the build)."""

import io
import os
import subprocess
import tempfile
import time
import unittest
from unittest import mock

import grpc

import dcasgd  # noqa: F401 (finds the generated modules)
from dcasgd import cli
from dcasgd.v1 import replication_pb2
from dcasgd.v1 import replication_pb2_grpc
from shard_cluster import _read_port_file

WITNESS = os.environ.get("DCASGD_WITNESS_BINARY", "")


@unittest.skipUnless(WITNESS and os.access(WITNESS, os.X_OK),
                     "DCASGD_WITNESS_BINARY does not name an executable dcasgd-witness")
class WitnessCliTest(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory(prefix="dcasgd-witness-cli-")
        self.addCleanup(self.dir.cleanup)
        port_file = os.path.join(self.dir.name, "ports")
        self.process = subprocess.Popen(
            [WITNESS, "--listen=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
             "--shard_count=2", "--state_dir=" + self.dir.name, "--port_file=" + port_file],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(self.process.wait, 30)
        self.addCleanup(self.process.terminate)
        deadline = time.monotonic() + 30
        while (ports := _read_port_file(port_file)) is None:
            self.assertIsNone(self.process.poll(), "dcasgd-witness exited")
            self.assertLess(time.monotonic(), deadline, "dcasgd-witness did not start")
            time.sleep(0.02)
        self.address = "127.0.0.1:%d" % ports["grpc"]
        channel = grpc.insecure_channel(self.address)
        self.addCleanup(channel.close)
        self.stub = replication_pb2_grpc.WitnessStub(channel)

    def run_cli(self, *argv):
        out = io.StringIO()
        code = cli.main(list(argv) + ["--witness", self.address], out)
        return code, out.getvalue()

    def register(self, shard):
        return self.stub.GetRegister(replication_pb2.GetRegisterRequest(shard_index=shard),
                                     timeout=10)

    def test_registers_are_printed_per_shard(self):
        granted = self.stub.Claim(replication_pb2.ClaimRequest(
            shard_index=1, shard_count=2, member=replication_pb2.MEMBER_A, expected_epoch=0),
            timeout=10)
        self.assertTrue(granted.granted)
        code, out = self.run_cli("witness", "--shard-count", "2")
        self.assertEqual(code, 0, out)
        self.assertIn("shard 0: epoch 0, no holder", out)
        self.assertIn("shard 1: epoch 1, held by member a, solo", out)
        code, out = self.run_cli("witness", "--shard", "5")
        self.assertEqual(code, 1, out)
        self.assertIn("shard 5: INVALID_ARGUMENT", out)

    def test_a_forced_failover_asks_warns_and_moves_the_register(self):
        self.stub.Claim(replication_pb2.ClaimRequest(
            shard_index=0, shard_count=2, member=replication_pb2.MEMBER_A, expected_epoch=0),
            timeout=10)
        code, out = self.run_cli("failover", "--shard", "0", "--member", "b")
        self.assertEqual(code, 2, out)
        self.assertIn("not available yet", out)
        with mock.patch("builtins.input", return_value="no"):
            code, out = self.run_cli("failover", "--shard", "0", "--member", "b", "--force")
        self.assertEqual(code, 1, out)
        self.assertIn("are lost", out)
        self.assertIn("nothing changed", out)
        self.assertEqual((self.register(0).epoch, self.register(0).holder),
                         (1, replication_pb2.MEMBER_A))
        with mock.patch("builtins.input", return_value="force"):
            code, out = self.run_cli("failover", "--shard", "0", "--member", "b", "--force")
        self.assertEqual(code, 0, out)
        self.assertIn("done: shard 0: epoch 2, held by member b, solo", out)
        self.assertEqual((self.register(0).epoch, self.register(0).holder),
                         (2, replication_pb2.MEMBER_B))
        code, out = self.run_cli("failover", "--shard", "0", "--member", "a", "--force",
                                 "--yes")
        self.assertEqual(code, 0, out)
        self.assertEqual(self.register(0).epoch, 3)


if __name__ == "__main__":
    unittest.main()
