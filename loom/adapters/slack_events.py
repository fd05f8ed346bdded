"""Slack Events API and interaction payloads to RuntimeSignals: pure functions, no I/O.

Sessions: one per thread, ``slack:{team}:{channel}:{thread_ts}`` (a message that starts a
thread uses its own ``ts``), or one per channel, ``slack:{team}:{channel}``. A direct message
outside a thread belongs to the DM's channel session, so a conversation with the bot keeps
its context.

Reply addresses: ``slack:{channel}:{thread_ts}`` posts in that thread, ``slack:{channel}``
posts at the top level (direct messages outside a thread). No team: a bot token belongs to
one workspace.

Reactions: Slack names only the message's channel and ts (no thread), so the adapter notes
the session and run of every answer it posts (``message_key``) and ``in_session`` moves a
reaction to one of them there; other reactions go to the session of the thread the message
roots (a direct message's: the DM's session).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from loom.adapters.slack_approval_blocks import ACTION_PREFIX
from loom.core.approvals import Decision
from loom.errors import LoomError
from loom.signals import RuntimeSignal

SessionPer = Literal["thread", "channel"]

MAX_SUMMARY = 10_000
"""RuntimeSignal's summary limit; longer messages are cut there."""

# Message subtypes a person sends; every other subtype (bot_message, message_changed,
# message_deleted, channel_join, ...) is an edit, a bot or housekeeping, not a request.
PERSON_SUBTYPES = frozenset({"", "file_share", "thread_broadcast"})

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TS = re.compile(r"^[0-9]{1,12}\.[0-9]{1,9}$")
_TRIGGER = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")
_SPACES = re.compile(r"[ \t]{2,}")


class SlackPayloadError(LoomError):
    """A Slack payload is not what Slack sends; the message says which field is wrong."""


@dataclass(frozen=True, slots=True)
class Ignored:
    """A valid payload the adapter deliberately does not turn into a signal."""

    reason: str


def session_for(team: str, channel: str, thread_ts: str, session_per: SessionPer) -> str:
    """The session of a message in ``channel``, in the thread rooted at ``thread_ts``."""
    if session_per == "channel":
        return f"slack:{team}:{channel}"
    return f"slack:{team}:{channel}:{thread_ts}"


def reply_address(channel: str, thread_ts: str | None) -> str:
    """``slack:{channel}:{thread_ts}``, or ``slack:{channel}`` for the top level."""
    return f"slack:{channel}:{thread_ts}" if thread_ts else f"slack:{channel}"


def message_key(channel: str, ts: str) -> str:
    """The state marker that names the session and run a message the bot posted answers."""
    return f"slack-message:{channel}:{ts}"


def in_session(signal: RuntimeSignal, session_id: str, run_id: str | None) -> RuntimeSignal:
    """``signal`` (a reaction to an answer) in the answer's session, tied to its run."""
    data = signal.model_dump()
    data["session_id"] = session_id
    if run_id is not None:
        data["payload"] = {**data["payload"], "run_id": run_id}
    return RuntimeSignal.model_validate(data)


def parse_address(address: str) -> tuple[str, str | None]:
    """``(channel, thread_ts or None)`` of a ``slack:`` reply address."""
    scheme, _, rest = address.partition(":")
    channel, _, thread_ts = rest.partition(":")
    if scheme != "slack" or not _ID.match(channel) or (thread_ts and not _TS.match(thread_ts)):
        raise SlackPayloadError(
            f"{address!r} is not a Slack reply address (slack:CHANNEL or slack:CHANNEL:THREAD_TS)"
        )
    return channel, thread_ts or None


def event_signal(
    envelope: Mapping[str, Any], *, session_per: SessionPer = "thread"
) -> RuntimeSignal | Ignored:
    """The signal for an ``event_callback`` envelope, or why there is none.

    Raises SlackPayloadError when the envelope is malformed.
    """
    kind = _text(envelope, "type", "envelope")
    if kind != "event_callback":
        return Ignored(f"envelope type {kind!r} is not handled")
    team = _id(envelope, "team_id", "envelope")
    event_id = _id(envelope, "event_id", "envelope")
    event = _object(envelope, "event", "envelope")
    event_type = _text(event, "type", "event")
    bot_user = _bot_user(envelope)
    context = _Context(team, event_id, session_per, bot_user, _event_time(envelope))
    if event_type in ("app_mention", "message"):
        return _message(event_type, event, context)
    if event_type == "reaction_added":
        return _reaction(event, context)
    return Ignored(f"event type {event_type!r} is not handled")


