"""Starts real dcasgd-ps processes on loopback for the Python tests.

The binary comes from $DCASGD_PS_BINARY (set by tests/python/CMakeLists.txt
when the dcasgd-ps target exists). Each shard listens on 127.0.0.1:0 and
reports its ports through --port_file ("grpc <port>\\nmetrics <port>\\n").
"""

import os
import signal
import subprocess
import tempfile
import time
import unittest

import dcasgd


def ps_binary():
    """The dcasgd-ps path, or None when it is not available."""
    path = os.environ.get("DCASGD_PS_BINARY", "")
    return path if path and os.access(path, os.X_OK) else None


def require_ps_binary(test_case):
    """Skips `test_case` (a unittest.TestCase class) without dcasgd-ps."""
    reason = "DCASGD_PS_BINARY does not name an executable dcasgd-ps"
    return unittest.skipIf(ps_binary() is None, reason)(test_case)


def _read_port_file(path):
    """{"grpc": port, "metrics": port} once the file is complete, else None."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    ports = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            ports[parts[0]] = int(parts[1])
    return ports if "grpc" in ports and "metrics" in ports else None


class ShardCluster:
    """`shard_count` dcasgd-ps processes of one job, started in the
    constructor and stopped by stop() (SIGTERM, then SIGKILL after 10 s).
    Use as a context manager. `flags` are passed to every shard;
    `credentials` (dcasgd.security.Credentials) are what the start-up health
    check connects with, for shards with TLS."""

    def __init__(self, shard_count, flags=(), start_timeout=30.0, credentials=None):
        binary = ps_binary()
        if binary is None:
            raise unittest.SkipTest("no dcasgd-ps binary")
        self._dir = tempfile.TemporaryDirectory(prefix="dcasgd-py-")
        self.processes = []
        self.addresses = []
        self.metrics_ports = []
        self._logs = []
        try:
            for index in range(shard_count):
                port_file = os.path.join(self._dir.name, "ports-%d" % index)
                log = open(os.path.join(self._dir.name, "shard-%d.log" % index), "wb")
                self._logs.append(log)
                self.processes.append(subprocess.Popen(
                    [binary, "--listen=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
                     "--port_file=" + port_file, "--shard_index=%d" % index,
                     "--shard_count=%d" % shard_count] + list(flags),
                    stdout=log, stderr=subprocess.STDOUT))
            deadline = time.monotonic() + start_timeout
            for index, process in enumerate(self.processes):
                port_file = os.path.join(self._dir.name, "ports-%d" % index)
                ports = _read_port_file(port_file)
                while ports is None:
                    if process.poll() is not None:
                        raise RuntimeError("dcasgd-ps shard %d exited with %d:\n%s" %
                                           (index, process.returncode, self.log(index)))
                    if time.monotonic() > deadline:
                        raise RuntimeError("dcasgd-ps shard %d wrote no port file" % index)
                    time.sleep(0.02)
                    ports = _read_port_file(port_file)
                self.addresses.append("127.0.0.1:%d" % ports["grpc"])
                self.metrics_ports.append(ports["metrics"])
            for address in self.addresses:
                dcasgd.wait_until_serving(address,
                                          timeout=max(1.0, deadline - time.monotonic()),
                                          credentials=credentials)
        except BaseException:
            self.stop()
            raise

    def log(self, index):
        with open(os.path.join(self._dir.name, "shard-%d.log" % index), errors="replace") as f:
            return f.read()

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self._logs:
            log.close()
        self._logs = []
        self._dir.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()
