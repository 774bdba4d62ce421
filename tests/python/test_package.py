"""The `dcasgd` package as a user gets it: a wheel built and a venv install
with Debian's pip and setuptools (pyproject.toml; the generated modules come
from protos/ at build time), `python3 -m dcasgd status|checkpoint|watch`
against real dcasgd-ps shards, run from the installed package outside the
source tree, and the first example of clients/python/README.md run as
written."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
import zipfile

import numpy as np

import dcasgd
from dcasgd import cli
from shard_cluster import ShardCluster, require_ps_binary

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PYTHON = "/usr/bin/python3"


def _copy_sources(dest):
    """clients/python and protos/ as in the repository (the build reads
    ../../protos), without build outputs: building in the checkout itself
    would leave build/ and *.egg-info there."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")
    shutil.copytree(os.path.join(REPO, "clients", "python"),
                    os.path.join(dest, "clients", "python"), ignore=ignore)
    shutil.copytree(os.path.join(REPO, "protos"), os.path.join(dest, "protos"))


def _clean_env():
    """The environment of a user's shell: no path to the checkout's package
    or stubs, so the installed copy is what runs."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "DCASGD_PYTHON_STUBS"):
        env.pop(name, None)
    env["DCASGD_STUBS_CACHE"] = os.path.join(tempfile.gettempdir(), "no-such-stubs-cache")
    return env


def _run(args, cwd, env=None, timeout=300):
    result = subprocess.run(args, cwd=cwd, env=env or _clean_env(), capture_output=True,
                            text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise AssertionError("%s exited %d:\n%s\n%s" % (" ".join(args), result.returncode,
                                                         result.stdout, result.stderr))
    return result.stdout


class WheelTest(unittest.TestCase):
    """pip wheel builds a wheel that holds the generated modules."""

    def test_wheel_holds_the_generated_modules_and_the_command(self):
        with tempfile.TemporaryDirectory() as tmp:
            _copy_sources(tmp)
            _run([PYTHON, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps",
                  "--no-index", "-w", os.path.join(tmp, "dist"), "./clients/python"], cwd=tmp)
            (wheel,) = os.listdir(os.path.join(tmp, "dist"))
            self.assertRegex(wheel, r"^dcasgd-[0-9.]+-py3-none-any\.whl$")
            with zipfile.ZipFile(os.path.join(tmp, "dist", wheel)) as archive:
                names = set(archive.namelist())
                entry_points = [n for n in names if n.endswith("entry_points.txt")]
                self.assertEqual(len(entry_points), 1)
                self.assertIn("dcasgd = dcasgd.cli:main_entry",
                              archive.read(entry_points[0]).decode())
            for module in ("dcasgd/v1/ps_pb2.py", "dcasgd/v1/ps_pb2_grpc.py",
                           "dcasgd/v1/coordinator_pb2_grpc.py",
                           "dcasgd/v1/replication_pb2_grpc.py",
                           "dcasgd/grpc_health/v1/health_pb2_grpc.py",
                           "dcasgd/grpc_reflection/v1alpha/reflection_pb2_grpc.py",
                           "dcasgd/client.py", "dcasgd/cli.py", "dcasgd/torch/optimizer.py"):
                self.assertIn(module, names)
            # Nothing generated was written into the (copied) source tree.
            self.assertFalse(os.path.exists(os.path.join(tmp, "clients", "python", "dcasgd",
                                                         "v1")))


@require_ps_binary
class InstalledPackageTest(unittest.TestCase):
    """A venv (seeing Debian's grpcio, protobuf and numpy) with the package
    installed by pip, driving two real shards."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="dcasgd-pkg-")
        cls.checkpoints = os.path.join(cls.tmp.name, "checkpoints")
        cls.cluster = ShardCluster(2, ["--update_rule=asgd", "--lr=0.1",
                                       "--checkpoint_dir=" + cls.checkpoints,
                                       "--checkpoint_interval_seconds=3600"])
        _copy_sources(cls.tmp.name)
        cls.venv = os.path.join(cls.tmp.name, "venv")
        _run([PYTHON, "-m", "venv", "--system-site-packages", cls.venv], cwd=cls.tmp.name)
        _run([os.path.join(cls.venv, "bin", "pip"), "install", "--no-build-isolation",
              "--no-index", "./clients/python"], cwd=cls.tmp.name)
        # The user's working directory: neither the checkout nor the sources.
        cls.home = os.path.join(cls.tmp.name, "home")
        os.mkdir(cls.home)

    @classmethod
    def tearDownClass(cls):
        cls.cluster.stop()
        cls.tmp.cleanup()

    def python(self, *args, env=None):
        return _run([os.path.join(self.venv, "bin", "python")] + list(args), cwd=self.home,
                    env=env)

    def metrics(self):
        return ",".join("127.0.0.1:%d" % p for p in self.cluster.metrics_ports)

    def test_installed_copy_is_imported(self):
        out = self.python("-c", "import dcasgd, dcasgd.v1.ps_pb2 as p; "
                          "print(dcasgd.__file__); print(p.__file__)")
        package_file, stubs_file = out.split()
        self.assertTrue(package_file.startswith(self.venv), package_file)
        self.assertTrue(stubs_file.startswith(os.path.join(os.path.dirname(package_file), "v1")),
                        stubs_file)

    def test_readme_first_example_runs_as_written(self):
        with open(os.path.join(REPO, "clients", "python", "README.md"), encoding="utf-8") as f:
            readme = f.read()
        example = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
        path = os.path.join(self.tmp.name, "readme_example.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(example)
        with dcasgd.Client(self.cluster.addresses) as evaluator:
            before = [s.version for s in evaluator.status()]
        env = _clean_env()
        env["DCASGD_PS"] = ",".join(self.cluster.addresses)
        out = self.python(path, env=env)
        error = float(re.search(r"error after 200 pushes: ([0-9.]+)", out).group(1))
        # From zeros (error ~ max |w_true| ~ 2) to a fit: plain SGD at
        # lr 0.1 on unit-variance inputs contracts the error by ~0.9 a step.
        self.assertLess(error, 1e-3, out)
        with dcasgd.Client(self.cluster.addresses) as evaluator:
            after = evaluator.status()
            w = evaluator.pull(["linear/w"])["linear/w"]
        # Every shard owning a chunk of linear/w (one chunk: one shard)
        # counted the 200 pushes.
        self.assertEqual(sum(a.version - b for a, b in zip(after, before)), 200)
        self.assertLess(float(np.abs(w).max()), 10.0)

    def test_status_prints_each_shards_version_workers_staleness_and_memory(self):
        with dcasgd.Client(self.cluster.addresses, "status-worker") as worker:
            worker.declare([dcasgd.TensorSpec("status/w", (300, 1000), chunk_elements=1000,
                                              init=dcasgd.zeros())])
            worker.pull(["status/w"])
            for _ in range(3):
                worker.pushpull({"status/w": np.full((300, 1000), 0.01, np.float32)})
            truth = worker.status()
            out = self.python("-m", "dcasgd", "status", "--ps", ",".join(self.cluster.addresses),
                              "--metrics", self.metrics())
        lines = out.splitlines()
        self.assertEqual(lines[0].split()[:5],
                         ["shard", "address", "version", "workers", "staleness"])
        for index, status in enumerate(truth):
            fields = lines[1 + index].split()
            self.assertEqual(fields[0], str(index))
            self.assertEqual(fields[1], self.cluster.addresses[index])
            self.assertGreaterEqual(int(fields[2]), status.version)
            self.assertEqual(fields[3], "1")  # the worker above, still joined
            mean, pushes = fields[4].split("/")
            self.assertGreaterEqual(int(pushes), 3)
            self.assertGreaterEqual(float(mean), 0.0)
            self.assertEqual(fields[5], "%.1f" % (status.weight_bytes / (1 << 20)))
            self.assertGreater(status.weight_bytes, 0)
        self.assertRegex(out, r"job: (no worker has asked for data yet|.*data shards done)")

    def test_checkpoint_writes_every_shard(self):
        out = self.python("-m", "dcasgd", "checkpoint", "--ps", ",".join(self.cluster.addresses))
        for index in range(2):
            match = re.search(r"shard %d \(.*\): version (\d+), (\d+) bytes, (\S+)" % index, out)
            self.assertIsNotNone(match, out)
            self.assertTrue(os.path.isfile(match.group(3)), out)
            self.assertEqual(os.path.getsize(match.group(3)), int(match.group(2)))

    def test_watch_samples_and_an_unreachable_shard_fails(self):
        out = self.python("-m", "dcasgd", "watch", "--ps", ",".join(self.cluster.addresses),
                          "--metrics", self.metrics(), "--interval", "0.1", "--count", "2")
        self.assertEqual(out.count("--- "), 2)
        self.assertRegex(out, r"updates/s: shard 0 [0-9.]+, shard 1 [0-9.]+")
        result = subprocess.run(
            [os.path.join(self.venv, "bin", "dcasgd"), "status", "--ps",
             self.cluster.addresses[0] + ",127.0.0.1:1"], cwd=self.home, env=_clean_env(),
            capture_output=True, text=True, timeout=60, check=False)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertRegex(result.stdout, r"\n1 +127\.0\.0\.1:1 +UNREACHABLE: UNAVAILABLE")
        # The shard that answers is still shown.
        self.assertRegex(result.stdout, r"\n0 +%s +\d+" % re.escape(self.cluster.addresses[0]))


class ArgumentsTest(unittest.TestCase):
    """Bad arguments are refused before any call (exit 2)."""

    def test_bad_addresses_and_mismatched_metrics_are_refused(self):
        for argv in (["status", "--ps", "nohostport"], ["status", "--ps", "h:x"],
                     ["status", "--ps", "a:1,b:2", "--metrics", "a:9"],
                     ["watch", "--ps", "a:1", "--interval", "0"], ["status"], ["frobnicate"]):
            with self.assertRaises(SystemExit) as raised, \
                    open(os.devnull, "w", encoding="utf-8") as sink:
                stderr, sys.stderr = sys.stderr, sink
                try:
                    cli.main(argv)
                finally:
                    sys.stderr = stderr
            self.assertEqual(raised.exception.code, 2, argv)


if __name__ == "__main__":
    unittest.main()
