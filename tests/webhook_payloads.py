"""Webhook bodies shaped like the senders' documented examples (GitHub, Alertmanager v4)."""

from __future__ import annotations

from typing import Any

REPOSITORY = {
    "id": 186853002,
    "node_id": "MDEwOlJlcG9zaXRvcnkxODY4NTMwMDI=",
    "name": "Hello-World",
    "full_name": "Codertocat/Hello-World",
    "private": False,
    "owner": {"login": "Codertocat", "id": 21031067, "type": "User"},
    "html_url": "https://github.com/Codertocat/Hello-World",
    "default_branch": "main",
}
SENDER = {"login": "Codertocat", "id": 21031067, "type": "User"}


def github_push() -> dict[str, Any]:
    commit = {
        "id": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "tree_id": "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
        "distinct": True,
        "message": "Fix the health check\n\nIt timed out on cold starts.",
        "timestamp": "2019-05-15T15:20:41Z",
        "url": "https://github.com/Codertocat/Hello-World/commit/6113728f27ae",
        "author": {"name": "Codertocat", "email": "21031067+Codertocat@users.noreply.github.com"},
        "added": [],
        "removed": [],
        "modified": ["health.py"],
    }
    return {
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "created": False,
        "deleted": False,
        "forced": False,
        "base_ref": None,
        "compare": "https://github.com/Codertocat/Hello-World/compare/000000000000...6113728f27ae",
        "commits": [commit],
        "head_commit": commit,
        "repository": REPOSITORY,
        "pusher": {"name": "Codertocat", "email": "21031067+Codertocat@users.noreply.github.com"},
        "sender": SENDER,
    }


def github_pull_request_opened() -> dict[str, Any]:
    return {
        "action": "opened",
        "number": 2,
        "pull_request": {
            "url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/2",
            "id": 279147437,
            "html_url": "https://github.com/Codertocat/Hello-World/pull/2",
            "number": 2,
            "state": "open",
            "locked": False,
            "title": "Update the README with new information.",
            "user": SENDER,
            "body": "This is a pretty simple change that we need to pull into main.",
            "draft": False,
            "merged": False,
            "head": {"label": "Codertocat:changes", "ref": "changes", "sha": "ec26c3e57ca3"},
            "base": {"label": "Codertocat:main", "ref": "main", "sha": "f95f852bd8fc"},
        },
        "repository": REPOSITORY,
        "sender": SENDER,
    }


def github_workflow_run(conclusion: str) -> dict[str, Any]:
    return {
        "action": "completed",
        "workflow_run": {
            "id": 30433642,
            "name": "Build",
            "node_id": "MDEyOldvcmtmbG93IFJ1bjI2OTI4OQ==",
            "head_branch": "main",
            "head_sha": "acb5820ced9479c074f688cc328bf03f341a511d",
            "display_title": "Fix the health check",
            "run_number": 562,
            "event": "push",
            "status": "completed",
            "conclusion": conclusion,
            "workflow_id": 159038,
            "html_url": "https://github.com/Codertocat/Hello-World/actions/runs/30433642",
            "created_at": "2020-01-22T19:33:08Z",
            "updated_at": "2020-01-22T19:33:08Z",
        },
        "workflow": {"id": 159038, "name": "Build", "path": ".github/workflows/build.yml"},
        "repository": REPOSITORY,
        "sender": SENDER,
    }


def github_ping() -> dict[str, Any]:
    return {
        "zen": "Keep it logically awesome.",
        "hook_id": 109948940,
        "hook": {
            "type": "Repository",
            "id": 109948940,
            "name": "web",
            "active": True,
            "events": ["*"],
            "config": {"content_type": "json", "insecure_ssl": "0", "url": "https://x/"},
        },
        "repository": REPOSITORY,
        "sender": SENDER,
    }


def alertmanager(status: str) -> dict[str, Any]:
    """Two alerts of one group (grouped by alertname), as Alertmanager's webhook sends them."""
    ends = "2026-11-24T10:20:00Z" if status == "resolved" else "0001-01-01T00:00:00Z"

    def alert(instance: str, severity: str, fingerprint: str) -> dict[str, Any]:
        return {
            "status": status,
            "labels": {
                "alertname": "HighLatency",
                "instance": instance,
                "job": "api",
                "severity": severity,
            },
            "annotations": {"summary": f"p99 latency above 1s on {instance}"},
            "startsAt": "2026-11-24T10:00:00Z",
            "endsAt": ends,
            "generatorURL": "http://prometheus:9090/graph?g0.expr=latency_p99+%3E+1",
            "fingerprint": fingerprint,
        }

    return {
        "version": "4",
        "groupKey": '{}:{alertname="HighLatency"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "loom",
        "groupLabels": {"alertname": "HighLatency"},
        "commonLabels": {"alertname": "HighLatency", "job": "api"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [
            alert("api-1:8080", "critical", "c2b1d6f7a6e4b0a1"),
            alert("api-2:8080", "warning", "a7f3e2d1c0b9a8f7"),
        ],
    }
