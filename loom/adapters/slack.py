"""Slack: Events API and button interactions in, answers back into the thread.

``POST /slack/events`` and ``POST /slack/interactions`` check Slack's request signature
(signing secret, 5-minute replay window), answer ``url_verification``, and publish one
signal per event through ``accept`` before acknowledging: ``202``/``200`` (a retry Slack sent
again, deduplicated on team + event id), ``503`` when the broker is down so that Slack
retries. Replies go to ``slack:{channel}[:{thread_ts}]`` addresses with ``chat.postMessage``;
a Slack API error raises, so the reply dispatcher retries it (after Slack's Retry-After), or
dead-letters it at once when no retry can help (``channel_not_found``, ``invalid_auth``, ...).
Each answer posted is noted in state (``slack-message:{channel}:{ts}``: session and run), so
a reaction to it reaches that session as feedback on that run. See docs/slack.md.

Approvals: a paused run's request (a reply with status ``awaiting_approval``) is posted as
a message with each call's tool, arguments, digest and Approve / Deny buttons; a press of
one decides at the process's ``ApprovalDesk`` instead of becoming a signal, allowed only
to ``LOOM_SLACK__APPROVERS`` when set (see ``loom.adapters.slack_approvals``).

Least privilege: the signing secret is only needed to serve the routes (without it there
are none), the bot token only to post replies and to answer approval presses (notices,
the updated request); a worker needs just the token.

slack_sdk and aiohttp are imported on first use, so ``import loom.adapters`` stays light.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from pydantic import SecretStr

from loom.adapters.slack_approval_blocks import request_message
from loom.adapters.slack_approvals import ApprovalButtons
from loom.adapters.slack_events import (
    Ignored,
    SessionPer,
    SlackPayloadError,
    approval_presses,
    event_signal,
    in_session,
    interaction_signals,
    message_key,
    parse_address,
)
from loom.adapters.slack_settings import (
    SlackSettings,
    slack_settings_from_environment,
    user_ids,
)
from loom.errors import LoomError
from loom.intake.adapter import Adapter
from loom.intake.context import AdapterContext, HasContext, context_of
from loom.intake.http import error, inbound_body, parse_json
from loom.intake.openapi import answer, errors
from loom.intake.replies import Reply, UndeliverableReply
from loom.signals import RuntimeSignal
from loom.state.base import StateUnavailable

if TYPE_CHECKING:
    import aiohttp
    from slack_sdk.signature import SignatureVerifier
    from slack_sdk.web.async_client import AsyncWebClient
    from starlette.datastructures import Headers
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute

    from loom.state.claims import Claims

logger = logging.getLogger("loom.slack")

DEFAULT_API_URL = "https://slack.com/api/"

REPLAY_WINDOW = 300
"""Seconds a signed request stays valid (Slack's own verifier uses the same window)."""

MAX_TEXT = 39_000
"""chat.postMessage truncates text past 40,000 characters; cut earlier and say so."""

_UNIX_TIME = re.compile(r"^[0-9]{1,12}$")


PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found", "not_in_channel", "is_archived", "msg_too_long", "no_text",
        "restricted_action", "missing_scope", "invalid_auth", "not_authed",
        "account_inactive", "token_revoked",
    }
)  # fmt: skip
"""chat.postMessage errors no retry can cure: the reply is dead-lettered at once (invite
the bot, fix the token or scopes, then replay the dead letters)."""


