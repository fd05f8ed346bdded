"""Who may use the console: the API token, as a bearer header or a signed login cookie, and
the checks every action (a POST) passes: a CSRF token bound to the login and the Origin.

The keys are derived from the API token, so changing the token ends every login. The cookie
is HttpOnly and SameSite=Strict, scoped to ``/console``; it carries only the operator's name
and an expiry, signed with HMAC-SHA256. Every comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "loom_console"
OPERATOR_PATTERN = r"^[A-Za-z0-9_.@ -]{1,64}$"
"""An operator's name, as the login form takes it and the logs show it."""
BEARER_OPERATOR = "api-token"
"""Who a request authenticated by the bearer header is, in the logs."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ConsoleAuth:
    """Logins and CSRF tokens of one console; ``token`` is the API token (never empty)."""

    def __init__(self, token: str, *, login_ttl: float) -> None:
        if not token:
            raise ValueError("the console needs a non-empty API token")
        self._token = token.encode()
        self._key = hmac.new(self._token, b"loom console login v1", hashlib.sha256).digest()
        self._csrf_key = hmac.new(self._token, b"loom console csrf v1", hashlib.sha256).digest()
        self.login_ttl = login_ttl

    def token_matches(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self._token)

    def login_cookie(self, operator: str, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.login_ttl)
        payload = _b64(json.dumps({"who": operator, "exp": expires}).encode())
        return f"{payload}.{self._sign(payload)}"

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def _cookie_operator(self, value: str, now: float) -> str | None:
        payload, _, signature = value.partition(".")
        if not signature or not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            data = json.loads(_unb64(payload))
            who, expires = str(data["who"]), float(data["exp"])
        except (ValueError, KeyError, TypeError):
            return None
        return who if expires > now and re.fullmatch(OPERATOR_PATTERN, who) else None

    def operator(self, request: Request) -> str | None:
        """Who makes the request: the bearer token's holder or a logged-in operator."""
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credential:
            return BEARER_OPERATOR if self.token_matches(credential.strip()) else None
        cookie = request.cookies.get(COOKIE)
        return None if cookie is None else self._cookie_operator(cookie, time.time())

    def csrf_token(self, request: Request) -> str:
        """The token every form of this login carries (bound to the login cookie)."""
        cookie = request.cookies.get(COOKIE, "")
        return _b64(hmac.new(self._csrf_key, cookie.encode(), hashlib.sha256).digest())

    def action_refusal(self, request: Request, form_token: str | None) -> str | None:
        """Why a POST is refused, or None: a cross-site Origin, or (for a cookie login) a
        missing or wrong CSRF token. A bearer request carries no cookie a browser could
        send on its own, so it needs no CSRF token."""
        refused = origin_refusal(request)
        if refused is not None:
            return refused
        if request.headers.get("authorization", "").lower().startswith("bearer "):
            return None
        if not form_token or not hmac.compare_digest(form_token, self.csrf_token(request)):
            return "missing or wrong CSRF token: reload the page and try again"
        return None

    def set_login(self, response: Response, request: Request, operator: str) -> None:
        response.set_cookie(
            COOKIE,
            self.login_cookie(operator),
            max_age=int(self.login_ttl),
            path="/console",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    @staticmethod
    def clear_login(response: Response) -> None:
        response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict")


def origin_refusal(request: Request) -> str | None:
    """A browser names the page a POST comes from in ``Origin``: it must be this host. A
    request without one (not a browser's form) passes on its other checks."""
    origin = request.headers.get("origin")
    if origin is None:
        site = request.headers.get("sec-fetch-site")
        return None if site in (None, "same-origin", "none") else f"cross-site request ({site})"
    host = request.headers.get("host", "")
    if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
        return f"cross-site request refused (Origin {origin[:100]!r} is not {host[:100]!r})"
    return None


__all__ = ["BEARER_OPERATOR", "COOKIE", "OPERATOR_PATTERN", "ConsoleAuth", "origin_refusal"]
