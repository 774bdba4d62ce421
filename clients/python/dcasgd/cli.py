"""`python3 -m dcasgd`: what an operator types first.

    python3 -m dcasgd status     --ps ADDR[,ADDR...] [--metrics ADDR[,ADDR...]]
    python3 -m dcasgd checkpoint --ps ADDR[,ADDR...]
    python3 -m dcasgd watch      --ps ADDR[,ADDR...] [--interval S] [--count N]
    python3 -m dcasgd witness    --witness ADDR [--shard I]
    python3 -m dcasgd failover   --witness ADDR --shard I --member a|b --force [--yes]

ADDR is host:port of each shard's gRPC port, in shard-index order (on
Kubernetes, the chart's dcasgd-ps-<i>.dcasgd-ps-headless names, or
`kubectl port-forward`ed ports). `status` prints, per shard, its version,
active workers, staleness (mean of dcasgd_ps_staleness, read from the shard's
Prometheus endpoint: --metrics, by default the shard's host at port 9100, as
the chart exposes it), memory (weights, backups, optimizer state) and last
checkpoint, then the data coordinator's job progress (shard 0). `checkpoint`
makes every shard write a checkpoint now. `watch` repeats `status` with the
update rate between two samples.

Replicated shards (docs/design.md, "Replicated shards"): `witness` prints the
witness's register of each shard (epoch, holder, paired). `failover --force`
makes the witness grant the next epoch to a member whatever its register
says: for an operator whose solo primary is gone for good (its node and
volume lost). Updates that only that primary acknowledged are lost, which the
command says before it asks for confirmation (`--yes` skips the question).
With authentication on, both need a token of role admin at the witness
(`witness` also accepts role replication).

Exit status: 0 when every shard answered, 1 when one did not (its row says
why), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import urllib.error
import urllib.request
from typing import Callable, List, Optional, Sequence, TextIO, Tuple

import grpc

from dcasgd.client import Client
from dcasgd.coordinator import DataCoordinatorClient
from dcasgd.errors import Error
from dcasgd.security import Credentials
from dcasgd.v1 import coordinator_pb2
from dcasgd.v1 import ps_pb2
from dcasgd.v1 import replication_pb2
from dcasgd.v1 import replication_pb2_grpc

# The chart's metrics port (deploy/helm/dcasgd values: ps.metricsPort).
DEFAULT_METRICS_PORT = 9100


@dataclasses.dataclass
class ShardRow:
    """One shard's line of `status`: the GetStatus answer, or why there is none."""
    address: str
    status: Optional[ps_pb2.ShardStatus] = None
    error: Optional[str] = None
    # Mean staleness over all pushes so far and their count; None when the
    # metrics endpoint could not be read (metrics_error says why).
    staleness_mean: Optional[float] = None
    staleness_count: int = 0
    metrics_error: Optional[str] = None


def _split_addresses(text: str) -> List[str]:
    addresses = [a.strip() for a in text.split(",") if a.strip()]
    for address in addresses:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise argparse.ArgumentTypeError("'%s' is not host:port" % address)
    if not addresses:
        raise argparse.ArgumentTypeError("no address given")
    return addresses


def _default_metrics(addresses: Sequence[str]) -> List[str]:
    return ["%s:%d" % (a.rpartition(":")[0], DEFAULT_METRICS_PORT) for a in addresses]


def read_staleness(metrics_address: str, timeout: float = 2.0) -> Tuple[float, int]:
    """(sum, count) of the dcasgd_ps_staleness histogram at
    http://metrics_address/metrics. Raises OSError (unreachable) or
    ValueError (no such metric)."""
    url = "http://%s/metrics" % metrics_address
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode("utf-8", "replace")
    total = count = None
    for line in text.splitlines():
        if line.startswith("dcasgd_ps_staleness_sum"):
            total = float(line.split()[-1])
        elif line.startswith("dcasgd_ps_staleness_count"):
            count = int(float(line.split()[-1]))
    if total is None or count is None:
        raise ValueError("%s has no dcasgd_ps_staleness histogram" % url)
    return total, count


