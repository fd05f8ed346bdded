"""Signed requests: HMAC-SHA256 over a timestamp and the body, both ways.

The scheme (inbound on ``POST /signals`` and ``/webhooks/{name}``, outbound on callbacks)::

    X-Loom-Timestamp: 1767225600      Unix seconds when the request was signed
    X-Loom-Signature: sha256=<hex>    inbound:   HMAC-SHA256(secret, f"{timestamp}." + body)
                                      callbacks: HMAC-SHA256(secret,
                                                     f"loom-callback.{timestamp}." + body)

One secret (LOOM_WEBHOOK_SECRET) does both jobs, so the two directions sign different
strings: a callback's receiver holds a signed body, and without the ``loom-callback.``
prefix it could send that body and its headers straight back to the gateway as an
authenticated signal. The signature covers the exact bytes of the body, so verify before
parsing. A timestamp more than five minutes away from the receiver's clock is refused, which
bounds how long a captured request can be replayed (a ``dedupe_key`` makes replays within
the window harmless). Comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping

from loom.errors import LoomError

SIGNATURE_HEADER = "x-loom-signature"
TIMESTAMP_HEADER = "x-loom-timestamp"
TOLERANCE = 300.0
"""Seconds a signed request's timestamp may differ from the receiver's clock."""
CALLBACK_CONTEXT = "loom-callback"
"""What callbacks sign in front of the timestamp, so they never verify as inbound requests."""
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # ASCII digits only: "²".isdigit() is True too


class SignatureError(LoomError):
    """A signature is missing, malformed, stale or does not match; the message says which."""


def hmac_sha256(secret: str | bytes, message: bytes) -> str:
    """The hex HMAC-SHA256 of ``message`` (GitHub's ``X-Hub-Signature-256`` is this)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def same(expected: str, given: str) -> bool:
    """Constant-time string comparison."""
    return hmac.compare_digest(expected.encode(), given.encode())


def signature(secret: str | bytes, timestamp: int | str, body: bytes, *, context: str = "") -> str:
    """The ``X-Loom-Signature`` value of ``body`` signed at ``timestamp``; ``context``
    (``CALLBACK_CONTEXT`` for callbacks) goes in front, so one direction's signatures are
    worthless in the other."""
    prefix = f"{context}.{timestamp}." if context else f"{timestamp}."
    return "sha256=" + hmac_sha256(secret, prefix.encode() + body)


def sign(
    secret: str | bytes, body: bytes, *, now: float | None = None, context: str = ""
) -> dict[str, str]:
    """The headers that sign ``body`` now (as an inbound request unless ``context``)."""
    timestamp = int(time.time() if now is None else now)
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body, context=context),
    }


def sign_callback(secret: str | bytes, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """The headers that sign a callback's ``body`` now."""
    return sign(secret, body, now=now, context=CALLBACK_CONTEXT)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name (Starlette and httpx headers already are)."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def verify(
    secret: str | bytes,
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: float | None = None,
    tolerance: float = TOLERANCE,
    context: str = "",
) -> None:
    """Raise ``SignatureError`` unless ``headers`` sign ``body`` with ``secret``, recently
    (an inbound request; a callback's receiver uses ``verify_callback``)."""
    given = header(headers, SIGNATURE_HEADER)
    stamp = header(headers, TIMESTAMP_HEADER)
    if not given:
        raise SignatureError("no X-Loom-Signature header")
    if not stamp:
        raise SignatureError("X-Loom-Signature needs an X-Loom-Timestamp header (Unix seconds)")
    stamp = stamp.strip()
    # Checked before int(): a long or non-ASCII number must be a 401, not a 500.
    if not _TIMESTAMP.fullmatch(stamp):
        raise SignatureError(
            f"X-Loom-Timestamp must be Unix seconds (1 to 12 ASCII digits), not {stamp[:40]!r}"
        )
    skew = abs((time.time() if now is None else now) - int(stamp))
    if skew > tolerance:
        raise SignatureError(
            f"X-Loom-Timestamp is {skew:.0f} s away from this server's clock (at most "
            f"{tolerance:.0f} s allowed): a replayed request, or a sender with a wrong clock"
        )
    if not same(signature(secret, stamp, body, context=context), given.strip()):
        raise SignatureError("X-Loom-Signature does not match the body (wrong secret?)")


def verify_callback(
    secret: str | bytes,
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: float | None = None,
    tolerance: float = TOLERANCE,
) -> None:
    """``verify`` for the receiver of a callback: raise ``SignatureError`` unless Loom signed
    ``body`` as a callback with ``secret``, recently."""
    verify(secret, body, headers, now=now, tolerance=tolerance, context=CALLBACK_CONTEXT)


def bearer(headers: Mapping[str, str], token: str) -> bool:
    """True when the ``Authorization`` header carries ``token`` as a bearer token."""
    scheme, _, given = (header(headers, "authorization") or "").partition(" ")
    return scheme.lower() == "bearer" and same(token, given.strip())


def authenticate(
    headers: Mapping[str, str],
    body: bytes | None,
    *,
    token: str | None,
    secret: str | None,
    token_name: str = "LOOM_API_TOKEN",
) -> str | None:
    """Why the request is refused, or None: it carries ``token`` as a bearer token, or (when
    ``secret`` is set and the body is given) a valid ``X-Loom-Signature``. A request that
    names a signature is judged by it, so its error says what is wrong with it."""
    if token is not None and bearer(headers, token):
        return None
    if secret is not None and body is not None and header(headers, SIGNATURE_HEADER):
        try:
            verify(secret, body, headers)
        except SignatureError as problem:
            return str(problem)
        return None
    if token is None and secret is None:
        return None
    wants = [f"a bearer token ({token_name})"] if token is not None else []
    if secret is not None:
        wants.append("an X-Loom-Signature (see docs/webhooks.md)")
    return f"unauthorized: send {' or '.join(wants)}"


__all__ = [
    "CALLBACK_CONTEXT",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "TOLERANCE",
    "SignatureError",
    "authenticate",
    "bearer",
    "hmac_sha256",
    "same",
    "sign",
    "sign_callback",
    "signature",
    "verify",
    "verify_callback",
]
