"""Where the `dcasgd` package finds its generated stubs (dcasgd/_stubs.py):
lazy generation into a cache directory, reuse, and an explicit directory."""

import os
import subprocess
import sys
import tempfile
import unittest

_CLIENT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients",
                           "python")
_PROBE = "import dcasgd.v1.ps_pb2 as m, dcasgd.grpc_health.v1.health_pb2 as h; print(m.__file__)"


def _import_in_subprocess(extra_env):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DCASGD_PYTHON_STUBS", "DCASGD_STUBS_CACHE", "PYTHONPATH")}
    env.update({"PYTHONPATH": _CLIENT_DIR, "PYTHONDONTWRITEBYTECODE": "1"})
    env.update(extra_env)
    return subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


class StubsTest(unittest.TestCase):

    def test_generated_lazily_into_the_cache_once(self):
        with tempfile.TemporaryDirectory() as cache:
            first = _import_in_subprocess({"DCASGD_STUBS_CACHE": cache})
            self.assertEqual(first.returncode, 0, first.stderr)
            self.assertTrue(first.stdout.strip().startswith(os.path.join(cache, "stubs-")))
            entries = sorted(os.listdir(cache))
            self.assertEqual(len(entries), 1, entries)
            second = _import_in_subprocess({"DCASGD_STUBS_CACHE": cache})
            self.assertEqual(second.returncode, 0, second.stderr)
            self.assertEqual(second.stdout, first.stdout)
            self.assertEqual(sorted(os.listdir(cache)), entries)

    def test_explicit_directory_without_stubs_is_an_import_error(self):
        with tempfile.TemporaryDirectory() as empty:
            result = _import_in_subprocess({"DCASGD_PYTHON_STUBS": empty})
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("ImportError", result.stderr)
        self.assertIn("DCASGD_PYTHON_STUBS", result.stderr)

    def test_explicit_directory_is_used(self):
        with tempfile.TemporaryDirectory() as out:
            script = os.path.join(_CLIENT_DIR, "generate_stubs.sh")
            subprocess.run(["/bin/sh", script, out], check=True, timeout=120)
            result = _import_in_subprocess({"DCASGD_PYTHON_STUBS": out})
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(result.stdout.strip(),
                             os.path.join(os.path.realpath(out), "dcasgd", "v1", "ps_pb2.py"))


if __name__ == "__main__":
    unittest.main()
