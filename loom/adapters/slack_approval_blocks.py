"""Block Kit for approvals: the request posted in the thread, and the same message once
decided. Pure functions, no I/O.

A request names each call exactly: the tool, its arguments (pretty JSON in a preformatted
block, so nothing in them is read as Slack markup or a mention), why it needs approval, when
the request expires, and the digest of the call. Each call gets its own Approve and Deny
buttons; their ``action_id`` says the decision (``loom_approval_approve:{approval id}``) and
their ``value`` names the session, the approval and the digest the person was shown, so a
press decides exactly what the message showed.

Slack's limits kept here: 50 blocks per message (at most ``MAX_APPROVALS`` calls get
buttons; the rest are named with the way to decide them), 3,000 characters per text, 2,000
per button value and 255 per ``action_id``/``block_id``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from loom.core.approvals import Approval, Decision

ACTION_PREFIX = "loom_approval_"
"""``action_id`` prefix of the approval buttons: these presses decide, they are no signals."""
APPROVE_ACTION = f"{ACTION_PREFIX}{Decision.APPROVE.value}"
DENY_ACTION = f"{ACTION_PREFIX}{Decision.DENY.value}"
BLOCK_PREFIX = "loom_approval:"
"""``block_id`` prefix of an approval's buttons (``loom_approval:{approval id}``)."""

MAX_APPROVALS = 10
"""Calls that get buttons in one message (4 blocks each, under Slack's 50)."""
MAX_ARGUMENTS = 2_500
"""Characters of the arguments shown; past that they are cut (the digest covers them all)."""
MAX_OUTPUT = 2_900
"""Characters of the run's text so far shown above the requests (a section's limit: 3,000)."""


def request_message(
    session_id: str, output: str, approvals: Sequence[Approval]
) -> tuple[str, list[dict[str, Any]]]:
    """The fallback text and the blocks of a paused run's request for decisions."""
    blocks: list[dict[str, Any]] = []
    if output.strip():
        blocks.append(_section(_cut(escape(output.strip()), MAX_OUTPUT)))
    for approval in approvals[:MAX_APPROVALS]:
        blocks.extend(approval_blocks(approval))
        blocks.append(_buttons(session_id, approval))
    rest = approvals[MAX_APPROVALS:]
    if rest:
        ids = ", ".join(f"`{escape(a.id)}` ({escape(a.tool)})" for a in rest)
        blocks.append(
            _section(
                _cut(
                    f"{len(rest)} more call(s) wait for approval: {ids}. Decide them with "
                    f"`loom approve {escape(session_id)} ID` or "
                    f"`POST /sessions/{escape(session_id)}/approvals/ID`.",
                    MAX_OUTPUT,
                )
            )
        )
    tools = ", ".join(dict.fromkeys(a.tool for a in approvals))
    text = f"Approval needed: {len(approvals)} call(s) of {tools}"
    return escape(_cut(text, 300)), blocks


def approval_blocks(approval: Approval) -> list[dict[str, Any]]:
    """What the call is (tool, why, until when), its exact arguments, and its digest."""
    lines = [f":raised_hand: *Approval needed:* `{escape(approval.tool)}`"]
    if approval.reason:
        lines.append(f"*Why:* {escape(approval.reason)}")
    lines.append(f"*Expires:* {_date(approval.expires_at)}")
    arguments = json.dumps(approval.arguments, indent=2, ensure_ascii=False, default=str)
    shown = arguments
    footer = f"approval `{escape(approval.id)}` · digest `{approval.digest}`"
    if len(arguments) > MAX_ARGUMENTS:
        shown = arguments[:MAX_ARGUMENTS] + "\n…"
        footer += (
            f" · arguments cut: {MAX_ARGUMENTS:,} of {len(arguments):,} characters shown; "
            "the digest covers them all"
        )
    return [
        _section(_cut("\n".join(lines), MAX_OUTPUT)),
        {
            "type": "rich_text",
            "elements": [
                {"type": "rich_text_preformatted", "elements": [{"type": "text", "text": shown}]}
            ],
        },
        {"type": "context", "elements": [{"type": "mrkdwn", "text": footer}]},
    ]


