#!/usr/bin/env python3
"""Prints every PromQL expression of the dcasgd Grafana dashboard, one a line,
with the dashboard variables substituted so Prometheus can evaluate them:

  $namespace, $job            -> .*   (the dashboard's "All" value; it also
                                       matches series without the label, as
                                       in a local run outside Kubernetes)
  $__rate_interval, $__interval, $__range -> --rate-interval (default 1m)

Usage: dashboard_exprs.py [--dashboard FILE] [--rate-interval 1m] [--titles]
  --titles  prefix each line with the panel title and a tab.
Exit 0; 1 if an expression still holds an unknown $variable.
Importable: expressions(dashboard_dict, rate_interval) -> [(title, expr)].
"""
import argparse
import json
import os
import re
import sys

DEFAULT_DASHBOARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy",
                                 "helm", "dcasgd", "dashboards", "dcasgd.json")

# Variable -> value, longest names first so $__rate_interval wins over $__r...
def substitutions(rate_interval):
    return [
        ("$__rate_interval", rate_interval),
        ("${__rate_interval}", rate_interval),
        ("$__interval", rate_interval),
        ("${__interval}", rate_interval),
        ("$__range", rate_interval),
        ("${__range}", rate_interval),
        ("${namespace}", ".*"),
        ("$namespace", ".*"),
        ("${job}", ".*"),
        ("$job", ".*"),
    ]


def panels(dashboard):
    """Yields every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        for inner in panel.get("panels", []) or []:
            yield inner


def expressions(dashboard, rate_interval="1m"):
    out = []
    subs = substitutions(rate_interval)
    for panel in panels(dashboard):
        for target in panel.get("targets", []) or []:
            expr = target.get("expr", "")
            if not expr:
                continue
            for var, value in subs:
                expr = expr.replace(var, value)
            out.append((panel.get("title", ""), " ".join(expr.split())))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dashboard", default=DEFAULT_DASHBOARD)
    parser.add_argument("--rate-interval", default="1m")
    parser.add_argument("--titles", action="store_true")
    args = parser.parse_args()
    with open(args.dashboard, encoding="utf-8") as f:
        dashboard = json.load(f)
    status = 0
    for title, expr in expressions(dashboard, args.rate_interval):
        if re.search(r"\$", expr):
            print(f"dashboard_exprs.py: unsubstituted variable in {title!r}: {expr}", file=sys.stderr)
            status = 1
        print(f"{title}\t{expr}" if args.titles else expr)
    return status


if __name__ == "__main__":
    sys.exit(main())
