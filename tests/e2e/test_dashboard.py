"""End to end: the Grafana dashboard of the Helm chart against a real
Prometheus scraping a real local training run.

Two dcasgd-ps shards (DC-ASGD-a), two dcasgd-worker trainers (mlp:64) and the
evaluator run on loopback; Prometheus scrapes every metrics port each second
as jobs dcasgd-ps / dcasgd-worker / dcasgd-evaluator with namespace="e2e".
The dashboard's variable queries must list that namespace and those jobs, and
every PromQL expression of every panel, with $namespace="e2e" and $job set to
the jobs the job variable lists, must parse and return at least one series
while training runs. Polling stops once all have (or at a deadline); the
failure message names the panels whose expressions never did."""

import copy
import json
import os
import re
import sys
import time
import unittest

import harness
from harness import Cluster, read_port_file, wait_for
import prometheus

sys.path.insert(0, os.path.join(harness.SOURCE_DIR, "tests", "deploy"))
import dashboard_exprs  # noqa: E402

NAMESPACE = "e2e"
PS_JOB, WORKER_JOB, EVAL_JOB = "dcasgd-ps", "dcasgd-worker", "dcasgd-evaluator"
RATE_INTERVAL = "15s"  # $__rate_interval for a 1 s scrape: several samples per window
MODEL = "mlp:64"
# Long enough (~40 s here) that every rate window fills while training; the
# test stops the workers as soon as every expression has answered.
EPOCHS = 15
POLL_DEADLINE_SECONDS = 60


def variable_query(variable):
    """(selector, label) of a Grafana `label_values(selector, label)` query."""
    query = variable["query"]
    text = query["query"] if isinstance(query, dict) else query
    m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", text)
    if m is None:
        raise AssertionError(f"variable {variable['name']}: not a label_values query: {text}")
    return m.group(1), m.group(2)


def dashboard_expressions(dashboard, namespace, job_regex):
    """[(panel title, expr)] with $namespace/$job set the way Grafana sends a
    selection, and the interval variables set to RATE_INTERVAL."""
    dash = copy.deepcopy(dashboard)
    for panel in dashboard_exprs.panels(dash):
        for target in panel.get("targets", []) or []:
            expr = target.get("expr", "")
            for var, value in (("${namespace}", namespace), ("$namespace", namespace),
                               ("${job}", job_regex), ("$job", job_regex)):
                expr = expr.replace(var, value)
            target["expr"] = expr
    return dashboard_exprs.expressions(dash, RATE_INTERVAL)


