"""Process harness for the end-to-end tests: real dcasgd-ps shards, real
dcasgd-worker processes, the SigV4-verifying S3 server (s3rver) and a real
Prometheus, all on loopback. Every wait polls with a deadline; nothing sleeps
a fixed time in place of a condition."""

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

SOURCE_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_DIR = os.environ.get("DCASGD_BUILD_DIR", os.path.join(SOURCE_DIR, "build", "release"))
PS_BINARY = os.path.join(BUILD_DIR, "services", "ps", "dcasgd-ps")
WITNESS_BINARY = os.path.join(BUILD_DIR, "services", "witness", "dcasgd-witness")
WORKER_BINARY = os.path.join(BUILD_DIR, "services", "worker", "dcasgd-worker")
# The worker with TorchScript models (built with -DDCASGD_WITH_TORCH=ON).
WORKER_TORCH_BINARY = os.path.join(BUILD_DIR, "services", "worker", "dcasgd-worker-torch")
PREPARE_BINARY = os.path.join(BUILD_DIR, "services", "worker", "data", "dcasgd-prepare-data")
S3RVER_DIR = os.path.join(SOURCE_DIR, "scripts", "s3rver")
S3_KEY = "S3RVER"
S3_SECRET = "S3RVER"


def wait_for(predicate, timeout, what, interval=0.05):
    """Polls predicate() until it returns a truthy value; raises on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_port_file(path):
    """Parses 'name port' lines, or returns None while the file is absent."""
    try:
        with open(path) as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return None
    ports = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 2:
            ports[parts[0]] = int(parts[1])
    return ports or None


class Process:
    """A child process whose output goes to a log file."""

    def __init__(self, args, log_path, env=None):
        self.args = args
        self.log_path = log_path
        self.log = open(log_path, "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.popen = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                      env=full_env, start_new_session=True)

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def poll(self):
        return self.popen.poll()

    def wait(self, timeout):
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self.args[0]} did not exit within {timeout}s; log:\n"
                               + self.output()[-3000:])

    def signal(self, sig):
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def stop(self):
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log.close()


class Cluster:
    """Shards, workers and helpers of one test, torn down together."""

    def __init__(self, name):
        self.dir = tempfile.mkdtemp(prefix=f"dcasgd-e2e-{name}-")
        self.processes = []
        self.shards = []  # (process, grpc_port, metrics_port)
        self.pairs = []  # with start_pairs: [member a, member b] of each shard, each a Member

    def close(self):
        for p in reversed(self.processes):
            p.stop()
        if os.environ.get("DCASGD_KEEP_E2E_DIRS"):
            print("kept", self.dir, file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def spawn(self, args, name, env=None):
        p = Process(args, self.path(name + ".log"), env)
        self.processes.append(p)
        return p

    def start_shards(self, count, *flags, fixed_ports=False, volume=None, shard_flags=None,
                     shard_volumes=None):
        """Starts `count` shards. With fixed_ports, each listens on a port
        chosen now, so restart_shard() brings it back at the same address (as
        a StatefulSet pod keeps its DNS name). With a ScratchVolume, the
        shards run in its namespace (give them a --checkpoint_dir in it);
        shard_flags and shard_volumes ({index: ...}) set flags and a volume
        for single shards."""
        for i in range(count):
            listen = f"127.0.0.1:{free_port()}" if fixed_ports else "127.0.0.1:0"
            args = [PS_BINARY, f"--listen={listen}", "--metrics_address=127.0.0.1:0",
                    f"--port_file={self.path(f'ps-{i}.ports')}", f"--shard_index={i}",
                    f"--shard_count={count}", *flags, *(shard_flags or {}).get(i, [])]
            shard_volume = (shard_volumes or {}).get(i, volume)
            if shard_volume is not None:
                args = shard_volume.wrap(args)
            self.shards.append(self._launch_shard(i, args))
        return self.shards

    def _launch_shard(self, i, args, attempt=0):
        port_file = self.path(f"ps-{i}.ports")
        if os.path.exists(port_file):
            os.remove(port_file)
        p = self.spawn(args, f"ps-{i}" + (f"-{attempt}" if attempt else ""))
        p.shard_args = args
        ports = wait_for(lambda: read_port_file(port_file) or (p.poll() is not None and
                                                                {"exited": 1}),
                         30, f"shard {i} to start")
        if "exited" in ports:
            raise RuntimeError(f"shard {i} exited at start:\n{p.output()}")
        return (p, ports["grpc"], ports["metrics"])

    def restart_shard(self, i, attempt=1):
        """Starts shard i again with the same flags (same port with
        fixed_ports, same checkpoint dir), after it exited."""
        old = self.shards[i][0]
        if old.poll() is None:
            raise RuntimeError(f"shard {i} is still running")
        self.shards[i] = self._launch_shard(i, old.shard_args, attempt)
        return self.shards[i]

    def start_pairs(self, count, *flags, member_volumes=None):
        """Starts a dcasgd-witness and `count` shards as replicated pairs
        (--replicas=2, members a and b, each on a port chosen now and with a
        checkpoint directory of its own); `flags` go to every member. With
        member_volumes ({(shard, "a" or "b"): ScratchVolume}), that member
        runs in the volume's namespace and checkpoints to its path (a restart
        through Member.start() too). Returns self.pairs; addresses() then
        names both members of each shard."""
        witness_ports = self.path("witness.ports")
        self.witness = self.spawn(
            [WITNESS_BINARY, "--listen=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
             f"--state_dir={self.path('witness')}", f"--shard_count={count}",
             f"--port_file={witness_ports}"], "witness")
        ports = wait_for(lambda: read_port_file(witness_ports) or self.witness.poll() is not None,
                         30, "the witness to start")
        if ports is True:
            raise RuntimeError(f"the witness exited at start:\n{self.witness.output()}")
        self.witness_address = f"127.0.0.1:{ports['grpc']}"
        for i in range(count):
            pair = Pair(self, i)
            for member, peer in ((pair[0], pair[1]), (pair[1], pair[0])):
                volume = (member_volumes or {}).get((i, member.name))
                checkpoint_dir = (volume.path if volume is not None
                                  else self.path('checkpoints', member.name))
                member.args = [
                    PS_BINARY, f"--listen={member.address}", "--metrics_address=127.0.0.1:0",
                    f"--port_file={member.port_file}", f"--shard_index={i}",
                    f"--shard_count={count}", "--replicas=2", f"--member={member.name}",
                    f"--peer_address={peer.address}",
                    f"--witness_address={self.witness_address}",
                    f"--checkpoint_dir={checkpoint_dir}", *flags]
                if volume is not None:
                    member.args = volume.wrap(member.args)
            self.pairs.append(pair)
        for pair in self.pairs:  # both members at once: each asks its peer at start
            for member in pair:
                member.start()
        for pair in self.pairs:
            for member in pair:
                member.wait_started()
        return self.pairs

    def addresses(self):
        if self.pairs:
            return ",".join(f"{a.address}|{b.address}" for a, b in self.pairs)
        return ",".join(f"127.0.0.1:{g}" for _, g, _ in self.shards)

    def start_worker(self, name, data, *flags, role="train", env=None, binary=WORKER_BINARY):
        port_file = self.path(f"{name}.ports")
        args = [binary, f"--role={role}", f"--ps_addresses={self.addresses()}",
                f"--data={data}", "--metrics_address=127.0.0.1:0", f"--port_file={port_file}",
                *flags]
        if role == "train":
            args.append(f"--worker_name={name}")
        p = self.spawn(args, name, env)
        p.port_file = port_file
        return p

    def start_s3rver(self, bucket):
        node = shutil.which("node")
        entry = os.path.join(S3RVER_DIR, "start.js")
        if node is None or not os.path.isdir(os.path.join(S3RVER_DIR, "node_modules")):
            raise RuntimeError("s3rver is not installed: run scripts/s3rver/install.sh "
                               "(scripts/test.sh does)")
        port = free_port()
        data_dir = self.path("s3")
        os.makedirs(data_dir)
        self.spawn([node, "--openssl-legacy-provider", entry, "-d", data_dir, "-a", "127.0.0.1",
                    "-p", str(port), "--configure-bucket", bucket], "s3rver")

        def answers():
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                return True
            except urllib.error.HTTPError:
                return True  # any HTTP answer (403 without a signature) means it is up
            except OSError:
                return False

        wait_for(answers, 30, "s3rver to answer")
        return f"http://127.0.0.1:{port}"


# The roles of a member that serves as its shard's primary (ShardStatus's
# replication_role): paired with its replica, or alone after losing it.
PRIMARY_ROLES = ("primary", "primary-solo")


class Pair(list):
    """The two members [a, b] of one replicated shard (Cluster.start_pairs)."""

    def __init__(self, cluster, shard):
        super().__init__(Member(cluster, shard, m) for m in "ab")
        self.shard = shard

    def member(self, roles, timeout):
        """The member whose role is in `roles` (polls up to `timeout` s)."""
        def find():
            for member in self:
                if member.role() in roles:
                    return member
            return None
        return wait_for(find, timeout, f"a member of shard {self.shard} in {list(roles)}")

    def primary(self, timeout):
        return self.member(PRIMARY_ROLES, timeout)

    def other(self, member):
        """The member of this pair that is not `member`."""
        a, b = self
        return b if member is a else a


class Member:
    """One member ("a" or "b") of a replicated shard pair started by
    Cluster.start_pairs: a dcasgd-ps process on a fixed loopback port, so a
    restart comes back at the same address (as a StatefulSet pod does)."""

    def __init__(self, cluster, shard, name):
        self.cluster = cluster
        self.shard = shard
        self.name = name
        self.address = f"127.0.0.1:{free_port()}"
        self.port_file = cluster.path(f"ps-{shard}-{name}.ports")
        self.args = None
        self.process = None
        self.starts = 0
        self.metrics_port = None

    def start(self):
        """Starts (or, after it exited, restarts) the member's process."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"shard {self.shard} member {self.name} is still running")
        if os.path.exists(self.port_file):
            os.remove(self.port_file)
        suffix = f"-{self.starts}" if self.starts else ""
        self.process = self.cluster.spawn(self.args, f"ps-{self.shard}-{self.name}{suffix}")
        self.starts += 1

    def wait_started(self):
        ports = wait_for(lambda: read_port_file(self.port_file) or self.process.poll() is not None,
                         30, f"shard {self.shard} member {self.name} to start")
        if ports is True:
            raise RuntimeError(f"shard {self.shard} member {self.name} exited at start:\n"
                               + self.process.output())
        self.metrics_port = ports["metrics"]

    def status(self):
        """Its ShardStatus, or None while it does not answer (killed, stopped
        or starting). Any other error, such as a Python without grpc, is
        raised: it must not read as a member that is down."""
        import grpc

        try:
            return shard_status(self.address)
        except grpc.RpcError:
            return None

    def role(self):
        """Its replication role ("primary-paired", "replica", ...), or None."""
        status = self.status()
        return status.replication_role if status is not None else None


