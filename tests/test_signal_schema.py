"""The published RuntimeSignal JSON schema matches the model."""

from __future__ import annotations

import json
from pathlib import Path

from loom.signals import RuntimeSignal

SCHEMA = Path(__file__).parent.parent / "docs" / "runtime-signal.v1.schema.json"


def test_published_schema_is_current() -> None:
    published = json.loads(SCHEMA.read_text())
    assert published == RuntimeSignal.json_schema(), (
        "docs/runtime-signal.v1.schema.json is stale: regenerate it with "
        "RuntimeSignal.json_schema()"
    )


def test_schema_names_every_wire_field() -> None:
    fields = set(json.loads(SCHEMA.read_text())["properties"])
    assert fields == {
        "version", "id", "source", "type", "summary", "urgency", "payload", "session_id",
        "run_id", "dedupe_key", "reply_to", "observed_at", "expires_at",
    }  # fmt: skip