def collect(client: Client, addresses: Sequence[str],
            metrics: Optional[Sequence[str]]) -> List[ShardRow]:
    """GetStatus of every shard, one at a time, each failure kept in its row
    (a status command must show the shards that answer when one does not)."""
    rows = []
    for index, address in enumerate(addresses):
        row = ShardRow(address)
        try:
            row.status = client.stub(index).GetStatus(ps_pb2.GetStatusRequest(), timeout=5.0)
        except grpc.RpcError as error:
            failure = Error.from_rpc_error(error, address=address)
            row.error = "%s: %s" % (failure.code.name, failure.message)
        if metrics is not None:
            try:
                total, count = read_staleness(metrics[index])
                row.staleness_count = count
                row.staleness_mean = total / count if count else 0.0
            except (OSError, ValueError) as error:
                row.metrics_error = str(error)
        rows.append(row)
    return rows


def _mib(n: int) -> str:
    return "%.1f" % (n / (1 << 20))


def print_status(rows: Sequence[ShardRow], out: TextIO) -> None:
    """The status table: one line per shard."""
    header = ("shard", "address", "version", "workers", "staleness", "weights_MiB",
              "backups_MiB", "optimizer_MiB", "checkpoint", "update_rule")
    lines = [header]
    for index, row in enumerate(rows):
        if row.status is None:
            lines.append((str(index), row.address, "UNREACHABLE: " + (row.error or "?")))
            continue
        s = row.status
        if row.staleness_mean is not None:
            staleness = "%.2f/%d" % (row.staleness_mean, row.staleness_count)
        else:
            staleness = "-"
        lines.append((str(s.shard_index), row.address, str(s.version), str(s.active_workers),
                      staleness, _mib(s.weight_bytes), _mib(s.backup_bytes),
                      _mib(s.optimizer_state_bytes), str(s.checkpoint_version), s.update_rule))
    widths = [max(len(line[i]) for line in lines if i < len(line) and len(line) == len(header))
              for i in range(len(header))]
    for line in lines:
        if len(line) != len(header):
            out.write("  ".join(line) + "\n")
        else:
            out.write("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() + "\n")
    out.write("(staleness: mean over pushes / pushes, from each shard's /metrics)\n")
    for index, row in enumerate(rows):
        if row.status is not None and row.metrics_error:
            out.write("shard %d: no staleness: %s\n" % (index, row.metrics_error))


def print_job(address: str, out: TextIO, credentials=None) -> None:
    """The data coordinator's progress (hosted by shard 0)."""
    try:
        with DataCoordinatorClient(address, timeout=5.0, max_attempts=1,
                                   credentials=credentials) as coordinator:
            job: coordinator_pb2.JobStatus = coordinator.job_status()
    except Error as error:
        out.write("job: no answer from the data coordinator at %s: %s\n" % (address, error))
        return
    if not job.configured:
        out.write("job: no worker has asked for data yet\n")
        return
    total = job.num_data_shards * job.epochs
    out.write("job: %s, epoch %d of %d, %d of %d data shards done, %d leased, %d re-issued\n" %
              ("DONE" if job.done else "running", min(job.current_epoch + 1, job.epochs),
               job.epochs, job.completed, total, job.leased, job.reissued))


def _status(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    rows = collect(client, args.ps, args.metrics)
    print_status(rows, out)
    if rows[0].status is not None:
        print_job(args.ps[0], out, client.credentials)
    return 0 if all(r.status is not None for r in rows) else 1


def _checkpoint(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    failed = False
    for index, address in enumerate(args.ps):
        try:
            answer = client.stub(index).Checkpoint(ps_pb2.CheckpointRequest(), timeout=60.0)
            out.write("shard %d (%s): version %d, %d bytes, %s\n" %
                      (index, address, answer.version, answer.bytes, answer.path))
        except grpc.RpcError as error:
            failed = True
            failure = Error.from_rpc_error(error, address=address)
            out.write("shard %d (%s): FAILED %s: %s\n" %
                      (index, address, failure.code.name, failure.message))
    return 1 if failed else 0


def _watch(args: argparse.Namespace, client: Client, out: TextIO,
           sleep: Callable[[float], None] = time.sleep) -> int:
    previous = None
    previous_time = 0.0
    code = 0
    sample = 0
    while args.count == 0 or sample < args.count:
        if sample:
            sleep(args.interval)
        now = time.monotonic()
        rows = collect(client, args.ps, args.metrics)
        out.write("--- %s\n" % time.strftime("%Y-%m-%d %H:%M:%S"))
        print_status(rows, out)
        if previous is not None:
            rates = []
            for index, (old, new) in enumerate(zip(previous, rows)):
                if old.status is not None and new.status is not None:
                    rate = (new.status.version - old.status.version) / (now - previous_time)
                    rates.append("shard %d %.1f" % (index, rate))
            out.write("updates/s: %s\n" % ", ".join(rates))
        if rows[0].status is not None:
            print_job(args.ps[0], out, client.credentials)
        out.flush()
        code = 0 if all(r.status is not None for r in rows) else 1
        previous, previous_time = rows, now
        sample += 1
    return code


_MEMBERS = {"a": replication_pb2.MEMBER_A, "b": replication_pb2.MEMBER_B}
_MEMBER_NAMES = {v: k for k, v in _MEMBERS.items()}


def _register_line(register: replication_pb2.WitnessRegister) -> str:
    if register.epoch == 0:
        return "shard %d: epoch 0, no holder (a new job: member a claims)" % register.shard_index
    return "shard %d: epoch %d, held by member %s, %s" % (
        register.shard_index, register.epoch, _MEMBER_NAMES.get(register.holder, "?"),
        "paired (either member may take over)" if register.paired
        else "solo (only the holder may renew)")


def _witness(args, stub, out: TextIO) -> int:
    shards = [args.shard] if args.shard is not None else range(args.shard_count)
    code = 0
    for shard in shards:
        try:
            register = stub.GetRegister(replication_pb2.GetRegisterRequest(shard_index=shard),
                                        timeout=10.0)
            out.write(_register_line(register) + "\n")
        except grpc.RpcError as error:
            out.write("shard %d: %s: %s\n" % (shard, error.code().name, error.details()))
            code = 1
    return code


def _ask(question: str) -> str:
    """input(), or "" when there is no one to ask (stdin closed)."""
    try:
        return input(question)
    except EOFError:
        return ""


def _failover(args, stub, out: TextIO, confirm: Callable[[str], str] = _ask) -> int:
    if not args.force:
        out.write("failover without --force (a planned handover through the shards) is not "
                  "available yet; --force is for a member that is gone for good\n")
        return 2
    try:
        before = stub.GetRegister(replication_pb2.GetRegisterRequest(shard_index=args.shard),
                                  timeout=10.0)
    except grpc.RpcError as error:
        out.write("witness: %s: %s\n" % (error.code().name, error.details()))
        return 1
    out.write("now: %s\n" % _register_line(before))
    out.write("forcing member %s of shard %d to epoch %d. Updates that only the current "
              "holder acknowledged (all since its replica stopped pairing, if it ran solo) "
              "are lost, and the current holder must not come back with its old volume.\n"
              % (args.member, args.shard, before.epoch + 1))
    if not args.yes and confirm("type 'force' to go on: ").strip() != "force":
        out.write("nothing changed\n")
        return 1
    try:
        after = stub.Force(replication_pb2.ForceRequest(
            shard_index=args.shard, member=_MEMBERS[args.member],
            reason="python3 -m dcasgd failover --force"), timeout=10.0)
    except grpc.RpcError as error:
        out.write("witness: %s: %s\n" % (error.code().name, error.details()))
        return 1
    out.write("done: %s\n" % _register_line(after))
    return 0


def _witness_command(args, credentials: Credentials, out: TextIO) -> int:
    channel = credentials.channel(args.witness)
    try:
        stub = replication_pb2_grpc.WitnessStub(channel)
        return {"witness": _witness, "failover": _failover}[args.command](args, stub, out)
    finally:
        channel.close()


def _add_security_flags(command: argparse.ArgumentParser, who: str) -> None:
    command.add_argument("--token-file", metavar="FILE",
                         help="file holding the bearer token (default: "
                         "$DCASGD_AUTH_TOKEN_FILE); status needs role reader, checkpoint, "
                         "witness and failover role admin")
    command.add_argument("--tls-ca", metavar="PEM",
                         help="CA that signed the %s' certificates: connect with TLS "
                         "(default: $DCASGD_TLS_CA)" % who)
    command.add_argument("--tls-cert", metavar="PEM",
                         help="client certificate for mutual TLS (default: $DCASGD_TLS_CERT)")
    command.add_argument("--tls-key", metavar="PEM",
                         help="its private key (default: $DCASGD_TLS_KEY)")
    command.add_argument("--tls-server-name", metavar="NAME",
                         help="name to verify in the %s' certificates (default: "
                         "$DCASGD_TLS_SERVER_NAME)" % who)


def parser() -> argparse.ArgumentParser:
    """The argument parser of `python3 -m dcasgd`."""
    top = argparse.ArgumentParser(prog="python3 -m dcasgd",
                                  description="Inspect the parameter shards of a dcasgd job.")
    commands = top.add_subparsers(dest="command", required=True)
    for name, text in (("status", "each shard's version, workers, staleness and memory"),
                       ("checkpoint", "make every shard write a checkpoint now"),
                       ("watch", "repeat status, with the update rate")):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--ps", required=True, type=_split_addresses,
                             metavar="ADDR[,ADDR...]",
                             help="gRPC host:port of every shard, in shard-index order")
        _add_security_flags(command, "shards")
        if name != "checkpoint":
            command.add_argument(
                "--metrics", type=_split_addresses, metavar="ADDR[,ADDR...]",
                help="host:port of each shard's Prometheus endpoint (default: the shard's "
                "host, port %d)" % DEFAULT_METRICS_PORT)
        if name == "watch":
            command.add_argument("--interval", type=float, default=5.0,
                                 help="seconds between samples (default 5)")
            command.add_argument("--count", type=int, default=0,
                                 help="stop after this many samples (default 0: until Ctrl-C)")
    for name, text in (("witness", "the witness's register of each replicated shard"),
                       ("failover", "grant a shard's next epoch to a member (--force)")):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--witness", required=True, metavar="ADDR",
                             help="gRPC host:port of the job's dcasgd-witness")
        _add_security_flags(command, "witness")
        if name == "witness":
            command.add_argument("--shard", type=int, help="only this shard")
            command.add_argument("--shard-count", type=int, default=1,
                                 help="shards of the job (default 1), without --shard")
        else:
            command.add_argument("--shard", type=int, required=True)
            command.add_argument("--member", choices=sorted(_MEMBERS), required=True)
            command.add_argument("--force", action="store_true",
                                 help="whatever the register says (may lose updates)")
            command.add_argument("--yes", action="store_true", help="do not ask")
    return top


def main(argv: Optional[Sequence[str]] = None, out: TextIO = sys.stdout) -> int:
    """Runs one command; returns the exit status."""
    args = parser().parse_args(argv)
    if getattr(args, "metrics", None) is not None and len(args.metrics) != len(args.ps):
        parser().error("--metrics needs one address per --ps address")
    if hasattr(args, "metrics") and args.metrics is None:
        args.metrics = _default_metrics(args.ps)
    if getattr(args, "interval", 1.0) <= 0 or getattr(args, "count", 0) < 0:
        parser().error("--interval must be > 0 and --count >= 0")
    # An evaluator client (never joins): status calls change nothing.
    try:
        credentials = Credentials(token_file=args.token_file, tls_ca=args.tls_ca,
                                  tls_cert=args.tls_cert, tls_key=args.tls_key,
                                  tls_server_name=args.tls_server_name)
    except ValueError as error:
        parser().error(str(error))
    if args.command in ("witness", "failover"):
        return _witness_command(args, credentials, out)
    with Client(args.ps, None, timeout=10.0, max_attempts=1, credentials=credentials) as client:
        try:
            return {"status": _status, "checkpoint": _checkpoint,
                    "watch": _watch}[args.command](args, client, out)
        except KeyboardInterrupt:
            return 0


def main_entry() -> None:
    """The `dcasgd` console script (pyproject.toml)."""
    sys.exit(main())
