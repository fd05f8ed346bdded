"""The OpenAPI document of a Loom process (``GET /openapi.json``).

Written out rather than generated from docstrings: every route's request and answers are
part of the public contract, and the fuzz tests (tests/test_gateway_fuzz.py) drive the
gateway from this document, so it has to say exactly what the code accepts. Adapters add
their routes' paths through ``Adapter.openapi()``, made of the pieces in ``loom.intake.openapi``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from loom._version import __version__
from loom.adapters.registry import known_reply_prefixes
from loom.intake.adapter import Adapter
from loom.intake.admission import reply_prefixes
from loom.intake.openapi import ERROR, answer, errors
from loom.signals import SAYS_SOMETHING, SESSION_ID_PATTERN, VISIBLE, RuntimeSignal

SESSION_PARAMETER = {
    "name": "session_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": SESSION_ID_PATTERN},
}


def _signal_body(adapters: Sequence[Adapter]) -> dict[str, Any]:
    """A RuntimeSignal the gateway accepts: it says something (``SAYS_SOMETHING``) and its
    reply_to, if any (an empty one is none), begins the way an address does that one of
    the adapters here, or one Loom's adapters deliver once configured, delivers to."""
    known = reply_prefixes(adapters, known_reply_prefixes())
    prefixes = "|".join(re.escape(prefix) for prefix in known)
    address: dict[str, Any] = (
        {"type": "string", "pattern": f"^(?:$|{prefixes})"}
        if prefixes
        else {"type": "string", "maxLength": 0}
    )
    deliverable = {"properties": {"reply_to": {"anyOf": [{"type": "null"}, address]}}}
    return {"allOf": [{"$ref": "#/components/schemas/RuntimeSignal"}, SAYS_SOMETHING, deliverable]}


def _signal_paths(adapters: Sequence[Adapter]) -> dict[str, Any]:
    accepted = {
        "type": "object",
        "required": ["id", "status"],
        "properties": {"id": {"type": "string"}, "status": {"enum": ["accepted", "duplicate"]}},
    }
    return {
        "/signals": {
            "post": {
                "summary": "Publish a RuntimeSignal (JSON) or a CloudEvent (structured/binary)",
                "security": [{"bearer": []}, {"signature": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _signal_body(adapters)},
                        "application/cloudevents+json": {
                            "schema": {"$ref": "#/components/schemas/CloudEvent"}
                        },
                    },
                },
                "responses": {
                    "202": answer("Accepted: the broker confirmed it.", accepted),
                    "200": answer("A signal with this dedupe_key was already accepted.", accepted),
                    **errors(401, 413, 422, 503),
                },
            }
        }
    }


def _feedback_paths() -> dict[str, Any]:
    score = {"type": "number", "minimum": -1, "maximum": 1}
    feedback = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "score": score,
            "value": {"enum": ["up", "down"]},
            "comment": {"type": "string", "maxLength": 2000},
            "run_id": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,128}$"},
        },
        # A score, a thumb, or both when they agree.
        "anyOf": [{"required": ["score"]}, {"required": ["value"]}],
        "allOf": [
            {
                "if": {"required": ["value"], "properties": {"value": {"const": "up"}}},
                "then": {"properties": {"score": {"minimum": 0}}},
            },
            {
                "if": {"required": ["value"], "properties": {"value": {"const": "down"}}},
                "then": {"properties": {"score": {"maximum": 0}}},
            },
        ],
    }
    recorded = {
        "type": "object",
        "required": ["id", "status"],
        "properties": {"id": {"type": "string"}, "status": {"const": "accepted"}},
    }
    return {
        "/sessions/{session_id}/feedback": {
            "post": {
                "summary": "Explicit feedback on a session or one of its runs",
                "security": [{"bearer": []}],
                "parameters": [SESSION_PARAMETER],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": feedback}},
                },
                "responses": {
                    "202": answer("Recorded in the feedback stream.", recorded),
                    "409": answer("Feedback is turned off.", ERROR),
                    **errors(400, 401, 404, 413, 422, 503),
                },
            }
        }
    }


