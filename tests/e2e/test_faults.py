"""The fault suite: a real job (3 shards, 4 workers, the evaluator) while
faults are injected at random moments, run twice, once with one process per
shard and once with each shard a replicated pair, and an undisturbed run of
the same job for comparison (one for both: see FaultSuite).

One process per shard (FAULTS below; each picks its victim and timing from
the seeded random generator): SIGKILL and SIGTERM of a shard (shard 0, which
hosts the data coordinator, included) and its restart; SIGSTOP/SIGCONT of a
shard; SIGKILL of a worker and a new worker in its place; an extra worker
joining; a full checkpoint volume for a few seconds (each shard checkpoints
to its own small tmpfs).

Replicated pairs (PAIR_FAULTS; docs/design.md, "Replicated shards"): each
shard is members a and b with a witness, and the workers and the evaluator
are given "a|b" addresses. Every kind once per run, in a seeded order where
every other fault hits a primary, on a random shard (shard 0 included):
SIGKILL and SIGTERM of the primary and of the replica, each restarted after
a short outage; SIGSTOP/SIGCONT of the primary for less than the failover
timeout and for more (until its replica was promoted); an extra worker; a
full checkpoint volume on a random member (each member has its own tmpfs).
After each fault the suite waits until every pair is whole again (a paired
primary and a caught-up replica); a member left deposed is restarted, since
a deposed member does not catch up in place. Worker SIGKILL is left out of
this run (the run above covers it): a killed worker's acknowledged steps are
not reported, which would make the count of acknowledged updates below
inexact.

After each run: the job finishes, no worker exits non-zero except those the
suite killed, every data shard of every epoch is trained in full exactly
once (a killed worker's data shard is trained again from its start by the
worker that gets it next: at-least-once for its first batches, counted as
`reissued`), and the final test accuracy is within ACCURACY_TOLERANCE of the
undisturbed run. With pairs also: a killed or long-stopped primary was
replaced by its replica, no worker saw a failed step (a failover is
invisible to trainers), and no acknowledged update was lost or applied
twice: each shard's final version equals the steps the workers report.

The seed is printed; DCASGD_FAULT_SEED=<seed> replays both runs' schedules
(process timing still varies).
"""

import collections
import os
import random
import re
import signal
import sys
import time
import unittest

import harness
from harness import Cluster, ScratchVolume, wait_for
from test_replication import STEP_FAILURES, all_threads_stopped

SHARDS = 3
WORKERS = 4
DATA_SHARDS = 8
EPOCHS = 12
LEASE_SECONDS = 6  # worker and data leases: a dead worker's data shard returns within it
PS_FLAGS = ["--update_rule=dcasgd-a", "--lr=0.1", "--lr_schedule=step",
            "--lr_decay_every=7500", "--lr_decay_factor=0.3",
            f"--lease_seconds={LEASE_SECONDS}", "--checkpoint_interval_seconds=1"]
WORKER_FLAGS = ["--model=softmax", "--batch_size=32", f"--epochs={EPOCHS}", "--log_every=500"]
# Final accuracy of undisturbed runs of this job (10 runs on the 2-core
# machine, see docs/operations.md "The fault suite"): mean 0.8446, standard
# deviation 0.0003, range 0.8442..0.8451; faulty runs differed from their
# undisturbed run by at most 0.27 pp in 8 suite runs. Measured again with
# the replicated run, while other builds loaded the machine: 28 undisturbed
# runs, mean 0.8425, standard deviation 0.0010, range 0.8403..0.8450; faulty
# runs with pairs differed from their undisturbed run by -0.32..+0.12 pp in
# 19 runs. The step decay of the learning rate makes the final model nearly
# independent of the order of asynchronous updates, so the 0.5 pp is
# above the noise.
ACCURACY_TOLERANCE = 0.005
FAULTS_PER_RUN = 8
# A SIGSTOPped shard must come back before leases run out (renewals every
# third of a lease): stops stay below half a lease.
MAX_STOP_SECONDS = LEASE_SECONDS / 2

# The replicated run: each shard a pair (members a and b) with a witness.
# Short replication timings (as tests/e2e/test_replication.py's), so that
# failovers and catch-ups take seconds; the failover timeout must be at
# least the replication lease + 500 ms (dcasgd-ps checks it at start).
FAILOVER_TIMEOUT_MS = 2000
PAIR_FLAGS = ["--replication_heartbeat_ms=100", "--replication_lease_ms=1000",
              f"--failover_timeout_ms={FAILOVER_TIMEOUT_MS}"]
