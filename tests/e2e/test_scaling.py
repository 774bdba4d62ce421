"""End to end: scaling workers mid-job, the local equivalent of
`kubectl scale deployment/dcasgd-worker` (docs/operations.md, "Scaling
workers"). Real shards and worker processes: workers are added while the job
runs, one is removed gracefully (SIGTERM, what Kubernetes sends when a pod is
scaled away) and one abruptly (SIGKILL, a lost node), another is added; the
job finishes, every data shard of every epoch is trained and completed
exactly once, and the removed workers' sessions, backups and data leases are
freed (GetStatus, GetJobStatus, /metrics). A worker started after the job
finished exits 0 and says so."""

import collections
import re
import signal
import unittest

import harness
from harness import Cluster, wait_for

DATA_SHARDS = 12
# Enough epochs that w0, left alone after the first, is still training when
# the removed workers' sessions expire and w3 joins (an epoch of softmax takes
# about a second of one worker since pushes share one stream).
EPOCHS = 10
# Short leases: the SIGKILLed worker's session and data lease come back in
# seconds (the chart's training.leaseSeconds).
PS_FLAGS = ["--update_rule=dcasgd-a", "--lr=0.1", "--lease_seconds=2"]
WORKER_FLAGS = ["--model=softmax", "--batch_size=32", f"--epochs={EPOCHS}", "--log_every=50"]
COMPLETED = re.compile(r"^\[(?P<worker>[^\]]+)\] trained data shard (?P<shard>\d+) of epoch "
                       r"(?P<epoch>\d+) \(lease", re.M)
# Said just before the call to Complete (services/worker/trainer.cc).
COMPLETING = re.compile(r"^\[(?P<worker>[^\]]+)\] completing data shard (?P<shard>\d+) of "
                        r"epoch (?P<epoch>\d+) \(lease (?P<lease>\d+)\)", re.M)