class SlackError(LoomError):
    """Posting to Slack failed (API error, rate limit, network); a retry may help.

    ``code`` is Slack's error code, ``retry_after`` the seconds Slack asked to wait (429).
    """

    def __init__(
        self, message: str, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class SlackUndeliverable(SlackError, UndeliverableReply):
    """Posting cannot succeed as things are (no bot token, no such channel, token revoked):
    dead-lettered at once instead of retried."""


class Slack(Adapter):
    """The Slack app: ``Slack()`` reads ``LOOM_SLACK__*``; keyword arguments override them.

    ``session_per="thread"`` (default) gives every thread its own session; ``"channel"``
    one session per channel. ``approvers``: the Slack user ids who may press Approve or
    Deny (``LOOM_SLACK__APPROVERS``); None lets everyone who can press them decide.
    """

    name = "slack"
    reply_prefixes = ("slack:",)

    def __init__(
        self,
        *,
        signing_secret: str | SecretStr | None = None,
        bot_token: str | SecretStr | None = None,
        api_url: str | None = None,
        session_per: SessionPer = "thread",
        timeout: float = 10.0,
        approvers: Sequence[str] | None = None,
        settings: SlackSettings | None = None,
    ) -> None:
        if settings is None and None in (signing_secret, bot_token, api_url, approvers):
            settings = slack_settings_from_environment()
        if session_per not in ("thread", "channel"):
            raise ValueError(f"session_per must be 'thread' or 'channel', not {session_per!r}")
        self.signing_secret = _secret(signing_secret)
        self.bot_token = _secret(bot_token)
        self.api_url = api_url or DEFAULT_API_URL
        if settings is not None:
            self.signing_secret = self.signing_secret or _secret(settings.signing_secret)
            self.bot_token = self.bot_token or _secret(settings.bot_token)
            self.api_url = api_url or settings.api_url
            approvers = approvers if approvers is not None else settings.approvers
        if approvers is not None:
            approvers = user_ids(list(approvers))  # the setting's check: ids, not empty
        self.approvals = ApprovalButtons(self._web_client, approvers)
        """Approve and Deny presses (``approvals.approvers``: who may decide, None: all)."""
        self.session_per: SessionPer = session_per
        self.timeout = timeout
        self._state: Claims | None = None
        self._message_ttl = 30 * 86_400.0
        self._verifier: SignatureVerifier | None = None
        self._session: aiohttp.ClientSession | None = None
        self._client: AsyncWebClient | None = None

    # -- inbound -----------------------------------------------------------------------
    def routes(self, context: AdapterContext | HasContext) -> list[BaseRoute]:
        """``POST /slack/events`` and ``POST /slack/interactions``; none without a signing
        secret (a reply-only deployment holds just the bot token)."""
        from slack_sdk.signature import SignatureVerifier
        from starlette.routing import Route

        if not self.signing_secret:
            replies = (
                "replies to slack: addresses are still posted (with the bot token)"
                if self.bot_token
                else "and with no bot token either, replies to slack: addresses are "
                "dead-lettered at once, not posted (set LOOM_SLACK__BOT_TOKEN)"
            )
            logger.warning(
                "Slack events are not served: no signing secret to check Slack's requests "
                "with; %s. Set LOOM_SLACK__SIGNING_SECRET or pass Slack(signing_secret=...) "
                "to serve /slack/events and /slack/interactions",
                replies,
            )
            return []
        if not self.bot_token:  # a gateway needs none; a worker without it cannot post
            logger.info(
                "no Slack bot token in this process: a worker here dead-letters replies to "
                "slack: addresses at once, not posted, and approval presses are decided "
                "without a notice or an updated message (set LOOM_SLACK__BOT_TOKEN)"
            )
        self._verifier = SignatureVerifier(self.signing_secret.get_secret_value())
        ctx = context_of(context)

        async def events(request: Request) -> Response:
            return await self._events(ctx, request)

        async def interactions(request: Request) -> Response:
            return await self._interactions(ctx, request)

        return [
            Route("/slack/events", events, methods=["POST"]),
            Route("/slack/interactions", interactions, methods=["POST"]),
        ]

    def openapi(self) -> dict[str, Any]:
        """Path items of the two Slack routes (signed with the app's signing secret)."""
        if not self.signing_secret:
            return {}  # no routes are served

        signature = [
            {"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
            for name in ("X-Slack-Request-Timestamp", "X-Slack-Signature")
        ]
        status = {"type": "object", "properties": {"status": {"type": "string"}}}
        events = {
            "summary": "Slack Events API (app_mention, message, reaction_added)",
            "security": [],
            "parameters": signature,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "responses": {
                "202": answer("Accepted: the broker confirmed the signal.", status),
                "200": answer(
                    "url_verification's challenge, a retry already accepted, or an "
                    "event that makes no signal.",
                    {"type": "object"},
                ),
                **errors(400, 401, 413, 422, 503),
            },
        }
        form = {"type": "object", "required": ["payload"], "properties": {"payload": {}}}
        interactions = {
            "summary": "Slack interactivity (block_actions: button presses; Approve / Deny "
            "on an approval request decides it)",
            "security": [],
            "parameters": signature,
            "requestBody": {
                "required": True,
                "content": {"application/x-www-form-urlencoded": {"schema": form}},
            },
            "responses": {
                "200": answer(
                    "Acknowledged (empty body, as Slack wants); a refused approval press is "
                    "answered with an ephemeral notice in Slack."
                ),
                **errors(400, 401, 413, 422, 503),
            },
        }
        return {"/slack/events": {"post": events}, "/slack/interactions": {"post": interactions}}

    async def _events(self, context: AdapterContext, request: Request) -> Response:
        from starlette.responses import JSONResponse

        body = await self._signed_body(context, request)
        if not isinstance(body, bytes):
            return body
        try:
            envelope = parse_json(body)
        except ValueError as problem:  # bad JSON, nested too deep, or not UTF-8
            return error(400, f"the body is not JSON: {problem}")
        if not isinstance(envelope, dict):
            return error(422, "the body must be a JSON object (a Slack Events API envelope)")
        if envelope.get("type") == "url_verification":
            challenge = envelope.get("challenge")
            if not isinstance(challenge, str) or not challenge:
                return error(422, "url_verification needs a 'challenge' string")
            return JSONResponse({"challenge": challenge})
        try:
            outcome = event_signal(envelope, session_per=self.session_per)
        except SlackPayloadError as problem:
            return error(422, str(problem))
        if isinstance(outcome, Ignored):
            return JSONResponse({"status": "ignored", "reason": outcome.reason})
        if outcome.type == "reaction_added":
            try:
                outcome = await self._to_answered_session(context, outcome)
            except StateUnavailable as problem:
                return error(
                    503, f"state unavailable, event not accepted (Slack retries): {problem}"
                )
        retry = request.headers.get("x-slack-retry-num")
        if retry is not None:
            reason = request.headers.get("x-slack-retry-reason", "?")
            logger.info("slack retry %s (%s) of %s", retry[:8], reason[:40], outcome.dedupe_key)
        return await context.accept(outcome)

    async def _to_answered_session(
        self, context: AdapterContext, signal: RuntimeSignal
    ) -> RuntimeSignal:
        """A reaction to an answer the bot posted, in that answer's session and tied to its
        run; any other reaction as it is."""
        channel, ts = signal.payload.get("channel"), signal.payload.get("ts")
        if not isinstance(channel, str) or not isinstance(ts, str):
            return signal
        noted = await context.claims.marker(message_key(channel, ts))
        if noted is None:
            return signal
        try:
            answered = json.loads(noted)
            session_id, run_id = answered["session_id"], answered.get("run_id")
        except (ValueError, TypeError, KeyError):
            logger.warning("unreadable note on Slack message %s in %s: ignored", ts, channel)
            return signal
        if not isinstance(session_id, str) or not (run_id is None or isinstance(run_id, str)):
            return signal
        return in_session(signal, session_id, run_id)

    async def _interactions(self, context: AdapterContext, request: Request) -> Response:
        from starlette.responses import Response

        body = await self._signed_body(context, request)
        if not isinstance(body, bytes):
            return body
        if request.headers.get("content-type", "").partition(";")[0].strip() != (
            "application/x-www-form-urlencoded"
        ):
            return error(400, "interactions come form-encoded: payload=<JSON>")
        fields = parse_qs(body.decode(), keep_blank_values=True).get("payload", [])
        if len(fields) != 1:
            return error(400, "expected exactly one form field payload=<JSON>")
        try:
            payload = json.loads(fields[0])
        except (ValueError, RecursionError) as problem:
            return error(400, f"the payload field is not JSON: {problem}")
        if not isinstance(payload, dict):
            return error(422, "the interaction payload must be a JSON object")
        try:
            presses = approval_presses(payload)
            outcome = interaction_signals(payload, session_per=self.session_per)
        except SlackPayloadError as problem:
            return error(422, str(problem))
        for press in presses:  # decisions, not signals
            if not await self.approvals.press(press, context.approvals):
                return error(503, "the decision could not be recorded now: press again")
        if isinstance(outcome, Ignored):
            return Response(status_code=200)
        for signal in outcome:
            response = await context.accept(signal)
            if response.status_code >= 500:
                return response  # Slack shows the user an error; nothing was acknowledged
        # Slack wants an empty 200: a body could be taken as a message to show.
        return Response(status_code=200)

    async def _signed_body(self, context: AdapterContext, request: Request) -> bytes | Response:
        """The body of a request Slack signed, or the response that refuses it."""
        return await inbound_body(
            context, request, lambda body: self._check_signature(request.headers, body)
        )

    def _check_signature(self, headers: Headers, body: bytes) -> str | None:
        """Why the request is not Slack's (None when it is)."""
        verifier = self._verifier
        assert verifier is not None, "routes() creates the verifier"
        timestamp = headers.get("x-slack-request-timestamp")
        signature = headers.get("x-slack-signature")
        if not timestamp or not signature:
            return (
                "missing X-Slack-Signature or X-Slack-Request-Timestamp: not a signed Slack request"
            )
        if not _UNIX_TIME.match(timestamp):
            return "X-Slack-Request-Timestamp is not a Unix time"
        if abs(verifier.clock.now() - int(timestamp)) > REPLAY_WINDOW:
            return (
                "X-Slack-Request-Timestamp is more than 5 minutes off: a stale or replayed request"
            )
        try:
            valid = verifier.is_valid(body=body, timestamp=timestamp, signature=signature)
        except UnicodeDecodeError:
            valid = False  # Slack sends UTF-8; anything else was not signed by it
        if not valid:
            return "X-Slack-Signature does not match the body and the signing secret"
        return None

    # -- replies -----------------------------------------------------------------------
    def replies_to(self, address: str) -> bool:
        """True for ``slack:`` addresses."""
        return address.startswith("slack:")

    def use_state(self, state: Claims, *, ttl: float) -> None:
        """Note each answer posted (its session and run) in ``state`` for ``ttl`` seconds,
        so reactions to it find their session (the reply dispatcher calls this)."""
        self._state = state
        self._message_ttl = ttl

    async def send_reply(self, reply: Reply) -> None:
        """Post the run's answer (or why it failed) in the signal's thread."""
        from slack_sdk.errors import SlackApiError

        try:
            channel, thread_ts = parse_address(reply.reply_to)
        except SlackPayloadError as problem:
            raise SlackUndeliverable(str(problem)) from problem
        client = self._web_client()
        message: dict[str, Any] = {"text": reply_text(reply)}
        if reply.awaiting_approval:
            try:
                approvals = reply.approvals()
            except ValueError as problem:
                raise SlackUndeliverable(f"run {reply.run_id}: {problem}") from problem
            if approvals:
                text, blocks = request_message(reply.session_id, reply.output, approvals)
                message = {"text": text, "blocks": blocks}
        try:
            response = await client.chat_postMessage(
                channel=channel, thread_ts=thread_ts, **message
            )
        except SlackApiError as problem:
            raise _api_error(channel, problem.response) from problem
        ts, posted_in = response.get("ts"), response.get("channel") or channel
        if isinstance(ts, str) and isinstance(posted_in, str):
            await self._note(posted_in, ts, reply)

    async def _note(self, channel: str, ts: str, reply: Reply) -> None:
        """Remember which session and run the message ``ts`` answers; never raises (the
        answer is out: failing now would post it again)."""
        if self._state is None:
            return
        note = json.dumps({"session_id": reply.session_id, "run_id": reply.run_id})
        try:
            await self._state.set_marker(message_key(channel, ts), note, self._message_ttl)
        except Exception as problem:
            logger.warning(
                "answer %s in %s posted, but not noted (%s): reactions to it go to the "
                "channel's session", ts, channel, problem,
            )  # fmt: skip

    def _web_client(self) -> AsyncWebClient:
        if self._client is None:
            if not self.bot_token:
                raise SlackUndeliverable(
                    "cannot post to Slack without a bot token: set LOOM_SLACK__BOT_TOKEN "
                    "or pass Slack(bot_token=...), then replay the dead letters"
                )
            import aiohttp
            from slack_sdk.web.async_client import AsyncWebClient

            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
            # No client-side retries: the reply dispatcher retries with backoff and a limit.
            self._client = AsyncWebClient(
                token=self.bot_token.get_secret_value(),
                base_url=self.api_url,
                session=self._session,
                retry_handlers=[],
            )
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP session of the Web API client."""
        session, self._session, self._client = self._session, None, None
        if session is not None:
            await session.close()


def reply_text(reply: Reply) -> str:
    """What goes to Slack: the answer of a completed run, that it waits for a decision
    (the request's blocks show what), else plainly that it failed."""
    if reply.ok:
        text = reply.output.strip() or "(I finished without a written answer.)"
    elif reply.awaiting_approval:
        text = ":raised_hand: Waiting for approval before I go on."
    elif reply.status == "cancelled":
        text = f":no_entry_sign: The run was cancelled: {reply.error or 'no reason given'}"
    else:
        text = f":warning: I could not finish ({reply.status}): {reply.error or 'no reason given'}"
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + "\n… (cut: the answer is longer than a Slack message)"
    return text


def _api_error(channel: str, response: Any) -> SlackError:
    """The error for a failed chat.postMessage: permanent ones dead-letter at once."""
    from loom.providers.retry import parse_retry_after

    status = getattr(response, "status_code", None)
    data = getattr(response, "data", None)
    code = data.get("error") if isinstance(data, dict) else None
    code = code if isinstance(code, str) else None
    message = (
        f"chat.postMessage to {channel} failed: {code or 'unexpected response'} (HTTP {status})"
    )
    headers = getattr(response, "headers", None) or {}
    retry_after = parse_retry_after({str(k).lower(): str(v) for k, v in headers.items()})
    if status == 429 and retry_after is not None:
        message += f"; rate limited, Slack asks to wait {retry_after:g}s"
    if code in PERMANENT_ERRORS:
        return SlackUndeliverable(message, code=code)
    return SlackError(message, code=code, retry_after=retry_after)


def _secret(value: str | SecretStr | None) -> SecretStr | None:
    """The value as a SecretStr; None for a missing or empty one."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return SecretStr(value) if value else None


__all__ = ["PERMANENT_ERRORS", "Slack", "SlackError", "SlackUndeliverable", "reply_text"]