PRIMARY = harness.PRIMARY_ROLES
# How long a pair may take to be whole again (a primary and a caught-up
# replica) after a fault: a restart, the failover timeout, a catch-up.
SETTLE_SECONDS = 90
# Shorter outages and gaps than the unreplicated run's: each fault of this
# run also waits for its pair to be whole again, and all of them must fit
# in the job (the other member serves meanwhile, so the outage's length
# matters less here).
PAIR_OUTAGE_SECONDS = (0.2, 1.0)
PAIR_GAP_SECONDS = (0.1, 0.5)


class Trainers:
    """The evaluator and the workers of a run (a base of Job and PairedJob,
    which start the shards first)."""

    def start_trainers(self):
        self.evaluator = self.cluster.start_worker("evaluator", self.data, *WORKER_FLAGS,
                                                   "--eval_interval_seconds=2", role="eval")
        self.workers = {}  # name -> process
        self.killed = set()  # names of workers the suite SIGKILLed
        self.next_worker = 0
        for _ in range(WORKERS):
            self.add_worker()

    def add_worker(self):
        name = f"worker-{self.next_worker}"
        self.next_worker += 1
        self.workers[name] = self.cluster.start_worker(name, self.data, *WORKER_FLAGS)
        return name

    def done(self):
        return all(p.poll() is not None for p in self.workers.values())


class Job(Trainers):
    """One run of the job: shards (each checkpointing to its own small
    volume), the evaluator and the workers, in one Cluster."""

    def __init__(self, cluster, data, log):
        self.cluster = cluster
        self.data = data
        self.log = log
        self.volumes = [ScratchVolume(cluster, cluster.path(f"volume-{i}"), 8)
                        for i in range(SHARDS)]
        cluster.start_shards(
            SHARDS, *PS_FLAGS, fixed_ports=True,
            shard_flags={i: [f"--checkpoint_dir={v.path}"] for i, v in enumerate(self.volumes)},
            shard_volumes=dict(enumerate(self.volumes)))
        self.start_trainers()

    def coordinator(self):
        return f"127.0.0.1:{self.cluster.shards[0][1]}"

    def progress(self):
        """Data shards done, or None while shard 0 does not answer."""
        try:
            return harness.job_status(self.coordinator()).completed
        except Exception:  # grpc.RpcError while shard 0 is down or stopped
            return None

    def wait_serving(self, i):
        address = f"127.0.0.1:{self.cluster.shards[i][1]}"
        wait_for(lambda: harness.health_status(address) == "SERVING", 30, f"shard {i} serving")


# ---------------------------------------------------------------------------
# Faults: each takes the job and the random generator and returns a line
# describing what it did. They return once the system is whole again (a
# restarted shard serving, a freed volume), so faults do not pile up.

def kill_shard(job, rng, sig):
    i = rng.randrange(SHARDS)
    process = job.cluster.shards[i][0]
    process.signal(sig)
    code = process.wait(60)
    if sig == signal.SIGTERM and code != 0:
        raise AssertionError(f"shard {i} exited {code} after SIGTERM:\n{process.output()[-2000:]}")
    down = rng.uniform(0.2, 3.0)
    time.sleep(down)  # the outage itself: what the fault is
    job.cluster.restart_shard(i, attempt=len(job.log) + 1)
    job.wait_serving(i)
    return f"{sig.name} shard {i} (exit {code}), restarted after {down:.1f} s"


def stop_shard(job, rng):
    i = rng.randrange(SHARDS)
    pause = rng.uniform(0.5, MAX_STOP_SECONDS)
    process = job.cluster.shards[i][0]
    process.signal(signal.SIGSTOP)
    time.sleep(pause)  # the stall itself
    process.signal(signal.SIGCONT)
    return f"SIGSTOP shard {i} for {pause:.1f} s"


def kill_worker(job, rng):
    alive = sorted(n for n, p in job.workers.items() if p.poll() is None)
    if not alive:
        return "no worker to kill"
    name = rng.choice(alive)
    job.workers[name].signal(signal.SIGKILL)
    job.workers[name].wait(30)
    job.killed.add(name)
    replacement = job.add_worker()
    return f"SIGKILL {name}, started {replacement}"