class ScalingWorkers(unittest.TestCase):
    def setUp(self):
        self.cluster = Cluster(self._testMethodName)
        self.data = self.cluster.path("data")
        harness.prepare_data(self.data, DATA_SHARDS)

    def tearDown(self):
        self.cluster.close()

    def shard_statuses(self):
        return [harness.shard_status(f"127.0.0.1:{g}") for _, g, _ in self.cluster.shards]

    def job(self):
        return harness.job_status(f"127.0.0.1:{self.cluster.shards[0][1]}")

    def wait_completed(self, at_least, what):
        """Polls the coordinator until `at_least` data shards are done; the
        job must not be over yet (the scaling must happen mid-job)."""
        job = wait_for(lambda: (lambda j: j if j.completed >= at_least else None)(self.job()),
                       240, what)
        self.assertFalse(job.done, f"the job ended before {what}: make it longer")
        return job

    def test_workers_added_and_removed_mid_job_finish_it_exactly_once(self):
        self.cluster.start_shards(2, *PS_FLAGS)
        workers = {"w0": self.cluster.start_worker("w0", self.data, *WORKER_FLAGS)}
        self.wait_completed(1, "w0 to finish a data shard")

        # Scale 1 -> 3.
        for name in ("w1", "w2"):
            workers[name] = self.cluster.start_worker(name, self.data, *WORKER_FLAGS)
        wait_for(lambda: all(s.active_workers == 3 for s in self.shard_statuses()), 60,
                 "three workers on every shard")
        ports = {n: wait_for(lambda n=n: harness.read_port_file(workers[n].port_file), 30,
                             f"{n} metrics")["metrics"] for n in ("w1", "w2")}
        for name in ("w1", "w2"):
            wait_for(lambda n=name: harness.metric_value(
                ports[n], "dcasgd_worker_steps_total") >= 20,
                     120, f"{name} to train")
            wait_for(lambda n=name: COMPLETED.search(workers[n].output()), 120,
                     f"{name} to complete a data shard")
        self.wait_completed(DATA_SHARDS, "the first epoch")

        # Scale 3 -> 1: w1 gracefully (it leaves at once), w2 killed (its
        # session and data lease expire after --lease_seconds).
        workers["w1"].signal(signal.SIGTERM)
        self.assertEqual(workers["w1"].wait(30), 0, workers["w1"].output()[-2000:])
        self.assertIn("left after", workers["w1"].output())
        workers["w2"].signal(signal.SIGKILL)
        self.assertEqual(workers["w2"].wait(10), -signal.SIGKILL)

        # Freed: one session left on every shard, holding its backups (under
        # DC-ASGD the worker's automatic --pipeline_depth is 1, so a ring of
        # two copies of the shard's weights), and at most one data lease out
        # (w0's).
        self.assertIn("pipeline depth 1 (--pipeline_depth=auto", workers["w0"].output())
        statuses = wait_for(lambda: (lambda st: st if all(s.active_workers == 1 for s in st)
                                     else None)(self.shard_statuses()), 30,
                            "the removed workers' sessions to be freed")
        for status in statuses:
            self.assertEqual(status.backup_bytes, 2 * status.weight_bytes,
                             f"shard {status.shard_index}: backups of removed workers remain")
        job = wait_for(lambda: (lambda j: j if j.leased <= 1 else None)(self.job()), 30,
                       "the removed workers' data leases to be freed")
        self.assertFalse(job.done)
        # w2's session expired (w1 left): every shard counted the expiry.
        for _, _, m in self.cluster.shards:
            wait_for(lambda m=m: harness.metric_value(m, "dcasgd_ps_lease_expirations_total") >= 1,
                     30, "w2's lease expiry in /metrics")

        # Scale 1 -> 2 again; the job finishes.
        workers["w3"] = self.cluster.start_worker("w3", self.data, *WORKER_FLAGS)
        for name in ("w0", "w3"):
            self.assertEqual(workers[name].wait(300), 0, workers[name].output()[-2000:])
            self.assertIn("job done", workers[name].output())
        job = self.job()
        self.assertTrue(job.done)
        self.assertEqual(job.completed, DATA_SHARDS * EPOCHS)
        self.assertEqual(job.leased, 0)
        # The removed workers' unfinished data shards went to others: w1's
        # (it stopped mid-shard) and w2's leases were handed out again.
        self.assertGreaterEqual(job.reissued, 1)

        # Every data shard of every epoch completed exactly once, by whoever
        # held it, across all the workers that came and went.
        completions = collections.Counter()
        by_worker = collections.Counter()
        for name, worker in workers.items():
            for match in COMPLETED.finditer(worker.output()):
                self.assertEqual(match.group("worker"), name)
                completions[(int(match.group("epoch")), int(match.group("shard")))] += 1
                by_worker[name] += 1
        twice = sorted(k for k, n in completions.items() if n > 1)
        self.assertEqual(twice, [], "(epoch, data shard) completed more than once")
        # The SIGKILL may land while w2's Complete is on the wire: the
        # coordinator counted it but w2 never said "trained". Only w2's last
        # "completing" line can be such a completion, and only if nobody else
        # completed that data shard (otherwise its lease expired and the shard
        # was trained again).
        everything = {(e, s) for e in range(1, EPOCHS + 1) for s in range(DATA_SHARDS)}
        missing = everything - set(completions)
        pending = list(COMPLETING.finditer(workers["w2"].output()))
        if missing and pending:
            last = pending[-1]
            pair = (int(last.group("epoch")), int(last.group("shard")))
            self.assertEqual(missing, {pair},
                             "missing data shards other than w2's last completion")
            completions[pair] += 1
            by_worker["w2"] += 1
        self.assertEqual(set(completions), everything)
        for name in ("w0", "w1", "w2"):
            self.assertGreater(by_worker[name], 0, f"{name}: {dict(by_worker)}")

        # Everyone left: no session, no backup on any shard.
        for status in self.shard_statuses():
            self.assertEqual((status.active_workers, status.backup_bytes), (0, 0))

        # A worker that starts after the job finished (a Deployment's pod
        # restarted, or scaled up late) has nothing to do: it exits 0 and
        # says so, without training.
        version_before = [s.version for s in self.shard_statuses()]
        late = self.cluster.start_worker("late", self.data, *WORKER_FLAGS)
        self.assertEqual(late.wait(60), 0, late.output()[-2000:])
        self.assertIn("the job finished before this worker started", late.output())
        self.assertIn("nothing to train", late.output())
        self.assertEqual([s.version for s in self.shard_statuses()], version_before)


if __name__ == "__main__":
    unittest.main()