@dataclass(frozen=True, slots=True)
class ApprovalPress:
    """A press of an approval's Approve or Deny button (not a signal: it decides)."""

    decision: Decision
    session_id: str
    approval_id: str
    digest: str
    user: str
    channel: str
    message_ts: str
    thread_ts: str
    blocks: tuple[Mapping[str, Any], ...] | None
    """The blocks of the message pressed on (to update it), when Slack sent them."""


@dataclass(frozen=True, slots=True)
class _Pressed:
    """Where a ``block_actions`` payload's buttons were pressed, and by whom."""

    user: str
    team: str
    channel: str
    message_ts: str
    thread_ts: str
    message: Mapping[str, Any]
    trigger: str | None
    actions: list[Mapping[str, Any]]


def interaction_signals(
    payload: Mapping[str, Any], *, session_per: SessionPer = "thread"
) -> list[RuntimeSignal] | Ignored:
    """One high-urgency signal per action of a ``block_actions`` payload (a button press),
    in the session of the thread of the message that holds the buttons. Approval buttons
    (``approval_presses``) make no signal."""
    pressed = _pressed(payload)
    if isinstance(pressed, Ignored):
        return pressed
    signals = []
    for index, action in enumerate(pressed.actions):
        where = f"payload.actions[{index}]"
        action_id = _text(action, "action_id", where, limit=255)
        if action_id.startswith(ACTION_PREFIX):
            continue
        action_ts = _ts(action, "action_ts", where)
        value = _action_value(action, where)
        shown = f" = {value}" if value and value != action_id else ""
        team, channel, thread_ts = pressed.team, pressed.channel, pressed.thread_ts
        signals.append(
            RuntimeSignal.create(
                f"{pressed.user} clicked {action_id}{shown}",
                source="slack",
                type="interaction",
                urgency="high",
                payload={
                    "action_id": action_id,
                    "value": value,
                    "block_id": action.get("block_id"),
                    "user": pressed.user,
                    "team": team,
                    "channel": channel,
                    "message_ts": pressed.message_ts,
                    "thread_ts": thread_ts,
                },
                session_id=session_for(team, channel, thread_ts, session_per),
                reply_to=reply_address(channel, thread_ts),
                # A trigger id names one click; several actions in it differ by action_id.
                dedupe_key=f"slack:{team}:action:{pressed.trigger or action_ts}:{action_id}",
            )
        )
    if not signals:
        return Ignored("only approval buttons were pressed")
    return signals


def approval_presses(payload: Mapping[str, Any]) -> list[ApprovalPress]:
    """The approval buttons (``action_id`` ``loom_approval_approve:...`` or ``..._deny:...``)
    pressed in a ``block_actions`` payload; raises SlackPayloadError when one is malformed."""
    pressed = _pressed(payload)
    if isinstance(pressed, Ignored):
        return []
    blocks = pressed.message.get("blocks")
    kept = None
    if isinstance(blocks, list):
        kept = tuple(block for block in blocks if isinstance(block, Mapping))
    presses = []
    for index, action in enumerate(pressed.actions):
        where = f"payload.actions[{index}]"
        action_id = _text(action, "action_id", where, limit=255)
        if not action_id.startswith(ACTION_PREFIX):
            continue
        kind = action_id.removeprefix(ACTION_PREFIX).partition(":")[0]
        if kind not in (Decision.APPROVE.value, Decision.DENY.value):
            raise SlackPayloadError(f"{where}.action_id {_show(action_id)} is no approval button")
        value = _action_value(action, where)
        try:
            named = json.loads(value or "")
        except ValueError:
            named = None
        fields = ("session_id", "approval_id", "digest")
        if not isinstance(named, Mapping) or not all(
            isinstance(named.get(key), str) and named.get(key) for key in fields
        ):
            raise SlackPayloadError(
                f"{where}.value must name the session_id, approval_id and digest of an "
                f"approval, got {_show(value)}"
            )
        presses.append(
            ApprovalPress(
                decision=Decision(kind),
                session_id=named["session_id"],
                approval_id=named["approval_id"],
                digest=named["digest"],
                user=pressed.user,
                channel=pressed.channel,
                message_ts=pressed.message_ts,
                thread_ts=pressed.thread_ts,
                blocks=kept,
            )
        )
    return presses


