"""OpenAPI pieces for the path items adapters add to ``GET /openapi.json``.

The gateway's document (``loom.daemon.openapi``) is built from the same pieces, so an
adapter's answers look like the gateway's own.
"""

from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/schemas/Error"}
"""The ``{"error": message}`` body of every error answer."""

REASONS = {
    400: "Malformed request.",
    401: "Missing or wrong credentials.",
    404: "Not found.",
    413: "Body larger than the limit (LOOM_HTTP__MAX_BODY_BYTES).",
    415: "Unsupported content type.",
    422: "The body is not valid; the message says what is wrong.",
    503: "Not accepted now (broker unreachable or shutting down); retry.",
}


def answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """One response object; JSON with ``schema`` when given."""
    response: dict[str, Any] = {"description": description}
    if schema is not None:
        response["content"] = {"application/json": {"schema": schema}}
    return response


def errors(*statuses: int) -> dict[str, Any]:
    """Error answers, each a JSON ``{"error": message}``."""
    return {str(status): answer(REASONS[status], ERROR) for status in statuses}


__all__ = ["ERROR", "REASONS", "answer", "errors"]