class ScratchVolume:
    """A small tmpfs at `path`, visible only to processes started through
    wrap(): it is mounted in a private mount namespace (unshare -rm: works as
    root and for users with user namespaces) held by a sleeping process, so a
    restarted shard sees the files its predecessor wrote. fill() makes the
    volume full (ENOSPC for every write), free() undoes it."""

    def __init__(self, cluster, path, size_mb):
        self.path = path
        os.makedirs(path, exist_ok=True)
        self.holder = cluster.spawn(
            ["unshare", "-rm", "sh", "-c",
             'mount -t tmpfs -o size="$1"m tmpfs "$0" && echo mounted && exec sleep 100000',
             path, str(size_mb)], "volume-" + os.path.basename(path))
        wait_for(lambda: "mounted" in self.holder.output() or self.holder.poll() is not None,
                 10, "the scratch volume")
        if self.holder.poll() is not None:
            raise RuntimeError("cannot mount a tmpfs in a user namespace (unshare -rm):\n"
                               + self.holder.output())

    def wrap(self, args):
        """`args` run inside the volume's namespace."""
        return ["nsenter", "-t", str(self.holder.popen.pid), "-U", "-m",
                "--preserve-credentials", "--"] + list(args)

    def _run(self, script):
        return subprocess.run(self.wrap(["sh", "-c", script, self.path]), capture_output=True,
                              text=True, timeout=30)

    def fill(self):
        # cat fails with ENOSPC once the volume is full: that is the point.
        self._run('cat /dev/zero > "$0/filler"; sync')

    def free(self):
        self._run('rm -f "$0/filler"')

    def listing(self):
        return self._run('ls -la "$0"').stdout


