"""The example alert rules and Grafana dashboard (docs/monitoring/) fit the relay's metrics.

promtool (Debian's, which scripts/bootstrap links into .venv/bin) checks the rules and
every dashboard query; each metric they use is one role relay_services' README lists,
and each metric the README lists is one the exporter's code names.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "docs" / "monitoring"
RULES = MONITORING / "chatmail-alerts.yml"
DASHBOARD = MONITORING / "chatmail-dashboard.json"
README = ROOT / "roles" / "relay_services" / "README.md"
EXPORTER = ROOT / "roles" / "relay_services" / "files" / "chatrelay" / "metrics.py"
DOVECOT_CONF = ROOT / "roles" / "dovecot" / "templates" / "etc" / "dovecot" / "dovecot.conf.j2"
METRIC = re.compile(r"\b(?:chatmail|dovecot)_[a-z_]+[a-z]\b")


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is not on PATH (scripts/bootstrap links it into .venv/bin)"
    return found


def check_rules(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )


def documented() -> set[str]:
    """The metric names in the README's table (the first column of each row)."""
    names = set()
    for line in README.read_text().splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`((?:chatmail|dovecot)_[a-z_]+)`", line.split("|")[1]))
    return names


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def test_the_alert_rules_pass_promtool():
    checked = check_rules(RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path):
    # promtool checks PromQL in rules: each query becomes a recording rule, with
    # Grafana's $instance variable as any instance.
    records = [
        {"record": f"chatmail:dashboard_panel_{number}", "expr": query.replace("$instance", ".*")}
        for number, query in enumerate(dashboard_queries())
    ]
    rules = tmp_path / "dashboard-rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    checked = check_rules(rules)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("source", [RULES, DASHBOARD], ids=lambda path: path.name)
def test_they_use_only_documented_metrics(source):
    text = source.read_text()
    exprs = (
        dashboard_queries()
        if source == DASHBOARD
        else re.findall(r"expr: (.+(?:\n {10}.+)*)", text)
    )
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used, f"no metric found in {source.name}"
    assert used - documented() == set()


def test_every_documented_metric_is_made_by_the_exporter_or_dovecot():
    exporter = EXPORTER.read_text()
    dovecot = set(re.findall(r"^metric (\w+) \{", DOVECOT_CONF.read_text(), re.MULTILINE))
    for name in documented():
        if name.startswith("dovecot_"):
            base = re.sub(r"_(total|info)$", "", name.removeprefix("dovecot_"))
            assert base in dovecot | {"build"}, f"{name}: no `metric {base}` in role dovecot"
        elif name != "process_start_time_seconds":
            assert f'"{name.removesuffix("_total")}"' in exporter, f"{name}: not in {EXPORTER.name}"