def _pressed(payload: Mapping[str, Any]) -> _Pressed | Ignored:
    kind = _text(payload, "type", "payload")
    if kind != "block_actions":
        return Ignored(f"interaction type {kind!r} is not handled")
    user_info = _object(payload, "user", "payload")
    user = _id(user_info, "id", "user")
    team_info = payload.get("team")
    # Org-wide installs may send "team": null; the user's team_id is then the workspace.
    team = (
        _id(team_info, "id", "team")
        if isinstance(team_info, Mapping)
        else _id(user_info, "team_id", "user")
    )
    container = _object(payload, "container", "payload")
    message = payload.get("message")
    message = message if isinstance(message, Mapping) else {}
    channel_info = payload.get("channel")
    channel = container.get("channel_id") or (
        channel_info.get("id") if isinstance(channel_info, Mapping) else None
    )
    message_ts = container.get("message_ts") or message.get("ts")
    if channel is None or message_ts is None:
        return Ignored("the action is not on a message in a channel (a modal or home tab)")
    channel = _valid_id(channel, "container.channel_id")
    message_ts = _valid_ts(message_ts, "container.message_ts")
    thread_ts = _optional_ts(message, "thread_ts", "message") or message_ts
    trigger = payload.get("trigger_id")
    if trigger is not None and not (isinstance(trigger, str) and _TRIGGER.match(trigger)):
        raise SlackPayloadError(
            f"payload.trigger_id must be a Slack trigger id, got {_show(trigger)}"
        )
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions:
        raise SlackPayloadError(f"payload.actions must be a non-empty list, got {_show(actions)}")
    for index, action in enumerate(actions):
        if not isinstance(action, Mapping):
            raise SlackPayloadError(f"payload.actions[{index}] must be an object")
    return _Pressed(user, team, channel, message_ts, thread_ts, message, trigger, actions)


@dataclass(frozen=True, slots=True)
class _Context:
    team: str
    event_id: str
    session_per: SessionPer
    bot_user: str | None
    observed_at: datetime | None

    def signal(self, summary: str, **fields: Any) -> RuntimeSignal:
        if self.observed_at is not None:
            fields["observed_at"] = self.observed_at
        return RuntimeSignal.create(
            summary, source="slack", dedupe_key=f"slack:{self.team}:{self.event_id}", **fields
        )


def _message(
    event_type: str, event: Mapping[str, Any], context: _Context
) -> RuntimeSignal | Ignored:
    subtype = event.get("subtype") or ""
    if event.get("bot_id") or subtype == "bot_message":
        return Ignored("message from a bot")
    if subtype not in PERSON_SUBTYPES:
        return Ignored(f"message subtype {subtype!r} is not a new message from a person")
    user = _id(event, "user", "event")
    if user == context.bot_user:
        return Ignored("the bot's own message")
    text = event.get("text", "")
    if not isinstance(text, str):
        raise SlackPayloadError(f"event.text must be a string, got {_show(text)}")
    channel = _id(event, "channel", "event")
    ts = _ts(event, "ts", "event")
    thread_ts = _optional_ts(event, "thread_ts", "event")
    channel_type = event.get("channel_type")
    if channel_type is not None and not isinstance(channel_type, str):
        raise SlackPayloadError(f"event.channel_type must be a string, got {_show(channel_type)}")
    mentioned = context.bot_user is not None and context.bot_user in _MENTION.findall(text)
    if event_type == "message" and channel_type != "im" and mentioned:
        # Slack sends a mention both as app_mention and as message: act on one of them.
        return Ignored("a mention of the bot, handled as its app_mention event")
    summary = _strip_mentions(text, context.bot_user, leading=event_type == "app_mention")
    if channel_type == "im" and thread_ts is None:
        session_id = f"slack:{context.team}:{channel}"
        reply_to = reply_address(channel, None)
    else:
        session_id = session_for(context.team, channel, thread_ts or ts, context.session_per)
        reply_to = reply_address(channel, thread_ts or ts)
    payload = {
        "team": context.team,
        "channel": channel,
        "channel_type": channel_type,
        "user": user,
        "ts": ts,
        "thread_ts": thread_ts,
        "event_id": context.event_id,
    }
    return context.signal(
        summary[:MAX_SUMMARY],
        type=event_type,
        urgency="normal",
        payload={k: v for k, v in payload.items() if v is not None},
        session_id=session_id,
        reply_to=reply_to,
    )


