"""dcasgd.Client against a real dcasgd-ps process when things break: a push
whose answer is lost (a TCP proxy cuts the connection after the shard applied
it), and a shard killed and restarted on the same port. Plain ASGD, so the
weights are exactly the initial values minus lr times the gradients applied.
Skipped without $DCASGD_PS_BINARY (set by the build)."""

import os
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request

import numpy as np

import dcasgd
from shard_cluster import ps_binary, require_ps_binary

HEADERS_FRAME = 1


class CuttingProxy:
    """Forwards TCP connections to 127.0.0.1:target_port. When armed, the next
    HTTP/2 HEADERS frame on a stream from the server (the start of an answer)
    is not forwarded: both sides of its connection are closed instead."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.armed = False  # guarded by lock
        self.cuts = 0  # guarded by lock
        self.stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_at_next_reply(self):
        with self.lock:
            self.armed = True

    def _take_arm(self):
        with self.lock:
            armed, self.armed = self.armed, False
            if armed:
                self.cuts += 1
            return armed

    def _accept(self):
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._forward, args=(client, server), daemon=True).start()

    def _forward(self, client, server):
        pending = b""  # bytes of an incomplete frame from the server
        try:
            while not self.stopping.is_set():
                readable, _, _ = select.select([client, server], [], [], 0.1)
                if client in readable:
                    data = client.recv(65536)
                    if not data:
                        return
                    server.sendall(data)
                if server in readable:
                    data = server.recv(65536)
                    if not data:
                        return
                    pending += data
                    while len(pending) >= 9:
                        length = int.from_bytes(pending[0:3], "big")
                        if len(pending) < 9 + length:
                            break
                        stream = int.from_bytes(pending[5:9], "big") & 0x7FFFFFFF
                        if pending[3] == HEADERS_FRAME and stream != 0 and self._take_arm():
                            return
                        client.sendall(pending[:9 + length])
                        pending = pending[9 + length:]
        except OSError:
            return
        finally:
            client.close()
            server.close()

    def close(self):
        self.stopping.set()
        self.listener.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Shard:
    """One dcasgd-ps process at a fixed port; restart() brings it back there."""

    def __init__(self, flags, port=None):
        self.dir = tempfile.TemporaryDirectory(prefix="dcasgd-py-faults-")
        self.port = port or free_port()
        self.flags = ["--listen=127.0.0.1:%d" % self.port, "--metrics_address=127.0.0.1:0",
                      "--port_file=" + os.path.join(self.dir.name, "ports")] + list(flags)
        self.address = "127.0.0.1:%d" % self.port
        self.process = None
        self.metrics_port = None
        self.restart()

    def restart(self):
        port_file = os.path.join(self.dir.name, "ports")
        if os.path.exists(port_file):
            os.remove(port_file)
        log = open(os.path.join(self.dir.name, "shard.log"), "ab")
        self.process = subprocess.Popen([ps_binary()] + self.flags, stdout=log,
                                        stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                with open(port_file) as f:
                    ports = dict(line.split() for line in f.read().splitlines() if line)
                if "metrics" in ports:
                    self.metrics_port = int(ports["metrics"])
                    return
            except FileNotFoundError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("dcasgd-ps did not start:\n" + self.log())
            time.sleep(0.02)

    def log(self):
        with open(os.path.join(self.dir.name, "shard.log"), errors="replace") as f:
            return f.read()

    def metric(self, name):
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port,
                                      timeout=5).read().decode()
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def kill(self, sig=signal.SIGKILL):
        self.process.send_signal(sig)
        self.process.wait(timeout=30)

    def stop(self):
        if self.process.poll() is None:
            self.kill(signal.SIGTERM)
        self.dir.cleanup()


SPECS = [dcasgd.TensorSpec("w", (6,), 4, dcasgd.zeros())]


def start_pair(test, witness_process=None):
    """A replicated shard on loopback: a witness and members a and b
    (dcasgd-ps --replicas=2, plain ASGD at lr 0.5, short failover timings),
    stopped at the test's cleanup. Returns the two Shards; the witness's
    Popen is appended to `witness_process` (a list) when given."""
    witness = start_witness(test, 1, witness_process)
    ports = [free_port(), free_port()]
    members = []
    for m, name in enumerate("ab"):
        shard = Shard(["--replicas=2", "--member=" + name,
                       "--peer_address=127.0.0.1:%d" % ports[1 - m],
                       "--witness_address=" + witness, "--replication_heartbeat_ms=50",
                       "--replication_lease_ms=300", "--failover_timeout_ms=800",
                       "--update_rule=asgd", "--lr=0.5"], port=ports[m])
        test.addCleanup(shard.stop)
        members.append(shard)
    return members


def wait_until_paired(test, client, timeout=60):
    """Polls until member a of the client's shard is the primary of a formed
    pair (its replica caught up): before that, the replica could not take
    over."""
    deadline = time.monotonic() + timeout
    while client.status()[0].replication_role != "primary":
        test.assertLess(time.monotonic(), deadline, "the pair did not form")
        time.sleep(0.02)


def wait_until_stopped(pid, timeout=10):
    """SIGSTOP takes effect asynchronously: waits until every thread of
    `pid` is in state T (stopped), so none can still answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except FileNotFoundError:
                pass
        if states and all(s in ("T", "t") for s in states):
            return
        time.sleep(0.01)
    raise AssertionError("process %d did not stop" % pid)


