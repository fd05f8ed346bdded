"""GitHub webhooks at ``POST /webhooks/github``, checked with ``X-Hub-Signature-256``.

A request without a valid signature (HMAC-SHA256 of the body with the webhook's secret) is
refused with 401. ``X-GitHub-Event`` names the event, ``ping`` is answered without a signal.
The dedupe key is the SHA-256 of the body: the signature covers the body but no header, so a
key from ``X-GitHub-Delivery`` would let a captured delivery be replayed again and again
under fresh delivery ids; GitHub's redeliveries resend the same body, so they are still
duplicates (within LOOM_DEDUPE_TTL; GitHub's signature has no timestamp, so after that a
replay is new again). ``X-GitHub-Delivery`` stays in the payload, for reference. Every
repository is a session, ``github:{owner}/{repo}``. Urgency: failed workflow runs and check
runs are ``high``; opened pull requests and issues and new comments ``normal``; pushes,
successes and every other event ``low`` (observed, not run). A failure is an active risk
until the same workflow (or check) succeeds on the same branch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.responses import JSONResponse, Response

from loom.adapters.github_events import describe
from loom.adapters.webhook import Webhook, WebhookError, json_object, webhook_openapi
from loom.adapters.webhook_settings import WebhookSettings
from loom.intake.context import AdapterContext, HasContext, context_of
from loom.intake.signing import header, hmac_sha256, same
from loom.signals import RuntimeSignal

if TYPE_CHECKING:
    from starlette.routing import BaseRoute


class GitHub(Webhook):
    """GitHub's webhooks; ``secret`` defaults to LOOM_WEBHOOKS__GITHUB_SECRET."""

    def __init__(self, secret: str | None = None) -> None:
        super().__init__("github", secret=secret)

    def routes(self, context: AdapterContext | HasContext) -> list[BaseRoute]:
        context = context_of(context)
        webhooks = context.section("webhooks", WebhookSettings)
        if self.secret is None and webhooks is not None and webhooks.github_secret is not None:
            self.secret = webhooks.github_secret.get_secret_value()
        if not self.secret:
            raise ValueError(
                "the GitHub webhook needs its secret: set LOOM_WEBHOOKS__GITHUB_SECRET or "
                "pass GitHub(secret=...)"
            )
        return super().routes(context)

    def refusal(
        self, context: AdapterContext, headers: Mapping[str, str], body: bytes
    ) -> str | None:
        given = header(headers, "x-hub-signature-256")
        if not given:
            return "no X-Hub-Signature-256 header: give the GitHub webhook a secret"
        expected = "sha256=" + hmac_sha256(self.secret or "", body)
        if not same(expected, given.strip()):
            return "X-Hub-Signature-256 does not match the body (wrong secret?)"
        return None

    def to_signal(self, body: bytes, headers: Mapping[str, str]) -> RuntimeSignal | Response:
        event = header(headers, "x-github-event")
        if not event:
            raise WebhookError("no X-GitHub-Event header", status=400)
        payload = _payload(body, headers)
        if event == "ping":
            return JSONResponse({"status": "pong", "zen": payload.get("zen")})
        delivery = (header(headers, "x-github-delivery") or "")[:200] or None  # not signed
        summary, urgency, details = describe(event, payload)
        action = payload.get("action")
        repository = _name(payload.get("repository"), "full_name")
        owner = repository or _name(payload.get("organization"), "login")
        return RuntimeSignal(
            source="github",
            type=f"github.{event}" + (f".{action}" if isinstance(action, str) else ""),
            summary=summary[:10_000],
            urgency=urgency,
            session_id=f"github:{owner}"[:256] if owner else None,
            dedupe_key=f"github:sha256:{hashlib.sha256(body).hexdigest()}",
            payload={
                "event": event,
                "action": action,
                "delivery": delivery,
                "repository": repository,
                "sender": _name(payload.get("sender"), "login"),
                **details,
            },
        )

    def openapi(self) -> dict[str, Any]:
        headers = ("X-Hub-Signature-256", "X-GitHub-Event", "X-GitHub-Delivery")
        return webhook_openapi(
            self.path,
            "GitHub webhooks, signed with the webhook's secret (X-Hub-Signature-256)",
            [],
            parameters=[
                {
                    "name": name,
                    "in": "header",
                    "required": name != "X-GitHub-Delivery",
                    "schema": {"type": "string"},
                }
                for name in headers
            ],
        )


def _payload(body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
    """The event: the JSON body, or the ``payload`` field of a form-encoded one."""
    content_type = (header(headers, "content-type") or "").lower()
    if content_type.startswith("application/x-www-form-urlencoded"):
        fields = parse_qs(body.decode("utf-8", "replace"))
        if not fields.get("payload"):
            raise WebhookError("a form-encoded GitHub delivery needs a payload field")
        body = fields["payload"][0].encode()
    return json_object(body)


def _name(value: Any, key: str) -> str | None:
    found = value.get(key) if isinstance(value, Mapping) else None
    return found if isinstance(found, str) and found else None


__all__ = ["GitHub"]