class DashboardAgainstPrometheus(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(dashboard_exprs.DEFAULT_DASHBOARD, encoding="utf-8") as f:
            cls.dashboard = json.load(f)
        cls.cluster = Cluster("dashboard")
        cls.prometheus = None
        try:
            cls._start_training_and_prometheus()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def _start_training_and_prometheus(cls):
        c = cls.cluster
        # Before anything starts: no Prometheus is a failure, not a skip.
        cls.prometheus = prometheus.Prometheus(c.path("prometheus"))
        data = c.path("data")
        harness.prepare_data(data, 8)
        shards = c.start_shards(2, "--update_rule=dcasgd-a")
        cls.evaluator = c.start_worker("evaluator", data, f"--model={MODEL}",
                                       "--eval_interval_seconds=1", role="eval")
        cls.workers = [c.start_worker(f"w{i}", data, f"--model={MODEL}", f"--epochs={EPOCHS}")
                       for i in range(2)]

        def metrics_target(p):
            ports = wait_for(lambda: read_port_file(p.port_file) or
                             (p.poll() is not None and {"exited": 1}), 30,
                             f"{p.args[0]} port file")
            if "exited" in ports:
                raise RuntimeError(f"process exited at start:\n{p.output()}")
            return f"127.0.0.1:{ports['metrics']}"

        cls.jobs = {
            PS_JOB: [f"127.0.0.1:{metrics}" for _, _, metrics in shards],
            WORKER_JOB: [metrics_target(w) for w in cls.workers],
            EVAL_JOB: [metrics_target(cls.evaluator)],
        }
        cls.prometheus.start(cls.jobs, labels={"namespace": NAMESPACE})

    @classmethod
    def tearDownClass(cls):
        if cls.prometheus is not None:
            cls.prometheus.stop()
        cls.cluster.close()

    def variables(self):
        return {v["name"]: v for v in self.dashboard["templating"]["list"]}

    def wait_for_first_scrapes(self):
        """Every target scraped at least once (first samples take seconds)."""
        expected = sum(len(t) for t in self.jobs.values())
        wait_for(lambda: len(self.prometheus.query(f'up{{namespace="{NAMESPACE}"}} == 1')
                             .series) == expected, 30, "Prometheus to scrape every target",
                 interval=0.5)

    def test_every_dashboard_expression_returns_series_during_training(self):
        self.wait_for_first_scrapes()

        # The variables list what this run exports, as Grafana would show them.
        variables = self.variables()
        ns_selector, ns_label = variable_query(variables["namespace"])
        self.assertIn(NAMESPACE, self.prometheus.label_values(ns_label, ns_selector))
        job_selector, job_label = variable_query(variables["job"])
        job_selector = job_selector.replace("$namespace", NAMESPACE)
        jobs = self.prometheus.label_values(job_label, job_selector)
        self.assertEqual(jobs, sorted(self.jobs))
        job_regex = "(" + "|".join(jobs) + ")"  # Grafana's multi-value regex form

        exprs = dashboard_expressions(self.dashboard, NAMESPACE, job_regex)
        self.assertTrue(exprs, "the dashboard has no PromQL expressions")
        for title, expr in exprs:
            self.assertNotIn("$", expr, f"unsubstituted variable in {title!r}")

        # Keyed by index: panels may share an expression (e.g. examples/s).
        answered = {}  # index into exprs -> first non-empty result
        parse_errors = {}  # index into exprs -> Prometheus error
        max_examples_rate = 0.0
        deadline = time.monotonic() + POLL_DEADLINE_SECONDS
        while True:
            for i, (_, expr) in enumerate(exprs):
                if i in answered or i in parse_errors:
                    continue
                result = self.prometheus.query(expr)
                if not result.ok:
                    parse_errors[i] = result.error
                elif result.series:
                    answered[i] = result
            rate = self.prometheus.query(
                f'sum(rate(dcasgd_worker_examples_total{{namespace="{NAMESPACE}"}}'
                f'[{RATE_INTERVAL}]))').values()
            max_examples_rate = max([max_examples_rate] + rate)
            if len(answered) + len(parse_errors) == len(exprs) and max_examples_rate > 0:
                break
            if time.monotonic() > deadline:
                break
            time.sleep(1)  # one scrape interval between polls

        training_alive = [w.poll() is None for w in self.workers]
        for w in self.workers:  # done measuring: end training early (SIGTERM, clean Leave)
            w.stop()

        problems = []
        if parse_errors:
            problems.append("expressions Prometheus rejected:\n" + "\n".join(
                f"  [{exprs[i][0]}] {exprs[i][1]}\n    {error}"
                for i, error in sorted(parse_errors.items())))
        missing = [i for i in range(len(exprs)) if i not in answered and i not in parse_errors]
        if missing:
            problems.append(
                f"expressions that returned no series within {POLL_DEADLINE_SECONDS}s "
                f"(workers still training at the end: {training_alive}):\n"
                + "\n".join(f"  [{exprs[i][0]}] {exprs[i][1]}" for i in missing))
        if problems:
            self.fail(f"{len(parse_errors) + len(missing)} of {len(exprs)} dashboard "
                      "expressions failed\n" + "\n".join(problems))
        # The run really trained while scraped: the throughput panel saw examples.
        self.assertGreater(max_examples_rate, 0.0)


if __name__ == "__main__":
    unittest.main()
