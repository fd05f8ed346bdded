"""Inbound authentication, decided in one place: ``Credentials``.

Every inbound route that does not follow an outside service's own scheme (GitHub's and
Slack's signatures stay in their adapters) asks ``Credentials.refusal`` whether to let a
request in: ``POST /signals``, the webhooks, Alertmanager, the sessions API and feedback.
With no credential configured the routes are open (development mode; the daemon then
refuses to listen beyond loopback). A blank credential is never "none": settings refuse
it at start, and ``Credentials`` refuses it when given in code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from loom.intake.signing import authenticate, bearer


@dataclass(frozen=True, slots=True)
class Credentials:
    """The bearer ``token`` and the signing ``secret`` a route accepts (None: not set);
    ``token_name`` names the token's setting in refusals."""

    token: str | None = None
    secret: str | None = None
    token_name: str = "LOOM_API_TOKEN"

    def __post_init__(self) -> None:
        for what, value in ((self.token_name, self.token), ("the signing secret", self.secret)):
            if value is not None and not value.strip():
                raise ValueError(f"{what} is blank: set a value, or leave it unset")

    @property
    def open(self) -> bool:
        """No credential is configured: every request is let in (development mode)."""
        return self.token is None and self.secret is None

    def signed_only(self, headers: Mapping[str, str]) -> bool:
        """Whether a request let in came by its signature alone (no valid bearer token): a
        signature covers the body, not the path, which a route may need to make up for."""
        if self.open:
            return False
        return self.token is None or not bearer(headers, self.token)

    def refusal(self, headers: Mapping[str, str], body: bytes | None) -> str | None:
        """Why the request is refused (a 401's reason), or None to let it in. ``body`` is
        None for a request without one (a GET): only the bearer token authenticates it,
        since a signature covers a body."""
        if self.open:
            return None
        if body is not None:
            return authenticate(
                headers, body, token=self.token, secret=self.secret, token_name=self.token_name
            )
        if self.token is None:
            return (
                f"this route needs a bearer token ({self.token_name}): a signature "
                "(LOOM_WEBHOOK_SECRET) authenticates only requests with a body"
            )
        if not bearer(headers, self.token):
            return f"missing or wrong bearer token ({self.token_name})"
        return None


__all__ = ["Credentials"]
