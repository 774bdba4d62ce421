"""The fault suite: a real job (3 shards, 4 workers, the evaluator) while
faults are injected at random moments, and an undisturbed run of the same
job for comparison.

Faults (FAULTS below; each picks its victim and timing from the seeded
random generator): SIGKILL and SIGTERM of a shard (shard 0, which hosts the
data coordinator, included) and its restart; SIGSTOP/SIGCONT of a shard;
SIGKILL of a worker and a new worker in its place; an extra worker joining;
a full checkpoint volume for a few seconds (each shard checkpoints to its
own small tmpfs). New fault kinds (e.g. primary/replica kills once shards
have replicas) are one more entry in FAULTS.

After the run: the job finishes, no worker exits non-zero except those the
suite killed, every data shard of every epoch is trained in full exactly
once (a killed worker's data shard is trained again from its start by the
worker that gets it next: at-least-once for its first batches, counted as
`reissued`), and the final test accuracy is within ACCURACY_TOLERANCE of the
undisturbed run.

The seed is printed; DCASGD_FAULT_SEED=<seed> replays a run's schedule
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
# undisturbed run by at most 0.27 pp in 8 suite runs. The step decay of the
# learning rate makes the final model nearly independent of the order of
# asynchronous updates, so the 0.5 pp is above the noise.
ACCURACY_TOLERANCE = 0.005
FAULTS_PER_RUN = 8
# A SIGSTOPped shard must come back before leases run out (renewals every
# third of a lease): stops stay below half a lease.
MAX_STOP_SECONDS = LEASE_SECONDS / 2


class Job:
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
        self.evaluator = cluster.start_worker("evaluator", data, *WORKER_FLAGS,
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

    def coordinator(self):
        return f"127.0.0.1:{self.cluster.shards[0][1]}"

    def progress(self):
        """Data shards done, or None while shard 0 does not answer."""
        try:
            return harness.job_status(self.coordinator()).completed
        except Exception:  # grpc.RpcError while shard 0 is down or stopped
            return None

    def done(self):
        return all(p.poll() is not None for p in self.workers.values())

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


class FaultSuite(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.data_cluster = Cluster("faults-data")
        cls.data = cls.data_cluster.path("data")
        harness.prepare_data(cls.data, DATA_SHARDS)

    @classmethod
    def tearDownClass(cls):
        cls.data_cluster.close()

    def run_job(self, name, faults, rng):
        cluster = Cluster(name)
        self.addCleanup(cluster.close)
        log = []
        job = Job(cluster, self.data, log)
        started = time.monotonic()
        total = DATA_SHARDS * EPOCHS
        for n in range(faults):
            # A random moment while most of the job is still to do.
            time.sleep(rng.uniform(0.3, 2.0))
            done = job.progress()
            if job.done() or (done is not None and done >= total - 2):
                break
            kind = rng.choice(sorted(FAULTS))
            what = FAULTS[kind](job, rng)
            log.append(what)
            print(f"  [{time.monotonic() - started:5.1f} s] fault {n + 1}: {what}",
                  file=sys.stderr, flush=True)
            for worker, process in job.workers.items():
                if worker not in job.killed and process.poll() not in (None, 0):
                    self.fail(f"after '{what}', {worker} exited {process.poll()}:\n"
                              f"{process.output()[-3000:]}")
        for worker, process in job.workers.items():
            if worker in job.killed:
                continue
            self.assertEqual(process.wait(300), 0,
                             f"{worker} after faults {log}:\n{process.output()[-3000:]}")
        accuracy = final_accuracy(job)
        status = harness.job_status(job.coordinator())
        outputs = [p.output() for p in job.workers.values()]
        return job, status, outputs, accuracy, log, time.monotonic() - started

    def test_job_survives_random_faults(self):
        seed = int(os.environ.get("DCASGD_FAULT_SEED", random.SystemRandom().randrange(1 << 32)))
        print(f"\nfault suite seed {seed} (replay: DCASGD_FAULT_SEED={seed})", file=sys.stderr,
              flush=True)
        rng = random.Random(seed)
        _, _, _, baseline, _, baseline_seconds = self.run_job("undisturbed", 0, rng)
        job, status, outputs, accuracy, log, seconds = self.run_job("faults", FAULTS_PER_RUN, rng)
        print(f"seed {seed}: undisturbed accuracy {baseline:.4f} in {baseline_seconds:.0f} s; "
              f"with {len(log)} faults {accuracy:.4f} in {seconds:.0f} s; "
              f"{status.reissued} data leases reissued", file=sys.stderr, flush=True)
        context = f"seed {seed}, faults: {log}"
        self.assertGreaterEqual(len(log), 3, f"too few faults happened: {context}")
        self.assertTrue(status.done, context)
        self.assertEqual(status.completed, DATA_SHARDS * EPOCHS, context)
        # Every data shard of every epoch trained in full exactly once. A data
        # shard whose worker the suite killed is trained in full by the next
        # holder (its first batches twice: at-least-once, counted in
        # `reissued`); a kill between Complete and its log line leaves an
        # item without a line.
        trained = trained_items(outputs)
        self.assertTrue(all(n == 1 for n in trained.values()),
                        f"trained in full more than once: "
                        f"{ {k: v for k, v in trained.items() if v > 1} }; {context}")
        missing = DATA_SHARDS * EPOCHS - len(trained)
        self.assertLessEqual(missing, len(job.killed), context)
        self.assertLessEqual(status.reissued, len(job.killed),
                             f"leases reissued without a worker kill: {context}")
        self.assertLessEqual(abs(accuracy - baseline), ACCURACY_TOLERANCE,
                             f"accuracy {accuracy:.4f} vs undisturbed {baseline:.4f}; {context}")


if __name__ == "__main__":
    unittest.main()