def _reaction(event: Mapping[str, Any], context: _Context) -> RuntimeSignal | Ignored:
    item = _object(event, "item", "event")
    if item.get("type") != "message":
        return Ignored(f"reaction to a {item.get('type')!r}, not a message")
    user = _id(event, "user", "event")
    if user == context.bot_user:
        return Ignored("the bot's own reaction")
    reaction = _text(event, "reaction", "event", limit=100)
    channel = _id(item, "channel", "event.item")
    ts = _ts(item, "ts", "event.item")
    item_user = event.get("item_user")
    channel_type = item.get("channel_type")
    channel_type = channel_type if isinstance(channel_type, str) else None
    payload = {
        "reaction": reaction,
        "user": user,
        "item_user": item_user if isinstance(item_user, str) else None,
        "channel": channel,
        "channel_type": channel_type,
        "ts": ts,
        "team": context.team,
        "event_id": context.event_id,
    }
    # Slack does not say which thread the message is in: the session of the thread it roots
    # (the adapter moves reactions to its own answers to their session, see in_session).
    if channel_type == "im":
        session_id = f"slack:{context.team}:{channel}"
    else:
        session_id = session_for(context.team, channel, ts, context.session_per)
    return context.signal(
        f"{user} reacted :{reaction}: to message {ts} in {channel}",
        type="reaction_added",
        urgency="low",
        payload={k: v for k, v in payload.items() if v is not None},
        session_id=session_id,
    )


def _strip_mentions(text: str, bot_user: str | None, *, leading: bool) -> str:
    if bot_user is not None:
        text = _MENTION.sub(lambda m: "" if m.group(1) == bot_user else m.group(0), text)
    elif leading:
        # Without the installation's bot id, an app_mention's first mention is the bot's.
        text = text.lstrip()
        first = _MENTION.match(text)
        text = text[first.end() :] if first else text
    return _SPACES.sub(" ", text).strip()


def _bot_user(envelope: Mapping[str, Any]) -> str | None:
    """The installation's bot user id, from the envelope's ``authorizations``."""
    authorizations = envelope.get("authorizations")
    if isinstance(authorizations, list):
        for entry in authorizations:
            if isinstance(entry, Mapping) and entry.get("is_bot"):
                user = entry.get("user_id")
                if isinstance(user, str) and _ID.match(user):
                    return user
    return None


def _event_time(envelope: Mapping[str, Any]) -> datetime | None:
    value = envelope.get("event_time")
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**33:
        return datetime.fromtimestamp(value, UTC)
    return None


def _action_value(action: Mapping[str, Any], where: str) -> str | None:
    value = action.get("value")
    selected = action.get("selected_option")
    if value is None and isinstance(selected, Mapping):
        value = selected.get("value")  # select menus carry the value in the chosen option
    if value is not None and not isinstance(value, str):
        raise SlackPayloadError(f"{where}.value must be a string")
    return value


def _object(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, Mapping):
        raise SlackPayloadError(f"{where}.{key} must be an object, got {_show(value)}")
    return value


def _text(data: Mapping[str, Any], key: str, where: str, *, limit: int = 128) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise SlackPayloadError(
            f"{where}.{key} must be a string of 1 to {limit} characters, got {_show(value)}"
        )
    return value


def _id(data: Mapping[str, Any], key: str, where: str) -> str:
    return _valid_id(data.get(key), f"{where}.{key}")


def _ts(data: Mapping[str, Any], key: str, where: str) -> str:
    return _valid_ts(data.get(key), f"{where}.{key}")


def _valid_id(value: object, name: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise SlackPayloadError(
            f"{name} must be a Slack id (letters, digits, _, -), got {_show(value)}"
        )
    return value


def _valid_ts(value: object, name: str) -> str:
    if not isinstance(value, str) or not _TS.match(value):
        raise SlackPayloadError(
            f"{name} must be a Slack timestamp like '1712345678.000100', got {_show(value)}"
        )
    return value


def _show(value: object) -> str:
    text = "nothing" if value is None else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _optional_ts(data: Mapping[str, Any], key: str, where: str) -> str | None:
    return None if data.get(key) is None else _ts(data, key, where)


__all__ = [
    "ApprovalPress",
    "Ignored",
    "SessionPer",
    "SlackPayloadError",
    "approval_presses",
    "event_signal",
    "in_session",
    "interaction_signals",
    "message_key",
    "parse_address",
    "reply_address",
    "session_for",
]