def add_worker(job, rng):
    return f"started {job.add_worker()}"


def fill_volume(job, rng):
    i = rng.randrange(SHARDS)
    full = rng.uniform(1.0, 4.0)
    job.volumes[i].fill()
    time.sleep(full)  # the time the disk stays full
    job.volumes[i].free()
    return f"checkpoint volume of shard {i} full for {full:.1f} s"


FAULTS = {
    "sigkill_shard": lambda job, rng: kill_shard(job, rng, signal.SIGKILL),
    "sigterm_shard": lambda job, rng: kill_shard(job, rng, signal.SIGTERM),
    "sigstop_shard": stop_shard,
    "sigkill_worker": kill_worker,
    "new_worker": add_worker,
    "full_volume": fill_volume,
}


# ---------------------------------------------------------------------------
# The replicated run.

class PairedJob(Trainers):
    """The same job with each shard run as a pair (members a and b, each
    checkpointing to its own small volume) and a witness; the workers and
    the evaluator are given both members of each shard ("a|b")."""

    def __init__(self, cluster, data, log):
        self.cluster = cluster
        self.data = data
        self.log = log
        self.volumes = {(i, m): ScratchVolume(cluster, cluster.path(f"volume-{i}{m}"), 8)
                        for i in range(SHARDS) for m in "ab"}
        self.pairs = cluster.start_pairs(SHARDS, *PS_FLAGS, *PAIR_FLAGS,
                                         member_volumes=self.volumes)
        self.settle()
        self.start_trainers()

    def member(self, shard, roles):
        """The member of `shard` whose role is in `roles` (polls)."""
        return self.pairs[shard].member(roles, SETTLE_SECONDS)

    def other(self, member):
        return self.pairs[member.shard].other(member)

    def progress(self):
        """Data shards done, from shard 0's primary; None while none answers."""
        for member in self.pairs[0]:
            try:
                return harness.job_status(member.address).completed
            except Exception:  # grpc.RpcError: not primary, restarting
                continue
        return None

    def coordinator(self):
        return self.member(0, PRIMARY).address

    def stop_member(self, member, sig):
        """Stops `member` with `sig` (SIGTERM: it must exit 0); returns its
        exit code. member.start() then starts it again at the same address
        with the same volume."""
        member.process.signal(sig)
        code = member.process.wait(60)
        if sig == signal.SIGTERM and code != 0:
            raise AssertionError(f"shard {member.shard} member {member.name} exited {code} after "
                                 f"SIGTERM:\n{member.process.output()[-3000:]}")
        return code

    def settle(self):
        """Waits until every pair is whole again (a paired primary and a
        caught-up replica). A member left deposed is restarted (it does not
        catch up in place, docs/operations.md); returns the members
        restarted."""
        restarted = []

        def whole():
            ready = True
            for pair in self.pairs:
                roles = [m.role() for m in pair]
                for member, role in zip(pair, roles):
                    if role == "deposed":
                        code = self.stop_member(member, signal.SIGTERM)
                        member.start()
                        member.wait_started()
                        restarted.append(member)
                        print(f"    shard {member.shard} member {member.name} deposed: "
                              f"restarted (exit {code})", file=sys.stderr, flush=True)
                if sorted(r or "" for r in roles) != ["primary", "replica"]:
                    ready = False
            return ready

        wait_for(whole, SETTLE_SECONDS, "every pair whole (primary and replica)", interval=0.2)
        return restarted


def deposed(members):
    """The log's words for the members settle() restarted."""
    names = ", ".join(f"{m.shard}{m.name}" for m in members)
    return f"; deposed and restarted: {names}" if members else ""


def kill_member(job, rng, sig, roles):
    """`sig` to the member of a random shard in `roles`; it is restarted
    after a random outage. A killed primary must be replaced by its replica,
    a killed replica must leave the primary in place."""
    i = rng.randrange(SHARDS)
    victim = job.member(i, roles)
    other = job.other(victim)
    code = job.stop_member(victim, sig)
    down = rng.uniform(*PAIR_OUTAGE_SECONDS)
    time.sleep(down)  # the outage itself: what the fault is
    victim.start()
    victim.wait_started()
    restarted = job.settle()
    what = (f"{sig.name} shard {i} {roles[0]} {victim.name} (exit {code}), restarted after "
            f"{down:.1f} s{deposed(restarted)}")
    if other.role() != "primary":
        raise AssertionError(f"{what}: member {other.name} is {other.role()}, not the primary")
    return what


