"""A whole job through TLS and bearer tokens (docs/security.md): shards with
TLS and a token file, C++ workers and a Python worker with the worker token,
the evaluator with the reader token, then `python3 -m dcasgd` as reader and
admin. Certificates are made with the openssl CLI
(tests/security/make-certs.sh); real processes (tests/e2e/harness.py)."""

import io
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))

import harness  # noqa: E402
from harness import Cluster, wait_for  # noqa: E402

import dcasgd  # noqa: E402
from dcasgd import cli  # noqa: E402

TOKENS = {"reader": "reader-token-e2e-0123456789",
          "worker": "worker-token-e2e-0123456789",
          "admin": "admin-token-e2e-01234567890"}
SOFTMAX_PS_FLAGS = ["--update_rule=dcasgd-a", "--lr=0.1", "--lr_schedule=step",
                    "--lr_decay_every=400", "--lr_decay_factor=0.3"]


class SecureTraining(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.base = Cluster("secure-data")
        cls.data = cls.base.path("data")
        harness.prepare_data(cls.data, 4)
        cls.certs = cls.base.path("certs")
        subprocess.run([os.path.join(harness.SOURCE_DIR, "tests", "security", "make-certs.sh"),
                        cls.certs], check=True, timeout=120)
        with open(cls.base.path("tokens"), "w") as f:
            for role, token in TOKENS.items():
                f.write("%s %s %s-e2e\n" % (token, role, role))
        for role, token in TOKENS.items():
            with open(cls.base.path(role + ".token"), "w") as f:
                f.write(token + "\n")

    @classmethod
    def tearDownClass(cls):
        cls.base.close()

    def setUp(self):
        self.cluster = Cluster(self._testMethodName)

    def tearDown(self):
        self.cluster.close()

    def cert(self, name):
        return os.path.join(self.certs, name)

    def token_file(self, role):
        return self.base.path(role + ".token")

    def client_flags(self, role):
        return [f"--tls_ca={self.cert('ca.pem')}", f"--auth_token_file={self.token_file(role)}"]

    def test_cpp_and_python_workers_train_through_tls_and_tokens(self):
        self.cluster.start_shards(2, *SOFTMAX_PS_FLAGS, f"--tls_cert={self.cert('server.pem')}",
                                  f"--tls_key={self.cert('server.key')}",
                                  f"--auth_tokens_file={self.base.path('tokens')}",
                                  f"--checkpoint_dir={self.cluster.path('ckpt')}")
        for process, port, _ in self.cluster.shards:
            self.assertNotIn("serving without", process.output())
        evaluator = self.cluster.start_worker("evaluator", self.data, "--model=softmax",
                                              "--eval_interval_seconds=1",
                                              *self.client_flags("reader"), role="eval")
        example = os.path.join(harness.SOURCE_DIR, "examples", "python",
                               "train_fashion_mnist.py")
        # The example knows nothing of security: the environment gives its
        # dcasgd clients TLS and the token (dcasgd.security).
        env = {"PYTHONPATH": os.pathsep.join([os.path.join(harness.SOURCE_DIR, "clients",
                                                           "python"),
                                              os.path.join(harness.BUILD_DIR, "python")]),
               "DCASGD_TLS_CA": self.cert("ca.pem"),
               "DCASGD_AUTH_TOKEN_FILE": self.token_file("worker")}
        python_worker = self.cluster.spawn(
            [sys.executable, example, f"--shards={self.cluster.addresses()}",
             "--worker_name=python-0", "--epochs=1", "--batch_size=32", "--coordinator",
             "--num_data_shards=4", "--log_every=10"],
            "python-0", env)
        wait_for(lambda: "step 10 " in python_worker.output() or python_worker.poll() is not None,
                 120, "the Python worker to train")
        cpp = [self.cluster.start_worker(f"cpp-{i}", self.data, "--model=softmax",
                                         "--batch_size=32", "--epochs=1",
                                         *self.client_flags("worker")) for i in range(2)]
        for w in cpp:
            self.assertEqual(w.wait(300), 0, w.output()[-2000:])
        self.assertEqual(python_worker.wait(300), 0, python_worker.output()[-3000:])
        self.assertEqual(evaluator.wait(120), 0, evaluator.output()[-2000:])
        accuracy = harness.final_accuracy(evaluator.output())
        self.assertIsNotNone(accuracy, evaluator.output()[-2000:])
        self.assertGreaterEqual(accuracy, 0.75)
        for w in cpp:
            self.assertIn("job done", w.output())
            self.assertGreater(int(w.output().split("job done after ")[1].split()[0]), 0)
        self.assertGreater(int(python_worker.output().split("steps=")[1].split()[0]), 0)

        addresses = self.cluster.addresses().split(",")
        # The harness's own stubs over TLS: health needs no token, status
        # needs one.
        ca = self.cert("ca.pem")
        for address in addresses:
            self.assertEqual(harness.health_status(address, tls_ca=ca), "SERVING")
            self.assertEqual(harness.health_status(address), "UNAVAILABLE")
            status = harness.shard_status(address, tls_ca=ca, token=TOKENS["reader"])
            self.assertGreater(status.version, 0)
        # The job's status over TLS with the reader token.
        reader = dcasgd.Credentials(token_file=self.token_file("reader"),
                                    tls_ca=self.cert("ca.pem"))
        with dcasgd.DataCoordinatorClient(addresses[0], credentials=reader) as coordinator:
            job = coordinator.job_status()
        self.assertTrue(job.done)
        self.assertEqual(job.completed, 4)
        # Without a token the same call is refused; with a plaintext channel
        # nothing answers.
        anonymous = dcasgd.Credentials(tls_ca=self.cert("ca.pem"), env={})
        with dcasgd.DataCoordinatorClient(addresses[0], credentials=anonymous,
                                          max_attempts=1) as coordinator:
            with self.assertRaises(dcasgd.Error) as refused:
                coordinator.job_status()
        self.assertEqual(refused.exception.code.name, "UNAUTHENTICATED")
        self.assertEqual(dcasgd.health_check(addresses[0], credentials=anonymous), "SERVING")
        with self.assertRaises(dcasgd.Error) as plaintext:
            dcasgd.health_check(addresses[0], timeout=3, credentials=dcasgd.Credentials(env={}))
        self.assertEqual(plaintext.exception.code.name, "UNAVAILABLE")

        # The operator's tool: status as reader; checkpoint needs admin.
        common = ["--ps", ",".join(addresses), "--tls-ca", self.cert("ca.pem")]
        metrics = ["--metrics", ",".join(f"127.0.0.1:{m}" for _, _, m in self.cluster.shards)]
        out = io.StringIO()
        self.assertEqual(cli.main(["status", *common, *metrics, "--token-file",
                                   self.token_file("reader")], out=out), 0, out.getvalue())
        self.assertIn("DONE", out.getvalue())
        out = io.StringIO()
        self.assertEqual(cli.main(["checkpoint", *common, "--token-file",
                                   self.token_file("reader")], out=out), 1, out.getvalue())
        self.assertIn("PERMISSION_DENIED", out.getvalue())
        out = io.StringIO()
        self.assertEqual(cli.main(["checkpoint", *common, "--token-file",
                                   self.token_file("admin")], out=out), 0, out.getvalue())
        self.assertEqual(out.getvalue().count("version"), 2, out.getvalue())


if __name__ == "__main__":
    unittest.main()
