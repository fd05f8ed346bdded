"""GitHub event payloads to a summary, an urgency and the details worth keeping: pure functions.

The details are a bounded extract (a push keeps its first 20 commits, texts are cut), so a
large delivery does not become a large signal. ``status: resolved`` with a ``risk_key`` on a
successful workflow or check run clears the risk its earlier failure raised.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from loom.signals import Urgency

Details = dict[str, Any]
Described = tuple[str, Urgency, Details]

FAILED = frozenset({"failure", "timed_out", "startup_failure"})
MAX_COMMITS = 20
MAX_TEXT = 4_000
MAX_GENERIC = 8_000
_CONTEXT = ("repository", "sender", "organization", "installation", "enterprise")


def get(data: Any, path: str) -> Any:
    """The value at a dotted ``path``, or None."""
    for key in path.split("."):
        data = data.get(key) if isinstance(data, Mapping) else None
    return data


def word(data: Any, path: str, default: str = "?") -> str:
    value = get(data, path)
    return str(value) if isinstance(value, str | int) and value != "" else default


def cut(value: Any, limit: int = MAX_TEXT) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def first_line(value: Any) -> str:
    return value.strip().splitlines()[0][:200] if isinstance(value, str) and value.strip() else ""


def push(payload: Mapping[str, Any], repo: str) -> Described:
    ref = word(payload, "ref")
    branch = ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
    pusher = word(payload, "pusher.name", word(payload, "sender.login"))
    listed = payload.get("commits")
    commits = [c for c in listed if isinstance(c, Mapping)] if isinstance(listed, list) else []
    if payload.get("deleted") is True:
        summary = f"{pusher} deleted {branch} in {repo}"
    else:
        head = first_line(get(payload, "head_commit.message"))
        forced = " (forced)" if payload.get("forced") is True else ""
        summary = f"{pusher} pushed {len(commits)} commit(s) to {repo} {branch}{forced}"
        summary += f": {head}" if head else ""
    details = {
        "ref": ref,
        "before": get(payload, "before"),
        "after": get(payload, "after"),
        "compare": get(payload, "compare"),
        "commits": [
            {
                "id": word(c, "id")[:12],
                "message": first_line(c.get("message")),
                "author": word(c, "author.name"),
            }
            for c in commits[:MAX_COMMITS]
        ],
        "commits_omitted": max(len(commits) - MAX_COMMITS, 0),
    }
    return summary, "low", details


def pull_request(payload: Mapping[str, Any], repo: str) -> Described:
    pr = get(payload, "pull_request") or {}
    action = word(payload, "action")
    if action == "closed" and get(pr, "merged") is True:
        action = "merged"
    number = word(payload, "number", word(pr, "number"))
    summary = (
        f"Pull request #{number} {action} by {word(payload, 'sender.login')} in {repo}: "
        f"{word(pr, 'title', '')}"
    )
    urgency: Urgency = "normal" if action in ("opened", "reopened", "ready_for_review") else "low"
    details = {
        "number": get(pr, "number"),
        "title": get(pr, "title"),
        "url": get(pr, "html_url"),
        "author": get(pr, "user.login"),
        "head": get(pr, "head.ref"),
        "base": get(pr, "base.ref"),
        "draft": get(pr, "draft"),
        "merged": get(pr, "merged"),
        "body": cut(get(pr, "body")),
    }
    return summary, urgency, details


def issues(payload: Mapping[str, Any], repo: str) -> Described:
    action = word(payload, "action")
    summary = (
        f"Issue #{word(payload, 'issue.number')} {action} by {word(payload, 'sender.login')} "
        f"in {repo}: {word(payload, 'issue.title', '')}"
    )
    details = {
        "number": get(payload, "issue.number"),
        "title": get(payload, "issue.title"),
        "url": get(payload, "issue.html_url"),
        "body": cut(get(payload, "issue.body")),
    }
    return summary, "normal" if action in ("opened", "reopened") else "low", details


def issue_comment(payload: Mapping[str, Any], repo: str) -> Described:
    kind = "pull request" if get(payload, "issue.pull_request") else "issue"
    action = word(payload, "action")
    comment = first_line(get(payload, "comment.body"))
    summary = (
        f"{word(payload, 'comment.user.login')} {action} a comment on {kind} "
        f"#{word(payload, 'issue.number')} in {repo}: {comment}"
    )
    details = {
        "number": get(payload, "issue.number"),
        "title": get(payload, "issue.title"),
        "url": get(payload, "comment.html_url"),
        "comment": cut(get(payload, "comment.body")),
    }
    return summary, "normal" if action == "created" else "low", details


def _run(kind: str, run: Any, payload: Mapping[str, Any], repo: str, key: str) -> Described:
    """A workflow run or check run: a failure is high urgency and an active risk."""
    action, conclusion = word(payload, "action"), get(run, "conclusion")
    branch = word(run, "head_branch", word(run, "check_suite.head_branch"))
    name = word(run, "name")
    outcome = conclusion if action == "completed" and isinstance(conclusion, str) else action
    number = f" #{word(run, 'run_number')}" if get(run, "run_number") is not None else ""
    summary = f"{kind} {name}{number} on {branch} in {repo}: {outcome}"
    details: Details = {
        "name": name,
        "branch": branch,
        "head_sha": get(run, "head_sha"),
        "run_status": get(run, "status"),
        "conclusion": conclusion,
        "url": get(run, "html_url"),
        "risk_key": f"github:{repo}:{key}:{branch}",
    }
    if action == "completed" and conclusion in FAILED:
        return summary, "high", details
    if action == "completed" and conclusion == "success":
        details["status"] = "resolved"  # clears the risk the last failure raised
    return summary, "low", details


def workflow_run(payload: Mapping[str, Any], repo: str) -> Described:
    run = get(payload, "workflow_run")
    key = f"workflow:{word(run, 'workflow_id', word(payload, 'workflow.id'))}"
    return _run("Workflow", run, payload, repo, key)


def check_run(payload: Mapping[str, Any], repo: str) -> Described:
    run = get(payload, "check_run")
    return _run("Check", run, payload, repo, f"check:{word(run, 'name')}")


def generic(event: str, payload: Mapping[str, Any], repo: str) -> Described:
    action = payload.get("action")
    doing = f" {action}" if isinstance(action, str) else ""
    summary = f"GitHub {event}{doing} in {repo} by {word(payload, 'sender.login')}"
    rest = {k: v for k, v in payload.items() if k not in _CONTEXT}
    if len(json.dumps(rest, default=str)) > MAX_GENERIC:
        rest = {"keys": sorted(rest)[:100], "truncated": True}
    return summary, "low", {"event_data": rest}


DESCRIBERS: dict[str, Callable[[Mapping[str, Any], str], Described]] = {
    "push": push,
    "pull_request": pull_request,
    "issues": issues,
    "issue_comment": issue_comment,
    "workflow_run": workflow_run,
    "check_run": check_run,
}


def describe(event: str, payload: Mapping[str, Any]) -> Described:
    """Summary, urgency and bounded details of a GitHub event."""
    repo = word(payload, "repository.full_name", word(payload, "organization.login"))
    describer = DESCRIBERS.get(event)
    if describer is None:
        return generic(event, payload, repo)
    return describer(payload, repo)


__all__ = ["DESCRIBERS", "describe"]
