"""helm/loom/files: the alert rules pass promtool (syntax and behaviour), the dashboard's
queries parse, and every metric either names is one loom/metrics.py defines."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.services import in_ci

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "helm" / "loom" / "files" / "alerts.yaml"
DASHBOARD = ROOT / "helm" / "loom" / "files" / "dashboard.json"
METRICS = ROOT / "loom" / "metrics.py"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    message = "promtool is missing; install it with: apt-get install prometheus"
    if in_ci():
        pytest.fail(f"{message} (CI=true: the alert rules must be checked)", pytrace=False)
    pytest.skip(message)


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def as_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables filled in as Grafana would."""
    return expr.replace("$__rate_interval", "5m").replace("$namespace", ".*")


def test_promtool_checks_the_rules() -> None:
    checked = run_promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout


def test_the_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"loom:dashboard_query_{i}", "expr": as_promql(expr)}
                    for i, expr in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    checked = run_promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_metric_named_exists_in_loom_metrics() -> None:
    defined = set(re.findall(r'"(loom_\w+)"', METRICS.read_text()))
    used: set[str] = set()
    for text in [str(rule["expr"]) for rule in alert_rules()] + dashboard_exprs():
        used.update(re.findall(r"\bloom_\w+", text))
    assert used, "no loom_ metric found in the rules and the dashboard"
    unknown = {
        name
        for name in used
        if name not in defined
        and not any(
            name.endswith(suffix) and name.removesuffix(suffix) in defined
            for suffix in HISTOGRAM_SUFFIXES
        )
    }
    assert not unknown, f"not defined in loom/metrics.py: {sorted(unknown)}"


def test_the_dashboard_is_a_grafana_dashboard_with_a_panel_per_topic() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "loom-overview"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace"}
    titles = {panel["title"] for panel in dashboard["panels"]}
    for topic in ("Signals received", "Attention decisions", "Signal wait (observed to run start)",
                  "Runs by status", "Run duration", "Tokens", "Cost per hour", "Tool calls",
                  "Dead letters", "Replies", "Probes"):  # fmt: skip
        assert topic in titles
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert 'namespace=~"$namespace"' in target["expr"], panel["title"]