def stop_primary(job, rng, longer):
    """SIGSTOP of a random shard's primary, for less than the failover
    timeout or for more (until its replica was promoted), then SIGCONT."""
    i = rng.randrange(SHARDS)
    victim = job.member(i, PRIMARY)
    other = job.other(victim)
    timeout = FAILOVER_TIMEOUT_MS / 1000
    pause = timeout * (rng.uniform(1.1, 1.5) if longer else rng.uniform(0.2, 0.6))
    victim.process.signal(signal.SIGSTOP)
    wait_for(lambda: all_threads_stopped(victim.process.popen.pid), 10,
             "the SIGSTOP to take effect")
    time.sleep(pause)  # the stall itself
    if longer:
        wait_for(lambda: other.role() in PRIMARY, SETTLE_SECONDS,
                 f"shard {i} member {other.name} to be promoted")
    victim.process.signal(signal.SIGCONT)
    restarted = job.settle()
    what = (f"SIGSTOP shard {i} primary {victim.name} for {pause:.1f} s "
            f"({'longer' if longer else 'shorter'} than the failover timeout)"
            f"{deposed(restarted)}")
    # Resumed after its replica's promotion, it must have learnt that it lost
    # (deposed: restarted above) and acknowledged nothing more.
    if longer and victim not in restarted:
        raise AssertionError(f"{what}: member {victim.name} was not deposed")
    return what


def fill_member_volume(job, rng):
    """A full checkpoint volume on a random member: its checkpoints fail (on
    shard 0 also its copy of the data schedule), and it stays in its pair
    (docs/design.md, "Checkpoints with replicas")."""
    i = rng.randrange(SHARDS)
    member = job.pairs[i][rng.randrange(2)]
    role = member.role()
    full = rng.uniform(1.0, 1.5)  # above the checkpoint interval: a write fails
    job.volumes[(i, member.name)].fill()
    time.sleep(full)  # the time the disk stays full
    job.volumes[(i, member.name)].free()
    restarted = job.settle()
    what = (f"checkpoint volume of shard {i} member {member.name} ({role}) full for {full:.1f} s"
            f"{deposed(restarted)}")
    if restarted:
        raise AssertionError(f"{what}: a full volume took a member out of its pair")
    return what


PAIR_FAULTS = {
    "sigkill_primary": lambda job, rng: kill_member(job, rng, signal.SIGKILL, PRIMARY),
    "sigkill_replica": lambda job, rng: kill_member(job, rng, signal.SIGKILL, ("replica",)),
    "sigterm_primary": lambda job, rng: kill_member(job, rng, signal.SIGTERM, PRIMARY),
    "sigterm_replica": lambda job, rng: kill_member(job, rng, signal.SIGTERM, ("replica",)),
    "sigstop_primary_short": lambda job, rng: stop_primary(job, rng, longer=False),
    "sigstop_primary_long": lambda job, rng: stop_primary(job, rng, longer=True),
    "new_worker": add_worker,
    "full_volume": fill_member_volume,
}
ON_PRIMARIES = {"sigkill_primary", "sigterm_primary", "sigstop_primary_short",
                "sigstop_primary_long"}


def final_accuracy(job):
    code = job.evaluator.wait(180)
    out = job.evaluator.output()
    if code != 0:
        raise AssertionError(f"evaluator exited {code}:\n{out[-3000:]}")
    accuracy = harness.final_accuracy(out)
    if accuracy is None:
        raise AssertionError(f"no final accuracy:\n{out[-3000:]}")
    return accuracy


def trained_items(outputs):
    counts = collections.Counter()
    for out in outputs:
        for shard, epoch in re.findall(r"trained data shard (\d+) of epoch (\d+) \(lease", out):
            counts[(int(epoch), int(shard))] += 1
    return counts


Run = collections.namedtuple("Run", "job status outputs accuracy log seconds")
# What a worker prints when a data lease failed it (services/worker/trainer.cc).
LEASE_TROUBLE = re.compile(r"could not complete lease|renewing data lease|handed out again")