def start_witness(test, shard_count, started=None):
    """A dcasgd-witness on loopback for `test` (stopped at its cleanup);
    returns its address, and appends its Popen to `started` (a list) when
    given. Skips the test without $DCASGD_WITNESS_BINARY."""
    binary = os.environ.get("DCASGD_WITNESS_BINARY", "")
    if not (binary and os.access(binary, os.X_OK)):
        test.skipTest("DCASGD_WITNESS_BINARY does not name an executable dcasgd-witness")
    state = tempfile.TemporaryDirectory(prefix="dcasgd-py-witness-")
    test.addCleanup(state.cleanup)
    port_file = os.path.join(state.name, "ports")
    process = subprocess.Popen(
        [binary, "--listen=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
         "--shard_count=%d" % shard_count, "--state_dir=" + state.name,
         "--port_file=" + port_file], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    test.addCleanup(process.wait, 30)
    test.addCleanup(process.terminate)
    if started is not None:
        started.append(process)
    deadline = time.monotonic() + 30
    while True:
        try:
            with open(port_file) as f:
                ports = dict(line.split() for line in f.read().splitlines() if line)
            if "metrics" in ports:
                return "127.0.0.1:%s" % ports["grpc"]
        except FileNotFoundError:
            pass
        test.assertIsNone(process.poll(), "dcasgd-witness exited")
        test.assertLess(time.monotonic(), deadline, "dcasgd-witness did not start")
        time.sleep(0.02)


@require_ps_binary
class FaultTest(unittest.TestCase):

    def test_a_push_whose_answer_is_lost_is_applied_once(self):
        shard = Shard(["--update_rule=asgd", "--lr=0.5"])
        self.addCleanup(shard.stop)
        proxy = CuttingProxy(shard.port)
        self.addCleanup(proxy.close)
        acknowledged = 0.0
        with dcasgd.Client(["127.0.0.1:%d" % proxy.port], "py-0", heartbeats=False,
                           initial_backoff=0.01) as client:
            client.declare(SPECS)
            client.pull(["w"])
            for i in range(1, 7):
                if i % 2 == 1:
                    proxy.cut_at_next_reply()  # applied, but the answer is lost
                if i % 4 == 0:
                    result = client.push({"w": np.full(6, i, np.float32)})
                else:
                    client.pushpull({"w": np.full(6, i, np.float32)})
                    result = client.last_pushpull
                acknowledged += i
                self.assertEqual(result.versions[0], i, "one version per push")
        self.assertEqual(proxy.cuts, 3, "the faults happened")
        with dcasgd.Client([shard.address]) as evaluator:
            final = evaluator.pull(["w"])["w"]
        # A push applied twice would subtract its gradient twice.
        np.testing.assert_array_equal(final, np.full(6, -0.5 * acknowledged, np.float32))
        self.assertEqual(shard.metric("dcasgd_ps_repeated_pushes_total"), 3)
        self.assertEqual(shard.metric("dcasgd_ps_pushes_total"), 6)

    def test_a_replicated_shards_client_moves_to_the_other_member_without_rejoining(self):
        # Member a is a proxy in front of the shard, member b the shard
        # itself: a loses the answer of an applied push, then goes away; the
        # client carries on at b with the same worker id, applying each push
        # once (the client's half of docs/design.md "Replicated shards").
        shard = Shard(["--update_rule=asgd", "--lr=0.5"])
        self.addCleanup(shard.stop)
        proxy = CuttingProxy(shard.port)
        self.addCleanup(proxy.close)
        acknowledged = 0.0
        pair = "127.0.0.1:%d|%s" % (proxy.port, shard.address)
        with dcasgd.Client([pair], "py-0", heartbeats=False, initial_backoff=0.01) as client:
            worker_id = client.worker_id(0)
            client.declare(SPECS)
            client.pull(["w"])
            for i in range(1, 9):
                if i == 3:
                    proxy.cut_at_next_reply()  # applied, answer lost: retried at b
                if i == 5:
                    proxy.close()  # member a is gone for good
                client.pushpull({"w": np.full(6, i, np.float32)})
                acknowledged += i
            self.assertEqual(client.worker_id(0), worker_id, "no re-join")
            final = client.pull(["w"])["w"]
            self.assertEqual(client.status()[0].active_workers, 1)
        np.testing.assert_array_equal(final, np.full(6, -0.5 * acknowledged, np.float32))
        self.assertEqual(shard.metric("dcasgd_ps_pushes_total"), 8)
        self.assertEqual(shard.metric("dcasgd_ps_repeated_pushes_total"), 1)
        with dcasgd.DataCoordinatorClient("127.0.0.1:1|" + shard.address) as coordinator:
            self.assertFalse(coordinator.job_status().configured)
        with self.assertRaisesRegex(ValueError, "a\\|b for the two members"):
            dcasgd.Client(["127.0.0.1:1|127.0.0.1:1"])

    def test_a_client_of_a_real_pair_rides_through_a_killed_primary(self):
        # A replicated shard (dcasgd-ps --replicas=2 and a witness): the
        # client knows both members ("a|b"); member a is SIGKILLed mid-way.
        # Every push is acknowledged without a re-join, and every reply
        # equals an unreplicated shard's fed the same pushes.
        members = start_pair(self)
        alone = Shard(["--update_rule=asgd", "--lr=0.5"])
        self.addCleanup(alone.stop)
        pair = "%s|%s" % (members[0].address, members[1].address)
        with dcasgd.Client([pair], "py-0", initial_backoff=0.02, max_backoff=0.2) as client, \
                dcasgd.Client([alone.address], "py-0") as reference:
            worker_id = client.worker_id(0)
            for c in (client, reference):
                c.declare(SPECS)
                c.pull(["w"])
            wait_until_paired(self, client)
            for i in range(1, 21):
                if i == 8:
                    members[0].kill()  # SIGKILL, mid-way
                gradient = {"w": np.full(6, i, np.float32)}
                got = client.pushpull(gradient)["w"]
                np.testing.assert_array_equal(got, reference.pushpull(gradient)["w"])
            self.assertEqual(client.worker_id(0), worker_id, "no re-join")
            status = client.status()[0]
        self.assertEqual(status.replication_role, "primary-solo")
        self.assertEqual(status.version, 20)

    def test_role_hints_carry_a_call_through_a_failover_with_one_attempt_per_member(self):
        # The client reads the role a refusing member names (dcasgd-role):
        # member b's refusals while it takes over do not count, so a push
        # with one attempt per member goes on until b serves it. The witness
        # is stopped so that b cannot take over before it has refused the
        # push: without the role, the dead member a's failure and that
        # refusal would have raised UNAVAILABLE.
        witness = []
        members = start_pair(self, witness)
        pair = "%s|%s" % (members[0].address, members[1].address)

        def refused_by_b():
            text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % members[1].metrics_port,
                                          timeout=5).read().decode()
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("dcasgd_ps_rejected_requests_total{")
                       and 'reason="unavailable"' in line)

        with dcasgd.Client([pair], "py-0", max_attempts=1, initial_backoff=0.02,
                           max_backoff=0.1) as client:
            client.declare(SPECS)
            client.pull(["w"])
            wait_until_paired(self, client)
            gradient = {"w": np.ones(6, np.float32)}
            client.pushpull(gradient)
            before = refused_by_b()
            witness[0].send_signal(signal.SIGSTOP)
            self.addCleanup(witness[0].send_signal, signal.SIGCONT)
            wait_until_stopped(witness[0].pid)
            members[0].kill()
            result = {}

            def push():
                try:
                    result["w"] = client.pushpull(gradient)["w"]
                except dcasgd.Error as error:
                    result["error"] = error

            pusher = threading.Thread(target=push)
            pusher.start()
            deadline = time.monotonic() + 30
            while refused_by_b() <= before and time.monotonic() < deadline:
                time.sleep(0.01)
            refused = refused_by_b() > before
            witness[0].send_signal(signal.SIGCONT)
            pusher.join(60)
            status = client.status()[0]
        self.assertTrue(refused, "member b never refused the push")
        self.assertNotIn("error", result)
        np.testing.assert_array_equal(result["w"], np.full(6, -0.5 * 2, np.float32))
        self.assertEqual(status.replication_role, "primary-solo")
        self.assertEqual(status.version, 2)

    def test_a_client_of_a_real_pair_leaves_a_hung_primary_within_seconds(self):
        # Member a is SIGSTOPped: its TCP connections stay open and a call
        # on them hangs. The client pings a member of a pair after 1 s
        # without data and gives it 2 s to answer (dcasgd._rpc.channel_options),
        # so the push moves to member b, promoted after the failover timeout
        # (0.8 s). With the keepalive of a lone shard (a ping every 10 s,
        # 5 s to answer) the same push waits 5-15 s; the call's own deadline
        # is 60 s.
        members = start_pair(self)
        pair = "%s|%s" % (members[0].address, members[1].address)
        with dcasgd.Client([pair], "py-0", initial_backoff=0.02, max_backoff=0.2) as client:
            client.declare(SPECS)
            client.pull(["w"])
            gradient = {"w": np.ones(6, np.float32)}
            wait_until_paired(self, client)
            for _ in range(5):
                client.pushpull(gradient)
            members[0].process.send_signal(signal.SIGSTOP)
            self.addCleanup(members[0].process.send_signal, signal.SIGCONT)
            wait_until_stopped(members[0].process.pid)
            stopped = time.monotonic()
            got = client.pushpull(gradient)["w"]
            left_after = time.monotonic() - stopped
            status = client.status()[0]
        print("push answered %.2f s after the primary stopped" % left_after, end=" ... ",
              flush=True)
        np.testing.assert_array_equal(got, np.full(6, -0.5 * 6, np.float32))
        self.assertEqual(status.replication_role, "primary-solo")
        self.assertEqual(status.version, 6)
        self.assertLess(left_after, 7.0, "the push waited for the hung primary")

    def test_a_restarted_shard_is_used_within_seconds_of_coming_back(self):
        checkpoints = tempfile.TemporaryDirectory(prefix="dcasgd-py-ckpt-")
        self.addCleanup(checkpoints.cleanup)
        shard = Shard(["--update_rule=asgd", "--lr=0.01", "--checkpoint_dir=" + checkpoints.name])
        self.addCleanup(shard.stop)
        successes = []
        errors = []
        stop = threading.Event()
        with dcasgd.Client([shard.address], "py-0") as client:
            client.declare(SPECS)
            client.pull(["w"])
            client.checkpoint()  # the restarted shard has the model

            def push_loop():
                while not stop.is_set():
                    try:
                        client.pushpull({"w": np.ones(6, np.float32)})
                        successes.append(time.monotonic())
                    except dcasgd.Error as error:
                        errors.append(error.code)
                        try:
                            client.pull(["w"])
                        except dcasgd.Error:
                            pass

            pusher = threading.Thread(target=push_loop)
            pusher.start()
            self.addCleanup(pusher.join)
            self.addCleanup(stop.set)
            deadline = time.monotonic() + 10
            while not successes and time.monotonic() < deadline:
                time.sleep(0.01)
            self.assertTrue(successes)
            shard.kill()
            time.sleep(8)  # the outage: gRPC's default reconnect backoff grows past seconds
            shard.restart()
            back = time.monotonic()  # the port file exists: the shard listens
            deadline = back + 30
            while not any(t > back for t in successes) and time.monotonic() < deadline:
                time.sleep(0.01)
            stop.set()
            pusher.join()
        after = [t for t in successes if t > back]
        self.assertTrue(after, "no push succeeded after the restart")
        stall = after[0] - back
        print("first push %.2f s after the shard's port was back" % stall)
        self.assertLess(stall, 3.0)
        self.assertTrue(errors, "the outage was seen")


if __name__ == "__main__":
    unittest.main()
