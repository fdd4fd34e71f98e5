#!/usr/bin/env python3
"""Every query in every Grafana dashboard and alert rule names metrics that exist.

    scripts/check-dashboards.py SCRAPE [--promtool PATH]

SCRAPE is a real /metrics scrape of waitroom after traffic (the `metrics` integration test
writes one). A metric named in a query must be
  - pg_*        listed in infrastructure/exporters/postgres_exporter.txt,
  - rabbitmq_*  listed in infrastructure/exporters/rabbitmq_prometheus.txt,
  - one Prometheus adds itself (infrastructure/exporters/prometheus.txt: up, ...),
  - anything else: exported by waitroom, i.e. a sample in SCRAPE or a family its
    `# TYPE` lines declare (a labelled family with no sample yet, such as
    waitroom_projection_failures_total before the first failure).
With --promtool, every dashboard query is also parsed by `promtool check rules` (as a
recording rule), so a PromQL syntax error fails too. Every alert must have its section in
docs/RUNBOOK.md, and its `runbook` annotation must point to it. Exit 1 on any problem.
Uses only the standard library.
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "infrastructure/grafana/dashboards"
RULES = ROOT / "infrastructure/prometheus/alerts.yml"
RUNBOOK = ROOT / "docs/RUNBOOK.md"
EXPORTERS = ROOT / "infrastructure/exporters"

KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "atan2", "start", "end",
}
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
}


def listed(path):
    return {l.strip() for l in path.read_text().splitlines() if l.strip() and not l.startswith("#")}


def waitroom_names(scrape):
    names = set()
    for line in scrape.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(None, 3)
            names.update(family + s for s in SUFFIXES.get(kind.strip(), ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, 1)[0])
    return names


def metric_names(expr):
    """Metric names in a PromQL expression (not functions, keywords, labels or numbers)."""
    e = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', '""', expr)   # string literals
    e = re.sub(r"\$\{[^}]*\}|\$\w+", "1m", e)                           # Grafana variables
    e = re.sub(r"\{[^}]*\}", "", e)                                      # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                                     # ranges, subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = []
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", e):
        word = m.group(0)
        rest = e[m.end():].lstrip()
        if word.lower() in KEYWORDS or rest.startswith("("):
            continue
        names.append(word)
    return names


def dashboard_queries(path):
    """(panel title, expr) for every target of every panel, rows' nested panels included."""
    def walk(panels):
        for p in panels:
            yield from walk(p.get("panels", []))
            if p.get("type") == "row":
                continue
            targets = p.get("targets") or []
            if not targets:
                yield p.get("title", "?"), None
            for t in targets:
                yield p.get("title", "?"), t.get("expr")
    return list(walk(json.loads(path.read_text()).get("panels", [])))


def rule_queries(path):
    """(alert name, expr) from a rules file: the `expr:` blocks, read without a YAML parser."""
    out, name, lines = [], None, path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"\s*-\s*(alert|record):\s*(\S+)", line)
        if m:
            name = m.group(2)
        m = re.match(r"(\s*)expr:\s*(.*)$", line)
        if m:
            indent, value = len(m.group(1)), m.group(2).strip()
            if value in ("|", ">", "|-", ">-"):
                block = []
                i += 1
                while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                    block.append(lines[i].strip())
                    i += 1
                out.append((name, " ".join(block)))
                continue
            out.append((name, value.strip("'\"")))
        i += 1
    return out


def promtool_parse(promtool, queries):
    """Parse dashboard queries with promtool as recording rules; returns its complaints."""
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        f.write("groups:\n  - name: dashboard_queries\n    rules:\n")
        for i, (_, expr) in enumerate(queries):
            f.write(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(expr)}\n")
    r = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
    Path(f.name).unlink()
    return "" if r.returncode == 0 else r.stdout + r.stderr


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("scrape", type=Path)
    ap.add_argument("--promtool")
    args = ap.parse_args()

    waitroom = waitroom_names(args.scrape.read_text())
    if "waitroom_events_appended_total" not in waitroom:
        sys.exit(f"{args.scrape}: not a waitroom scrape (no waitroom_events_appended_total)")
    sources = {
        "pg_": ("postgres_exporter", listed(EXPORTERS / "postgres_exporter.txt")),
        "rabbitmq_": ("rabbitmq_prometheus", listed(EXPORTERS / "rabbitmq_prometheus.txt")),
    }
    prometheus = listed(EXPORTERS / "prometheus.txt")

    problems, checked, used = [], 0, {}
    queries = [(f"{d.name}: {title}", expr) for d in sorted(DASHBOARDS.glob("*.json"))
               for title, expr in dashboard_queries(d)]
    dashboard_exprs = [(w, e) for w, e in queries if e]
    queries += [(f"{RULES.name}: {name}", expr) for name, expr in rule_queries(RULES)]
    for where, expr in queries:
        if not expr:
            problems.append(f"{where}: panel without a query")
            continue
        names = metric_names(expr)
        if not names:
            problems.append(f"{where}: no metric found in {expr!r}")
        for name in names:
            checked += 1
            source = next((s for p, s in sources.items() if name.startswith(p)), None)
            if name in prometheus:
                used.setdefault("prometheus", set()).add(name)
            elif source:
                label, known = source
                if name in known:
                    used.setdefault(label, set()).add(name)
                else:
                    problems.append(f"{where}: {name} is not exported by {label} "
                                    f"(infrastructure/exporters/{label}.txt)")
            elif name in waitroom:
                used.setdefault("waitroom", set()).add(name)
            else:
                problems.append(f"{where}: {name} is not exported by waitroom ({args.scrape})")
    runbook = RUNBOOK.read_text()
    rules_text = RULES.read_text()
    for name in re.findall(r"^\s*-\s*alert:\s*(\S+)", rules_text, re.M):
        if not re.search(rf"^## {re.escape(name)}$", runbook, re.M):
            problems.append(f"{RULES.name}: {name} has no section in docs/RUNBOOK.md")
        if f"runbook: docs/RUNBOOK.md#{name.lower()}" not in rules_text:
            problems.append(f"{RULES.name}: {name}'s runbook annotation does not point to its section")
    if args.promtool:
        complaint = promtool_parse(args.promtool, dashboard_exprs)
        if complaint:
            problems.append("promtool cannot parse a dashboard query:\n" + complaint)

    for p in problems:
        print(f"check-dashboards: {p}", file=sys.stderr)
    summary = ", ".join(f"{len(v)} {k}" for k, v in sorted(used.items()))
    print(f"check-dashboards: {len(queries)} queries, {checked} metric references "
          f"({summary} metrics), {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
