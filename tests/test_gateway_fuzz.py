"""Fuzzing the gateway from its own OpenAPI document: no input makes it answer 5xx.

A real ``loom run`` process (memory broker and state, the offline model, every adapter the
settings can switch on) is driven by schemathesis, which generates requests for each
operation in ``GET /openapi.json`` and checks the answers against the document (status
codes and bodies it declares) and that none is a server error. Credentials are sent, so the
inputs reach validation instead of stopping at 401.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.integration.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "fuzz-token-0123456789"
SECRETS = {
    "LOOM_API_TOKEN": TOKEN,
    "LOOM_WEBHOOK_SECRET": "fuzz-webhook-secret",
    "LOOM_SLACK__SIGNING_SECRET": "fuzz-slack-signing-secret",
    "LOOM_SLACK__BOT_TOKEN": "xoxb-fuzz",
    "LOOM_SLACK__API_URL": "http://127.0.0.1:9/api/",
    "LOOM_WEBHOOKS__GITHUB_SECRET": "fuzz-github-secret",
    "LOOM_WEBHOOKS__MAPPINGS": '{"deploys": {"summary": "title", "session_id": "service"}}',
}


@pytest.fixture(scope="module")
def loom_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("fuzz") / "loom.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOM_")}
    env.update(SECRETS, LOOM_HTTP__PORT=str(port), LOOM_MODEL="test", PYTHONUNBUFFERED="1")
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "loom", "run"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"loom run exited:\n{log.read_text()[-5000:]}"
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"loom run not ready:\n{log.read_text()[-5000:]}"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(30)
    assert "Traceback" not in log.read_text(), log.read_text()[-5000:]


OPERATIONS = [
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /sessions/{session_id}",
    "POST /sessions/{session_id}/feedback",
    "POST /signals",
    "POST /slack/events",
    "POST /slack/interactions",
    "POST /webhooks/github",
    "POST /webhooks/alertmanager",
    "POST /webhooks/deploys",
]


@pytest.fixture(scope="module")
def loom_schema(loom_url: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{loom_url}/openapi.json")


def test_the_document_lists_every_inbound_route(loom_schema: schemathesis.BaseSchema) -> None:
    labels = {result.ok().label for result in loom_schema.get_all_operations()}
    assert set(OPERATIONS) <= labels


# schemathesis' pytest plugin (``from_fixture``) does not run on pytest 9, so each operation
# gets a plain hypothesis test over the strategy schemathesis builds for it.
WITHOUT_INPUT = {"GET /healthz", "GET /readyz", "GET /metrics"}
"""Operations that take input, so invalid input can be generated for them."""
CASES = [(label, GenerationMode.POSITIVE) for label in OPERATIONS] + [
    (label, GenerationMode.NEGATIVE) for label in OPERATIONS if label not in WITHOUT_INPUT
]


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_no_input_makes_the_gateway_fail(
    loom_schema: schemathesis.BaseSchema, label: str, mode: GenerationMode
) -> None:
    """Valid inputs get the answers the document declares; invalid ones a 4xx, never 5xx."""
    operation = loom_schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is missing from /openapi.json"

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=40,
        deadline=None,
        # CI replays a fixed set of examples; locally every run explores new ones.
        derandomize=os.environ.get("CI") == "true",
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})

    fuzz()
