"""A real Prometheus server (Debian's `prometheus` package) for the end-to-end
tests: it scrapes static targets on loopback every second and answers PromQL
through its HTTP API.

    prom = Prometheus(workdir)
    prom.start({"dcasgd-ps": ["127.0.0.1:9100"]}, labels={"namespace": "e2e"})
    prom.query('up{job="dcasgd-ps"}')  # -> QueryResult
    prom.stop()

A missing binary raises PrometheusMissing (the caller's test fails with the
install hint; it is not skipped). Every wait polls with a deadline."""

import json
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request

from harness import free_port, wait_for

INSTALL_HINT = ("install it with `apt-get install --no-install-recommends prometheus` "
                "(scripts/install-deps.sh test does), or point DCASGD_PROMETHEUS at the binary")


class PrometheusMissing(RuntimeError):
    pass


def find_binary():
    """The prometheus binary: $DCASGD_PROMETHEUS if set (only that), else
    `prometheus` on PATH, else /usr/bin/prometheus. Raises PrometheusMissing
    if that is not an executable file."""
    override = os.environ.get("DCASGD_PROMETHEUS")
    candidates = [override] if override else [shutil.which("prometheus"), "/usr/bin/prometheus"]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise PrometheusMissing("the Prometheus server binary was not found (tried "
                            + ", ".join(p for p in candidates if p) + "); " + INSTALL_HINT)


class QueryResult:
    """One /api/v1/query answer. ok: status "success" (the expression parsed
    and evaluated). series: the result list (vector/matrix), or a one-element
    list for a scalar/string result. error: Prometheus's message if not ok."""

    def __init__(self, body):
        self.body = body
        self.ok = body.get("status") == "success"
        self.error = None if self.ok else f"{body.get('errorType')}: {body.get('error')}"
        data = body.get("data") or {}
        result = data.get("result")
        if data.get("resultType") in ("scalar", "string"):
            self.series = [result]
        else:
            self.series = result or []

    def values(self):
        """The float values of an instant vector's samples (NaN included)."""
        return [float(s["value"][1]) for s in self.series if isinstance(s, dict) and "value" in s]


def scrape_config(jobs, labels, interval):
    """prometheus.yml text: one scrape job per jobs entry (name -> targets),
    every target carrying `labels` (e.g. namespace). JSON is valid YAML."""
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval,
                   "scrape_timeout": interval},
        "scrape_configs": [
            {"job_name": name, "static_configs": [{"targets": list(targets),
                                                   "labels": dict(labels or {})}]}
            for name, targets in jobs.items()
        ],
    }
    return json.dumps(config, indent=2) + "\n"


class Prometheus:
    def __init__(self, workdir, scrape_interval="1s"):
        self.dir = workdir
        self.scrape_interval = scrape_interval
        self.binary = find_binary()
        self.process = None
        self.port = None
        self.log_path = os.path.join(workdir, "prometheus.log")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def output(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def start(self, jobs, labels=None, timeout=30):
        """Writes the scrape config, starts the server on a free loopback port
        and waits until /-/ready answers 200. A port lost to a race (the
        process exits at start) is retried on another port."""
        os.makedirs(self.dir, exist_ok=True)
        config_path = os.path.join(self.dir, "prometheus.yml")
        with open(config_path, "w") as f:
            f.write(scrape_config(jobs, labels, self.scrape_interval))
        last_log = ""
        for _ in range(3):
            self.port = free_port()
            args = [self.binary, f"--config.file={config_path}",
                    f"--storage.tsdb.path={os.path.join(self.dir, 'tsdb')}",
                    f"--web.listen-address=127.0.0.1:{self.port}"]
            self._log = open(self.log_path, "wb")
            self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
            wait_for(lambda: self._ready() or self.process.poll() is not None, timeout,
                     "Prometheus to become ready", interval=0.1)
            if self.process.poll() is None:
                return self
            self._log.close()
            last_log = self.output()
        raise RuntimeError(f"Prometheus exited at start:\n{last_log[-3000:]}")

    def _ready(self):
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _get(self, path, params):
        url = f"{self.url}{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read().decode())
        except urllib.error.HTTPError as e:  # 400/422: bad_data / execution errors, JSON body
            body = e.read().decode("utf-8", "replace")
            try:
                return json.loads(body)
            except ValueError:
                return {"status": "error", "errorType": f"http {e.code}", "error": body}

    def query(self, expr):
        """Evaluates expr at the current time (GET /api/v1/query)."""
        return QueryResult(self._get("/api/v1/query", {"query": expr}))

    def label_values(self, label, match):
        """Values of `label` on series matching the selector `match` (what a
        Grafana label_values(match, label) variable lists)."""
        body = self._get(f"/api/v1/label/{urllib.parse.quote(label)}/values", {"match[]": match})
        if body.get("status") != "success":
            raise RuntimeError(f"label values of {label} for {match}: {body}")
        return sorted(body.get("data") or [])

    def targets_up(self):
        """{(job, instance): health} of the active scrape targets."""
        body = self._get("/api/v1/targets", {"state": "active"})
        return {(t["labels"].get("job"), t["labels"].get("instance")): t.get("health")
                for t in body.get("data", {}).get("activeTargets", [])}

    def stop(self):
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        self.process = None
