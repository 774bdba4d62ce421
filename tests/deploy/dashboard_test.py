#!/usr/bin/env python3
"""Checks the Grafana dashboard shipped in the chart: valid JSON, importable
without __inputs, a Prometheus datasource variable, namespace/job variables
whose "All" also matches label-less series, a PromQL target on every panel,
every expression parsed by promtool, and every dcasgd metric shown.
Run: python3 tests/deploy/dashboard_test.py
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dashboard_exprs  # noqa: E402

DASHBOARD = dashboard_exprs.DEFAULT_DASHBOARD

# The metrics the services export (ps metrics carry shard="i", worker and
# evaluator metrics worker="<name>"). Every one must appear on a panel.
HISTOGRAMS = {"dcasgd_ps_staleness", "dcasgd_ps_update_duration_seconds", "dcasgd_worker_compute_seconds",
              "dcasgd_worker_communication_seconds", "dcasgd_worker_staleness"}
METRICS = HISTOGRAMS | {
    "dcasgd_ps_pushes_total", "dcasgd_ps_pulls_total", "dcasgd_ps_received_bytes_total",
    "dcasgd_ps_sent_bytes_total", "dcasgd_ps_model_version", "dcasgd_ps_active_workers",
    "dcasgd_ps_weight_bytes", "dcasgd_ps_backup_bytes", "dcasgd_ps_optimizer_state_bytes",
    "dcasgd_ps_rejected_requests_total", "dcasgd_worker_examples_total", "dcasgd_worker_steps_total",
    "dcasgd_worker_loss", "dcasgd_eval_test_accuracy", "dcasgd_eval_test_loss", "dcasgd_eval_model_version",
}
# Exported by the services beyond the list above; allowed on panels.
EXTRA_METRICS = {"dcasgd_ps_checkpoints_total", "dcasgd_ps_lease_expirations_total",
                 "dcasgd_worker_retries_total", "dcasgd_ps_checkpoint_failures_total",
                 "dcasgd_ps_checkpoint_age_seconds"}


def metric_names(expr):
    """dcasgd_* series names used in expr, histogram suffixes folded."""
    names = set()
    for name in re.findall(r"\b(dcasgd_[a-z0-9_]+)", expr):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        names.add(base if base in HISTOGRAMS else name)
    return names


class Dashboard(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(DASHBOARD, encoding="utf-8") as f:
            cls.text = f.read()
        cls.dash = json.loads(cls.text)
        cls.panels = [p for p in dashboard_exprs.panels(cls.dash) if p.get("type") != "row"]
        cls.exprs = dashboard_exprs.expressions(cls.dash, "1m")
        cls.raw_exprs = [t["expr"] for p in cls.panels for t in p.get("targets", [])]
        cls.variables = {v["name"]: v for v in cls.dash["templating"]["list"]}

    def test_has_no_import_inputs(self):
        self.assertNotIn("__inputs", self.dash)
        self.assertNotIn("__requires", self.dash)
        self.assertNotIn("${DS_", self.text)

    def test_has_a_prometheus_datasource_variable_used_by_every_panel(self):
        ds = self.variables["datasource"]
        self.assertEqual(ds["type"], "datasource")
        self.assertEqual(ds["query"], "prometheus")
        for panel in self.panels:
            self.assertEqual(panel["datasource"], {"type": "prometheus", "uid": "${datasource}"}, panel["title"])
            for target in panel["targets"]:
                self.assertEqual(target["datasource"]["uid"], "${datasource}", panel["title"])

    def test_namespace_and_job_variables_default_to_match_anything(self):
        for name in ("namespace", "job"):
            var = self.variables[name]
            self.assertEqual(var["type"], "query")
            self.assertTrue(var["includeAll"], name)
            self.assertEqual(var["allValue"], ".*", name)
            self.assertEqual(var["current"]["value"], ["$__all"], name)
            self.assertEqual(var["datasource"]["uid"], "${datasource}")
            self.assertTrue(var.get("description"), f"{name} is undocumented")

    def test_every_selector_filters_by_namespace_and_job_with_regex_matchers(self):
        for expr in self.raw_exprs:
            selectors = re.findall(r"dcasgd_[a-z0-9_]+(\{[^}]*\})?", expr)
            self.assertTrue(selectors, expr)
            for sel in selectors:
                self.assertEqual(sel, '{namespace=~"$namespace", job=~"$job"}', expr)

    def test_every_panel_has_a_promql_target(self):
        self.assertGreaterEqual(len(self.panels), 15)
        for panel in self.panels:
            targets = panel.get("targets", [])
            self.assertTrue(targets, panel["title"])
            for target in targets:
                self.assertTrue(target.get("expr", "").strip(), panel["title"])
                self.assertTrue(target.get("refId"), panel["title"])

    def test_panel_ids_are_unique_and_fit_the_grid(self):
        ids = [p["id"] for p in dashboard_exprs.panels(self.dash)]
        self.assertEqual(len(ids), len(set(ids)))
        for p in dashboard_exprs.panels(self.dash):
            pos = p["gridPos"]
            self.assertLessEqual(pos["x"] + pos["w"], 24, p["title"])

    def test_every_exported_metric_is_shown_and_no_unknown_one(self):
        used = set()
        for _, expr in self.exprs:
            used |= metric_names(expr)
        self.assertEqual(METRICS - used, set(), "metrics without a panel")
        self.assertEqual(used - METRICS - EXTRA_METRICS, set(), "panels on unknown metrics")

    def test_required_views_exist(self):
        def has(pred):
            return any(pred(p, t["expr"]) for p in self.panels for t in p["targets"])
        self.assertTrue(has(lambda p, e: p["type"] == "heatmap" and "dcasgd_ps_staleness_bucket" in e
                            and p["targets"][0].get("format") == "heatmap"), "staleness heatmap")
        for q in ("0.5", "0.9", "0.99"):
            self.assertTrue(has(lambda p, e, q=q: e.startswith(f"histogram_quantile({q},")
                                and "dcasgd_ps_staleness_bucket" in e), f"staleness p{q}")
        for q in ("0.5", "0.99"):
            self.assertTrue(has(lambda p, e, q=q: e.startswith(f"histogram_quantile({q},")
                                and "dcasgd_ps_update_duration_seconds_bucket" in e), f"latency p{q}")
        self.assertTrue(has(lambda p, e: "sum by (shard) (rate(dcasgd_ps_pushes_total" in e))
        self.assertTrue(has(lambda p, e: "sum by (shard) (rate(dcasgd_ps_received_bytes_total" in e))
        self.assertTrue(has(lambda p, e: "sum by (worker) (rate(dcasgd_worker_examples_total" in e))
        self.assertTrue(has(lambda p, e: e.startswith("sum(rate(dcasgd_worker_examples_total")))
        self.assertTrue(has(lambda p, e: "sum by (reason) (rate(dcasgd_ps_rejected_requests_total" in e))

    def test_expressions_list_has_no_variables_left(self):
        self.assertEqual(len(self.exprs), len(self.raw_exprs))
        for _, expr in self.exprs:
            self.assertNotIn("$", expr)
            self.assertNotIn("\n", expr)
        out = subprocess.run([sys.executable, dashboard_exprs.__file__, "--rate-interval", "30s"],
                             capture_output=True, text=True, check=True).stdout.splitlines()
        self.assertEqual(out, [e for _, e in dashboard_exprs.expressions(self.dash, "30s")])

    def test_promtool_parses_every_expression(self):
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool not found: run scripts/install-deps.sh test "
                                       "(Debian package prometheus)")
        with tempfile.TemporaryDirectory() as tmp:
            rules = os.path.join(tmp, "rules.yml")
            with open(rules, "w", encoding="utf-8") as f:
                f.write("groups:\n  - name: dashboard\n    rules:\n")
                for i, (_, expr) in enumerate(self.exprs):
                    f.write(f"      - record: dashboard:expr{i}\n        expr: {json.dumps(expr)}\n")
            run = subprocess.run([promtool, "check", "rules", rules], capture_output=True, text=True)
            self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
            self.assertIn(f"{len(self.exprs)} rules found", run.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