def channel(address, tls_ca=None, server_name=None):
    """A channel to a shard: plaintext, or TLS trusting the CA file `tls_ca`
    (and verifying `server_name` instead of the address's host)."""
    import grpc
    if tls_ca is None:
        return grpc.insecure_channel(address)
    with open(tls_ca, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(address, credentials, options=options)


def bearer(token):
    """Call metadata carrying a bearer token (None: no metadata)."""
    return None if token is None else [("authorization", "Bearer " + token)]


def health_status(address, service="", tls_ca=None):
    """grpc.health.v1 Check of `service`: "SERVING", "NOT_SERVING", ... or the
    error code name when the call fails (over TLS with `tls_ca`). Raw bytes,
    so no health stubs are needed: HealthCheckRequest{1: service},
    HealthCheckResponse{1: status}."""
    import grpc
    names = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
    encoded = service.encode()
    request = (b"\x0a" + bytes([len(encoded)]) + encoded) if encoded else b""
    with channel(address, tls_ca) as channel_:
        check = channel_.unary_unary("/grpc.health.v1.Health/Check")
        try:
            response = check(request, timeout=5)
        except grpc.RpcError as error:
            return error.code().name
    return names.get(response[1] if len(response) >= 2 else 0, "UNKNOWN")


def s3_env(endpoint, secret=S3_SECRET):
    return {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": endpoint}


def prepare_data(dest, shards, env=None, log=None):
    """Runs dcasgd-prepare-data; returns its output."""
    result = subprocess.run([PREPARE_BINARY, f"--dest={dest}", f"--shards={shards}"],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise RuntimeError(f"dcasgd-prepare-data failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


_stubs = None


def stubs():
    """The generated Python modules of the dcasgd.v1 protos (generated into a
    temporary directory with protoc and grpc_python_plugin on first use)."""
    global _stubs
    if _stubs is None:
        out = tempfile.mkdtemp(prefix="dcasgd-e2e-stubs-")
        atexit.register(shutil.rmtree, out, ignore_errors=True)  # loaded by then
        protos = os.path.join(SOURCE_DIR, "protos")
        subprocess.run(["protoc", f"--proto_path={protos}", f"--python_out={out}",
                        f"--grpc_out={out}", "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin",
                        "dcasgd/v1/ps.proto", "dcasgd/v1/coordinator.proto"], check=True)
        sys.path.insert(0, out)
        import grpc  # noqa: F401  (Debian's python3-grpcio)
        from dcasgd.v1 import coordinator_pb2, coordinator_pb2_grpc, ps_pb2, ps_pb2_grpc
        _stubs = (ps_pb2, ps_pb2_grpc, coordinator_pb2, coordinator_pb2_grpc)
    return _stubs


def job_status(address, tls_ca=None, token=None):
    """The data coordinator's JobStatus (TLS with `tls_ca`, a bearer token
    with `token`)."""
    _, _, coordinator_pb2, coordinator_pb2_grpc = stubs()
    with channel(address, tls_ca) as channel_:
        stub = coordinator_pb2_grpc.DataCoordinatorStub(channel_)
        return stub.GetJobStatus(coordinator_pb2.GetJobStatusRequest(), timeout=10,
                                 metadata=bearer(token))


def shard_status(address, tls_ca=None, token=None):
    """A shard's ShardStatus (TLS with `tls_ca`, a bearer token with
    `token`)."""
    ps_pb2, ps_pb2_grpc, _, _ = stubs()
    with channel(address, tls_ca) as channel_:
        stub = ps_pb2_grpc.ParameterShardStub(channel_)
        return stub.GetStatus(ps_pb2.GetStatusRequest(), timeout=10, metadata=bearer(token))


def final_accuracy(output):
    """The accuracy on the evaluator's 'final test accuracy: X' line."""
    for line in output.splitlines():
        if line.startswith("final test accuracy:"):
            return float(line.split(":")[1].split()[0])
    return None


def metrics_text(port):
    """The Prometheus text of a /metrics endpoint on loopback."""
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def metric_value(port, name):
    """Sum of the samples of `name` on a /metrics endpoint (0 if absent)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics_text(port).splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def metric_histogram(port, name):
    """One histogram on a /metrics endpoint: {upper bound: cumulative count,
    "sum": ..., "count": ...} (samples of every label set added up)."""
    out = {}
    for line in metrics_text(port).splitlines():
        value = line.rsplit(" ", 1)[-1]
        if line.startswith(name + "_bucket{"):
            bound = float(re.search(r'le="([^"]+)"', line).group(1))
            out[bound] = out.get(bound, 0.0) + float(value)
        elif line.startswith(name + "_sum"):
            out["sum"] = out.get("sum", 0.0) + float(value)
        elif line.startswith(name + "_count"):
            out["count"] = out.get("count", 0.0) + float(value)
    return out