def run_job(name, job_class, data, faults, next_kind, table, rng, add_cleanup,
            gap=(0.3, 2.0)):
    """Runs the job (a Job or a PairedJob) to its end with up to `faults`
    faults from `table` (next_kind(n) names the n-th), each at a random
    moment (`gap` seconds after the previous one ended) while most of the
    job is still to do; fails when a worker the suite did not kill exits
    non-zero. `add_cleanup` takes the cluster's close."""
    cluster = Cluster(name)
    add_cleanup(cluster.close)
    log = []
    job = job_class(cluster, data, log)
    started = time.monotonic()
    total = DATA_SHARDS * EPOCHS
    for n in range(faults):
        time.sleep(rng.uniform(*gap))  # a random moment
        done = job.progress()
        if job.done() or (done is not None and done >= total - 2):
            break
        kind = next_kind(n)
        began = time.monotonic()
        what = table[kind](job, rng)
        log.append((kind, what))
        print(f"  [{began - started:5.1f} s] fault {n + 1} ({time.monotonic() - began:.1f} s): "
              f"{what}", file=sys.stderr, flush=True)
        for worker, process in job.workers.items():
            if worker not in job.killed and process.poll() not in (None, 0):
                raise AssertionError(f"after '{what}', {worker} exited {process.poll()}:\n"
                                     f"{process.output()[-3000:]}")
    for worker, process in job.workers.items():
        if worker in job.killed:
            continue
        code = process.wait(300)
        if code != 0:
            raise AssertionError(f"{worker} exited {code} after faults {log}:\n"
                                 f"{process.output()[-3000:]}")
    accuracy = final_accuracy(job)
    status = harness.job_status(job.coordinator())
    outputs = {name: p.output() for name, p in job.workers.items()}
    return Run(job, status, outputs, accuracy, log, time.monotonic() - started)


