"""Webhooks: ``POST /webhooks/{name}`` turns a JSON body into a RuntimeSignal.

``Webhook(name, mapping)`` maps the body with a ``SignalAdapter`` (or any callable from the
body to a signal); ``Webhook.from_settings`` builds one from a ``WebhookMapping`` of the
settings (dotted paths into the body). Every request is authenticated (a bearer token, or
an ``X-Loom-Signature``; see ``loom.intake.signing``), limited in size, and published
through the intake port (``AdapterContext.accept``): ``202`` once the broker confirmed,
``200`` for a ``dedupe_key`` already accepted, ``503`` when it was not accepted (broker or
state store down, the same key being accepted right now), ``422`` with a message saying
what is wrong.
``GitHub`` and ``Alertmanager`` are webhooks with their own checks and mappings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from loom.adapters.webhook_mapping import WebhookError, body_schema, signal_adapter
from loom.errors import validation_details
from loom.intake.adapter import Adapter
from loom.intake.auth import Credentials
from loom.intake.context import AdapterContext, HasContext, context_of
from loom.intake.http import error, inbound_body, parse_json
from loom.intake.openapi import answer, errors
from loom.signals import RuntimeSignal, SignalAdapter

if TYPE_CHECKING:
    from loom.adapters.webhook_settings import WebhookMapping

EventMapping = SignalAdapter | Callable[[dict[str, Any]], RuntimeSignal]
NAME_PATTERN = r"[a-z0-9][a-z0-9_-]{0,63}"


class Webhook(Adapter):
    """``POST /webhooks/{name}``: a JSON object mapped to a signal by ``mapping``.

    Credentials: ``token`` (default LOOM_API_TOKEN) as a bearer token, or an
    ``X-Loom-Signature`` made with ``secret`` (default LOOM_WEBHOOK_SECRET). Without an own
    credential and without LOOM_API_TOKEN the route is open, like ``POST /signals``.
    """

    def __init__(
        self,
        name: str,
        mapping: EventMapping | None = None,
        *,
        secret: str | None = None,
        token: str | None = None,
    ) -> None:
        if not re.fullmatch(NAME_PATTERN, name):
            raise ValueError(f"webhook name {name!r}: use a-z, 0-9, '_' and '-' (64 at most)")
        Credentials(token, secret, token_name=f"webhook {name}'s token")  # refuses a blank one
        self.webhook = name
        # One adapter per route: a Webhook("github") given in code replaces the built-in one.
        self.name = f"webhook:{name}"
        self.path = f"/webhooks/{name}"
        self.mapping: EventMapping = mapping or SignalAdapter(source=name, type="webhook")
        self.secret = secret
        self.token = token
        self.body_schema: dict[str, Any] = {"type": "object"}
        """The JSON schema of the body in ``/openapi.json``."""

    @classmethod
    def from_settings(cls, name: str, mapping: WebhookMapping) -> Webhook:
        """The webhook a ``[webhooks.mappings.NAME]`` settings section describes."""
        webhook = cls(
            name,
            signal_adapter(name, mapping),
            secret=_secret(mapping.secret),
            token=_secret(mapping.token),
        )
        webhook.body_schema = body_schema(mapping)
        return webhook

    # -- what subclasses change ---------------------------------------------------------
    def refusal(
        self, context: AdapterContext, headers: Mapping[str, str], body: bytes
    ) -> str | None:
        """Why the request is refused (401), or None."""
        credentials = Credentials(
            self.token or context.api_token,
            self.secret or context.webhook_secret,
            token_name="this webhook's token" if self.token else "LOOM_API_TOKEN",
        )
        return credentials.refusal(headers, body)

    def to_signal(self, body: bytes, headers: Mapping[str, str]) -> RuntimeSignal | Response:
        """The signal of an authenticated request, or a response of its own (a ping);
        raises ``WebhookError`` (or pydantic's ``ValidationError``) when the body does not
        map."""
        event = json_object(body)
        try:
            if isinstance(self.mapping, SignalAdapter):
                return self.mapping.adapt(event)
            return self.mapping(event)
        except (WebhookError, ValidationError):
            raise
        except (KeyError, IndexError, TypeError, ValueError) as problem:
            raise WebhookError(f"the body does not map to a signal: {problem!r}") from problem

    # -- the route ----------------------------------------------------------------------
    def routes(self, context: AdapterContext | HasContext) -> list[BaseRoute]:
        ctx = context_of(context)

        async def receive(request: Request) -> Response:
            body = await inbound_body(
                ctx, request, lambda body: self.refusal(ctx, request.headers, body)
            )
            if isinstance(body, Response):
                return body
            try:
                outcome = self.to_signal(body, request.headers)
            except WebhookError as problem:
                return error(problem.status, str(problem))
            except ValidationError as problem:
                return error(422, _describe(problem))
            if isinstance(outcome, Response):
                return outcome
            return await ctx.accept(outcome)

        return [Route(self.path, receive, methods=["POST"])]

    def openapi(self) -> dict[str, Any]:
        return webhook_openapi(
            self.path,
            f"Webhook {self.webhook!r}: a JSON object mapped to a signal",
            [{"bearer": []}, {"signature": []}],
            body_schema=self.body_schema,
        )


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a ``WebhookError`` saying what it is instead."""
    try:
        event = parse_json(body)
    except ValueError as problem:  # bad JSON, nested too deep, or not UTF-8
        raise WebhookError(f"the body is not JSON: {problem}") from problem
    if not isinstance(event, dict):
        raise WebhookError(f"the body must be a JSON object, not {type(event).__name__}")
    return event


def webhook_openapi(
    path: str,
    summary: str,
    security: list[dict[str, list[str]]],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body_schema: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The OpenAPI path item of a webhook route."""
    accepted = {"type": "object", "required": ["status"]}
    responses = {
        "202": answer("Accepted: the broker confirmed the signal.", accepted),
        "200": answer("Already accepted (same dedupe key), or answered without a signal."),
        **errors(400, 401, 413, 422, 503),
    }
    return {
        path: {
            "post": {
                "summary": summary,
                "security": security,
                **({"parameters": parameters} if parameters else {}),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": body_schema or {"type": "object"}}},
                },
                "responses": responses,
            }
        }
    }


def _describe(problem: ValidationError) -> str:
    return f"the body maps to an invalid signal: {validation_details(problem, root='signal')}"


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


__all__ = ["EventMapping", "Webhook", "WebhookError", "json_object", "webhook_openapi"]