UNIT_TESTS = """
rule_files:
  - {alerts}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'loom_dead_letters_total{{queue="loom.attention", pod="a"}}'
        values: '0x10 1x30'
    alert_rule_test:
      - eval_time: 9m
        alertname: LoomDeadLettersRising
        exp_alerts: []
      - eval_time: 15m
        alertname: LoomDeadLettersRising
        exp_alerts:
          - exp_labels: {{severity: warning, queue: loom.attention}}
            exp_annotations:
              summary: Loom is dead-lettering messages from loom.attention
              description: >-
                Messages from loom.attention went to loom.dead-letters in the last 15 minutes:
                invalid messages, or work that kept failing past the delivery limit.
                `loom dlq list` shows them with their reasons; `loom dlq replay` sends them
                back.
      - eval_time: 35m
        alertname: LoomDeadLettersRising
        exp_alerts: []

  # Per namespace: one release's dead letters are its own alert.
  - interval: 1m
    input_series:
      - series: 'loom_dead_letters_total{{queue="loom.work", namespace="a", pod="w-a"}}'
        values: '0x10 2x30'
      - series: 'loom_dead_letters_total{{queue="loom.work", namespace="b", pod="w-b"}}'
        values: '0x40'
    alert_rule_test:
      - eval_time: 15m
        alertname: LoomDeadLettersRising
        exp_alerts:
          - exp_labels: {{severity: warning, queue: loom.work, namespace: a}}
            exp_annotations:
              summary: Loom is dead-lettering messages from loom.work
              description: >-
                Messages from loom.work went to loom.dead-letters in the last 15 minutes:
                invalid messages, or work that kept failing past the delivery limit.
                `loom dlq list` shows them with their reasons; `loom dlq replay` sends them
                back.

  - interval: 1m
    input_series:
      - series: 'loom_consumers{{queue="loom.attention", pod="attention-1"}}'
        values: '1x5 0x20'
      - series: 'loom_consumers{{queue="loom.work", pod="worker-1"}}'
        values: '1x25'
    alert_rule_test:
      - eval_time: 8m
        alertname: LoomNoConsumer
        exp_alerts: []
      - eval_time: 12m
        alertname: LoomNoConsumer
        exp_alerts:
          - exp_labels: {{severity: critical, queue: loom.attention}}
            exp_annotations:
              summary: Nothing consumes loom.attention
              description: >-
                No Loom process has consumed loom.attention for 5 minutes: signals pile up
                in RabbitMQ and no run starts. Check the attention and worker pods, their
                readiness (/readyz) and their connection to RabbitMQ.

  # Workers scaled to zero (KEDA, minReplicaCount 0): no worker process, no alert.
  - interval: 1m
    input_series:
      - series: 'loom_consumers{{queue="loom.attention", pod="attention-1"}}'
        values: '1x30'
      - series: 'loom_active_runs{{pod="attention-1"}}'
        values: '0x30'
      - series: 'loom_active_runs{{pod="gateway-1"}}'
        values: '0x30'
    alert_rule_test:
      - eval_time: 20m
        alertname: LoomNoConsumer
        exp_alerts: []

  # Worker pods up but not consuming: that is an alert.
  - interval: 1m
    input_series:
      - series: 'loom_consumers{{queue="loom.attention", pod="attention-1"}}'
        values: '1x20'
      - series: 'loom_consumers{{queue="loom.work", pod="worker-1"}}'
        values: '0x20'
    alert_rule_test:
      - eval_time: 4m
        alertname: LoomNoConsumer
        exp_alerts: []
      - eval_time: 6m
        alertname: LoomNoConsumer
        exp_alerts:
          - exp_labels: {{severity: critical, queue: loom.work}}
            exp_annotations:
              summary: Nothing consumes loom.work
              description: >-
                No Loom process has consumed loom.work for 5 minutes: signals pile up
                in RabbitMQ and no run starts. Check the attention and worker pods, their
                readiness (/readyz) and their connection to RabbitMQ.

  # No attention process at all in namespace b while other Loom pods run there; namespace
  # a is fine and must not hide it.
  - interval: 1m
    input_series:
      - series: 'loom_consumers{{queue="loom.attention", namespace="a", pod="attention-1"}}'
        values: '1x20'
      - series: 'loom_active_runs{{namespace="a", pod="gateway-1"}}'
        values: '0x20'
      - series: 'loom_active_runs{{namespace="b", pod="gateway-1"}}'
        values: '0x20'
      - series: 'loom_consumers{{queue="loom.work", namespace="b", pod="worker-1"}}'
        values: '1x20'
      - series: 'loom_active_runs{{namespace="b", pod="worker-1"}}'
        values: '1x20'
    alert_rule_test:
      - eval_time: 6m
        alertname: LoomNoConsumer
        exp_alerts:
          - exp_labels: {{severity: critical, queue: loom.attention, namespace: b}}
            exp_annotations:
              summary: Nothing consumes loom.attention
              description: >-
                No Loom process has consumed loom.attention for 5 minutes: signals pile up
                in RabbitMQ and no run starts. Check the attention and worker pods, their
                readiness (/readyz) and their connection to RabbitMQ.

  - interval: 1m
    input_series:
      - series: 'loom_runs_total{{status="completed", pod="worker-1"}}'
        values: '0+2x60'
      - series: 'loom_runs_total{{status="failed", pod="worker-1"}}'
        values: '0+1x40 40+0x20'
    alert_rule_test:
      - eval_time: 10m
        alertname: LoomRunErrorRate
        exp_alerts: []
      - eval_time: 32m
        alertname: LoomRunErrorRate
        exp_alerts:
          - exp_labels: {{severity: warning}}
            exp_annotations:
              summary: More than a quarter of Loom runs fail
              description: >-
                33.33% of the runs of the last 15 minutes failed
                (provider or authentication errors, timeouts, max iterations).
                loom_runs_total by status and the runs' errors in GET /sessions/{{id}} tell
                why.
      - eval_time: 59m
        alertname: LoomRunErrorRate
        exp_alerts: []

  - interval: 1m
    input_series:
      - series: 'loom_active_runs{{pod="worker-1"}}'
        values: '2x90'
      - series: 'loom_runs_total{{status="completed", pod="worker-1"}}'
        values: '0+1x10 10x80'
    alert_rule_test:
      - eval_time: 40m
        alertname: LoomRunsStuck
        exp_alerts: []
      - eval_time: 60m
        alertname: LoomRunsStuck
        exp_alerts:
          - exp_labels: {{severity: warning}}
            exp_annotations:
              summary: Loom runs are in progress but none has finished for 45 minutes
              description: >-
                2 run(s) are active and no run finished in the last 45 minutes: a model
                or tool call may hang. Look at the oldest leases (GET /sessions/{{id}}) and the
                worker logs.

  # A failed attempt that is retried (outcome="error") is no alert; a lost reply is.
  - interval: 1m
    input_series:
      - series: 'loom_replies_total{{adapter="slack", outcome="sent", pod="worker-1"}}'
        values: '0+1x40'
      - series: 'loom_replies_total{{adapter="slack", outcome="error", pod="worker-1"}}'
        values: '0x10 1x30'
      - series: 'loom_replies_total{{adapter="slack", outcome="undeliverable", pod="worker-1"}}'
        values: '0x20 1x20'
      - series: 'loom_dead_letters_total{{queue="loom.replies", pod="worker-1"}}'
        values: '0x20 1x20'
    alert_rule_test:
      - eval_time: 19m
        alertname: LoomReplyFailures
        exp_alerts: []
      - eval_time: 23m
        alertname: LoomReplyFailures
        exp_alerts: []
      - eval_time: 27m
        alertname: LoomReplyFailures
        exp_alerts:
          - exp_labels: {{severity: warning, adapter: slack}}
            exp_annotations:
              summary: Loom replies through slack are lost
              description: >-
                Answers to signals could not be delivered through slack in the
                last 15 minutes and went to loom.dead-letters (undeliverable, or retried past
                the retry budget or the delivery limit). `loom dlq list` shows them.

  # Replies dead-lettered without an adapter's verdict (invalid, delivery limit).
  - interval: 1m
    input_series:
      - series: 'loom_dead_letters_total{{queue="loom.replies", namespace="a", pod="worker-1"}}'
        values: '0x10 3x20'
      - series: 'loom_dead_letters_total{{queue="loom.attention", namespace="b", pod="a-1"}}'
        values: '0x10 3x20'
    alert_rule_test:
      - eval_time: 17m
        alertname: LoomReplyFailures
        exp_alerts:
          - exp_labels: {{severity: warning, adapter: unknown, namespace: a}}
            exp_annotations:
              summary: Loom replies through unknown are lost
              description: >-
                Answers to signals could not be delivered through unknown in the
                last 15 minutes and went to loom.dead-letters (undeliverable, or retried past
                the retry budget or the delivery limit). `loom dlq list` shows them.

  # Runs stuck in one namespace are not hidden by another that keeps finishing runs.
  - interval: 1m
    input_series:
      - series: 'loom_active_runs{{namespace="a", pod="worker-1"}}'
        values: '2x90'
      - series: 'loom_runs_total{{status="completed", namespace="a", pod="worker-1"}}'
        values: '0+1x90'
      - series: 'loom_active_runs{{namespace="b", pod="worker-1"}}'
        values: '1x90'
      - series: 'loom_runs_total{{status="completed", namespace="b", pod="worker-1"}}'
        values: '0+1x10 10x80'
    alert_rule_test:
      - eval_time: 60m
        alertname: LoomRunsStuck
        exp_alerts:
          - exp_labels: {{severity: warning, namespace: b}}
            exp_annotations:
              summary: Loom runs are in progress but none has finished for 45 minutes
              description: >-
                1 run(s) are active and no run finished in the last 45 minutes: a model
                or tool call may hang. Look at the oldest leases (GET /sessions/{{id}}) and the
                worker logs.
"""


def test_the_alerts_fire_when_they_should_and_only_then(tmp_path: Path) -> None:
    path = tmp_path / "alerts-test.yaml"
    path.write_text(UNIT_TESTS.format(alerts=ALERTS))
    tested = run_promtool("test", "rules", str(path))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
