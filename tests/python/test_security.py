"""dcasgd.security: the credentials of the Python client, against a real
dcasgd-ps with TLS and tokens (certificates from tests/security/make-certs.sh,
made with the openssl CLI)."""

import os
import shutil
import subprocess
import tempfile
import unittest

import grpc

import dcasgd
from dcasgd.security import Credentials
from dcasgd.v1 import ps_pb2

import shard_cluster

SOURCE_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
READER = "reader-token-python-012345"
WORKER = "worker-token-python-012345"


class CredentialsTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="dcasgd-py-security-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_environment_gives_the_defaults_and_arguments_win(self):
        token_file = self.write("t", "\n  env-token-0123456789abc  \n")
        credentials = Credentials(env={"DCASGD_AUTH_TOKEN_FILE": token_file})
        self.assertEqual(credentials.token, "env-token-0123456789abc")
        self.assertFalse(credentials.tls)
        self.assertEqual(Credentials(token="arg-token-0123456789abc",
                                     env={"DCASGD_AUTH_TOKEN_FILE": token_file}).token,
                         "arg-token-0123456789abc")
        self.assertIsNone(Credentials(env={}).token)

    def test_bad_input_is_a_value_error_naming_it(self):
        with self.assertRaisesRegex(ValueError, "16 to 512 characters"):
            Credentials(token="short", env={})
        with self.assertRaisesRegex(ValueError, "visible ASCII"):
            Credentials(token="a token with blanks inside", env={})
        with self.assertRaisesRegex(ValueError, "holds no token"):
            Credentials(token_file=self.write("empty", "\n\n"), env={})
        with self.assertRaisesRegex(ValueError, "token file '/nonexistent'"):
            Credentials(token_file="/nonexistent", env={})
        with self.assertRaisesRegex(ValueError, "need tls_ca"):
            Credentials(tls_server_name="x", env={})
        with self.assertRaisesRegex(ValueError, "both tls_cert and tls_key"):
            Credentials(tls_ca=self.write("ca", "x"), tls_cert=self.write("c", "x"), env={})
        with self.assertRaisesRegex(ValueError, "not both"):
            dcasgd.Client(["127.0.0.1:1"], None, credentials=Credentials(env={}),
                          token="reader-token-python-012345")


@shard_cluster.require_ps_binary
class SecureShardTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="dcasgd-py-security-")
        subprocess.run([os.path.join(SOURCE_DIR, "tests", "security", "make-certs.sh"),
                        cls.dir], check=True, timeout=120)
        tokens = os.path.join(cls.dir, "tokens")
        with open(tokens, "w") as f:
            f.write("%s reader\n%s worker\n" % (READER, WORKER))
        cls.cluster = shard_cluster.ShardCluster(1, [
            "--tls_cert=" + os.path.join(cls.dir, "server.pem"),
            "--tls_key=" + os.path.join(cls.dir, "server.key"),
            "--auth_tokens_file=" + tokens],
            credentials=Credentials(tls_ca=os.path.join(cls.dir, "ca.pem"), env={}))
        cls.ca = os.path.join(cls.dir, "ca.pem")

    @classmethod
    def tearDownClass(cls):
        cls.cluster.stop()
        shutil.rmtree(cls.dir, True)

    def test_roles_over_tls(self):
        addresses = self.cluster.addresses
        with dcasgd.Client(addresses, "py-worker", tls_ca=self.ca, token=WORKER) as worker:
            worker.declare([dcasgd.TensorSpec("w", (4,), init=dcasgd.constant(1.0))])
            worker.pull(["w"])
            weights = worker.pushpull({"w": [0.5, 0.5, 0.5, 0.5]})
            self.assertEqual(len(weights["w"]), 4)
            with self.assertRaises(grpc.RpcError) as denied:
                worker.stub(0).Checkpoint(ps_pb2.CheckpointRequest(), timeout=10)
            self.assertEqual(denied.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
        with dcasgd.Client(addresses, None, tls_ca=self.ca, token=READER) as reader:
            self.assertEqual(len(reader.pull(["w"])["w"]), 4)
        with self.assertRaises(dcasgd.Error) as refused:
            dcasgd.Client(addresses, "py-reader", tls_ca=self.ca, token=READER, max_attempts=1)
        self.assertEqual(refused.exception.code, grpc.StatusCode.PERMISSION_DENIED)


if __name__ == "__main__":
    unittest.main()