def button_value(session_id: str, approval: Approval) -> str:
    """What a button carries: session, approval and digest (at most about 400 characters:
    a session id has at most 256, a digest 71)."""
    return json.dumps(
        {"session_id": session_id, "approval_id": approval.id, "digest": approval.digest},
        separators=(",", ":"),
    )


def settled_blocks(
    blocks: Sequence[Mapping[str, Any]] | None, approval_id: str, outcome: str
) -> list[dict[str, Any]] | None:
    """The request message with the buttons of ``approval_id`` replaced by ``outcome`` (who
    decided what, or that it expired); the other calls' buttons stay. None when the blocks
    hold no buttons of that approval."""
    block_id = BLOCK_PREFIX + approval_id
    if not blocks or not any(block.get("block_id") == block_id for block in blocks):
        return None
    context = {"type": "context", "elements": [{"type": "mrkdwn", "text": outcome}]}
    return [context if block.get("block_id") == block_id else dict(block) for block in blocks]


def decided_blocks(
    blocks: Sequence[Mapping[str, Any]] | None, approval: Approval
) -> list[dict[str, Any]]:
    """The request message once ``approval`` is decided; without its original blocks, the
    approval's own blocks followed by the outcome."""
    outcome = outcome_text(approval)
    settled = settled_blocks(blocks, approval.id, outcome)
    if settled is not None:
        return settled
    context = {"type": "context", "elements": [{"type": "mrkdwn", "text": outcome}]}
    return [*approval_blocks(approval), context]


def outcome_text(approval: Approval) -> str:
    """``:white_check_mark: Approved by <@U0123> at ...``, or denied, or expired."""
    if approval.lapsed:
        return f":hourglass: Expired at {_date(approval.expires_at)} without a decision: denied"
    verb = (
        ":white_check_mark: Approved"
        if approval.decision is Decision.APPROVE
        else ":no_entry: Denied"
    )
    text = f"{verb} by {who(approval.decided_by)}"
    if approval.decided_at is not None:
        text += f" at {_date(approval.decided_at)}"
    if approval.message:
        text += f": {escape(approval.message)}"
    return _cut(text, MAX_OUTPUT)


def who(decided_by: str | None) -> str:
    """A decider as Slack shows it: ``<@U0123>`` for ``slack:U0123``, else the name."""
    if decided_by is None:
        return "someone"
    scheme, _, user = decided_by.partition(":")
    if scheme == "slack" and user.isalnum():
        return f"<@{user}>"
    return f"`{escape(decided_by)}`"


def escape(text: str) -> str:
    """``&``, ``<`` and ``>`` as Slack wants them in text: a tool's argument or a run's
    output never becomes a mention (``<!channel>``) or a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _buttons(session_id: str, approval: Approval) -> dict[str, Any]:
    value = button_value(session_id, approval)
    return {
        "type": "actions",
        "block_id": BLOCK_PREFIX + approval.id,
        "elements": [
            {
                "type": "button",
                "action_id": f"{APPROVE_ACTION}:{approval.id}",
                "text": {"type": "plain_text", "text": "Approve"},
                "style": "primary",
                "value": value,
            },
            {
                "type": "button",
                "action_id": f"{DENY_ACTION}:{approval.id}",
                "text": {"type": "plain_text", "text": "Deny"},
                "style": "danger",
                "value": value,
            },
        ],
    }


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _date(when: datetime) -> str:
    """A time each reader sees in their own time zone (the ISO form as the fallback)."""
    return f"<!date^{int(when.timestamp())}^{{date_short_pretty}} at {{time}}|{when.isoformat()}>"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = [
    "ACTION_PREFIX",
    "APPROVE_ACTION",
    "BLOCK_PREFIX",
    "DENY_ACTION",
    "MAX_APPROVALS",
    "approval_blocks",
    "button_value",
    "decided_blocks",
    "escape",
    "outcome_text",
    "request_message",
    "settled_blocks",
    "who",
]