class FaultSuite(unittest.TestCase):
    """Both faulty runs (one process per shard, and pairs) against one
    undisturbed run, so the suite pays for one.

    The undisturbed run has one process per shard, and it is a fair baseline
    for the replicated run too: a pair's primary applies every update with
    the same kernels as a single shard (its replica repeats them bit for bit,
    docs/design.md "Replicated shards"), so a pair changes only timing, i.e.
    the order and staleness of asynchronous updates, which the step decay of
    the learning rate makes nearly irrelevant to the final model. Measured:
    8 undisturbed pair runs, interleaved with 8 single ones, ended 0.09 pp
    lower on average (0.8419 vs 0.8428, standard deviations 0.10 and
    0.12 pp), far inside ACCURACY_TOLERANCE (docs/operations.md, "The fault
    suite")."""

    @classmethod
    def setUpClass(cls):
        cls.seed = int(os.environ.get("DCASGD_FAULT_SEED",
                                      random.SystemRandom().randrange(1 << 32)))
        print(f"\nfault suite seed {cls.seed} (replay: DCASGD_FAULT_SEED={cls.seed})",
              file=sys.stderr, flush=True)
        data_cluster = Cluster("faults-data")
        cls.addClassCleanup(data_cluster.close)
        cls.data = data_cluster.path("data")
        harness.prepare_data(cls.data, DATA_SHARDS)
        cls.baseline = run_job("undisturbed", Job, cls.data, 0, None, FAULTS, None,
                               cls.addClassCleanup)
        print(f"undisturbed accuracy {cls.baseline.accuracy:.4f} in "
              f"{cls.baseline.seconds:.0f} s", file=sys.stderr, flush=True)

    def check_common(self, run, context):
        """What both faulty runs promise: the job done, every data shard of
        every epoch trained in full once (or again after a worker kill), no
        lease reissued but a killed worker's, the accuracy."""
        self.assertTrue(run.status.done, context)
        self.assertEqual(run.status.completed, DATA_SHARDS * EPOCHS, context)
        trained = trained_items(run.outputs.values())
        self.assertTrue(all(n == 1 for n in trained.values()),
                        f"trained in full more than once: "
                        f"{ {k: v for k, v in trained.items() if v > 1} }; {context}")
        missing = DATA_SHARDS * EPOCHS - len(trained)
        self.assertLessEqual(missing, len(run.job.killed), context)
        lease_lines = [line for out in run.outputs.values() for line in out.splitlines()
                       if LEASE_TROUBLE.search(line)]
        self.assertLessEqual(run.status.reissued, len(run.job.killed),
                             f"leases reissued without a worker kill: {context}; what the "
                             f"workers said about leases: {lease_lines}")
        baseline = self.baseline.accuracy
        self.assertLessEqual(abs(run.accuracy - baseline), ACCURACY_TOLERANCE,
                             f"accuracy {run.accuracy:.4f} vs undisturbed {baseline:.4f}; "
                             f"{context}")

    def test_job_survives_random_faults(self):
        rng = random.Random(self.seed)
        kinds = sorted(FAULTS)
        run = run_job("faults", Job, self.data, FAULTS_PER_RUN, lambda n: rng.choice(kinds),
                      FAULTS, rng, self.addCleanup)
        print(f"seed {self.seed}: with {len(run.log)} faults {run.accuracy:.4f} in "
              f"{run.seconds:.0f} s; {run.status.reissued} data leases reissued",
              file=sys.stderr, flush=True)
        context = f"seed {self.seed}, faults: {[what for _, what in run.log]}"
        self.assertGreaterEqual(len(run.log), 3, f"too few faults happened: {context}")
        # A data shard whose worker the suite killed is trained in full by
        # the next holder (its first batches twice: at-least-once, counted in
        # `reissued`); a kill between Complete and its log line leaves an
        # item without a line.
        self.check_common(run, context)

    def test_replicated_job_survives_random_faults(self):
        # Every kind of PAIR_FAULTS once, in a seeded random order in which
        # every other fault hits a primary (so any 6 of them hold 3 of those).
        rng = random.Random(f"{self.seed}-pairs")
        on_primaries = rng.sample(sorted(ON_PRIMARIES), len(ON_PRIMARIES))
        others = rng.sample(sorted(set(PAIR_FAULTS) - ON_PRIMARIES),
                            len(PAIR_FAULTS) - len(ON_PRIMARIES))
        groups = [on_primaries, others] if rng.random() < 0.5 else [others, on_primaries]
        order = [kind for pair in zip(*groups) for kind in pair]
        run = run_job("faults-pairs", PairedJob, self.data, len(order), lambda n: order[n],
                      PAIR_FAULTS, rng, self.addCleanup, gap=PAIR_GAP_SECONDS)
        job = run.job
        statuses = [job.member(i, PRIMARY).status() for i in range(SHARDS)]
        versions = [s.version for s in statuses]
        owned = [sum(t.owned_chunks for t in s.tensors) for s in statuses]
        steps = {}
        for name, out in run.outputs.items():
            found = re.search(r"job done after (\d+) steps of this worker", out)
            self.assertIsNotNone(found, f"{name} did not report its steps:\n{out[-2000:]}")
            steps[name] = int(found.group(1))
        print(f"seed {self.seed}, pairs: with {len(run.log)} faults {run.accuracy:.4f} in "
              f"{run.seconds:.0f} s; {sum(steps.values())} steps acknowledged, shard versions "
              f"{versions}", file=sys.stderr, flush=True)
        context = f"seed {self.seed}, pairs, faults: {[what for _, what in run.log]}"
        self.assertGreaterEqual(len(run.log), 6, f"too few faults happened: {context}")
        self.assertGreaterEqual(sum(kind in ON_PRIMARIES for kind, _ in run.log), 3,
                                f"too few faults on primaries: {context}")
        self.check_common(run, context)
        # A failover is invisible to the trainers: no step redone or
        # skipped, no re-join.
        for name, out in run.outputs.items():
            failures = [line for line in out.splitlines() if STEP_FAILURES.search(line)]
            self.assertEqual(failures, [], f"{name} saw failed steps; {context}")
        # No acknowledged update lost or applied twice: in async mode every
        # acknowledged push makes one version on its shard, and every step of
        # a worker pushes to every shard that owns chunks (softmax's two
        # tensors are one chunk each: two shards own one, the third none).
        self.assertGreater(sum(steps.values()), 0)
        self.assertGreaterEqual(sum(n > 0 for n in owned), 2, f"owned chunks {owned}")
        self.assertEqual(versions, [sum(steps.values()) if n > 0 else 0 for n in owned],
                         f"each shard's final version vs the steps the workers acknowledged "
                         f"(owned chunks {owned}); {context}")


if __name__ == "__main__":
    unittest.main()