def _approval_paths() -> dict[str, Any]:
    decision = {
        "type": "object",
        "required": ["decision"],
        "additionalProperties": False,
        "properties": {
            "decision": {"enum": ["approve", "deny"]},
            "message": {"type": ["string", "null"], "maxLength": 4000},
            "digest": {"type": ["string", "null"], "maxLength": 200},
            "by": {"type": ["string", "null"], "minLength": 1, "maxLength": 200},
        },
    }
    approval_id = {
        "name": "approval_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    return {
        "/sessions/{session_id}/approvals/{approval_id}": {
            "post": {
                "summary": "Approve or deny a tool call a run waits for",
                "security": [{"bearer": []}, {"signature": []}],
                "parameters": [SESSION_PARAMETER, approval_id],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": decision}},
                },
                "responses": {
                    "200": answer(
                        "Decided (or the same decision was taken before).",
                        {
                            "type": "object",
                            "required": ["approval"],
                            "properties": {"approval": {"type": "object"}},
                        },
                    ),
                    "409": answer("Wrong digest, or already decided otherwise.", ERROR),
                    "410": answer("The approval expired.", ERROR),
                    **errors(400, 401, 404, 413, 422, 503),
                },
            }
        }
    }


def _process_paths() -> dict[str, Any]:
    return {
        "/healthz": {
            "get": {
                "summary": "Liveness: the process runs",
                "security": [],
                "responses": {"200": answer("Alive.", {"type": "object"})},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: consuming, broker and state reachable",
                "security": [],
                "responses": {
                    "200": answer("Ready.", {"type": "object"}),
                    "503": answer("Not ready; the checks say why.", {"type": "object"}),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text exposition format)",
                "security": [],
                "responses": {"200": {"description": "Metrics.", "content": {"text/plain": {}}}},
            }
        },
        "/sessions/{session_id}": {
            "get": {
                "summary": "A session: pending signals, risks, decisions, runs, last reply",
                "security": [{"bearer": []}],
                "parameters": [SESSION_PARAMETER],
                "responses": {
                    "200": answer("The session.", {"type": "object"}),
                    **errors(400, 401, 404),
                },
            }
        },
    }


CLOUDEVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["specversion", "id", "source", "type"],
    "properties": {
        "specversion": {"const": "1.0"},
        # Not whitespace alone: they become the signal's id, source and type.
        "id": {"type": "string", "minLength": 1, "pattern": VISIBLE},
        "source": {"type": "string", "minLength": 1, "pattern": VISIBLE},
        "type": {"type": "string", "minLength": 1, "pattern": VISIBLE},
        "subject": {"type": "string"},
        "time": {"type": "string", "format": "date-time"},
        "datacontenttype": {"type": "string"},
        "dataschema": {"type": "string"},
        "data": {},
        "data_base64": {"type": "string"},
        "loomsession": {"type": "string", "pattern": SESSION_ID_PATTERN},
        "loomurgency": {"enum": ["low", "normal", "high", "critical"]},
    },
    "patternProperties": {"^[a-z0-9]{1,64}$": {"type": ["string", "integer", "boolean"]}},
    "additionalProperties": False,
    "not": {"required": ["data", "data_base64"]},
}


def build_openapi(adapters: Sequence[Adapter], *, gateway: bool) -> dict[str, Any]:
    """The document for one process: its common routes, plus the inbound ones on a gateway."""
    paths = _process_paths()
    if gateway:
        paths.update(_signal_paths(adapters))
        paths.update(_feedback_paths())
        paths.update(_approval_paths())
        for adapter in adapters:
            paths.update(adapter.openapi())
    signal_schema = RuntimeSignal.model_json_schema(ref_template="#/components/schemas/{model}")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Loom",
            "version": __version__,
            "description": "Signals in, agent work out: the HTTP surface of a Loom process.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "RuntimeSignal": signal_schema,
                "CloudEvent": CLOUDEVENT_SCHEMA,
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "LOOM_API_TOKEN"},
                "signature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Loom-Signature",
                    "description": "HMAC-SHA256 with LOOM_WEBHOOK_SECRET (docs/webhooks.md)",
                },
            },
        },
    }


__all__ = ["answer", "build_openapi", "errors"]
