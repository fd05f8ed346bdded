"""The intake port and the adapter context: what adapters get instead of the Daemon, the
old import paths, and which way the imports between adapters, intake and daemon go."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
from starlette.responses import JSONResponse

from loom import Agent, Model, RuntimeSignal
from loom.broker.memory import MemoryBroker
from loom.daemon.app import Daemon
from loom.daemon.settings import Settings
from loom.intake import Adapter, AdapterContext, Intake, context_of
from loom.state import MemoryState
from loom.wire import ATTENTION_QUEUE, TOPOLOGY

LOOM = Path(__file__).resolve().parent.parent / "loom"


class Host:
    def __init__(self) -> None:
        self.state = MemoryState()
        self.broker = MemoryBroker(topology=TOPOLOGY)
        self.draining = False


async def test_the_context_reads_state_broker_and_draining_from_its_host_at_each_use() -> None:
    host = Host()
    context = AdapterContext(host, max_body_bytes=2048, runtime_timeout=30.0)
    assert context.state is host.state
    assert context.broker is host.broker
    assert not context.draining
    host.state, host.draining = MemoryState(), True
    assert context.state is host.state
    assert context.draining
    assert (context.max_body_bytes, context.runtime_timeout) == (2048, 30.0)


async def test_the_intake_accepts_once_per_dedupe_key_and_publishes_confirmed() -> None:
    host = Host()
    await host.broker.start()
    intake = Intake(host, publish_timeout=1.0, dedupe_ttl=60.0)
    signal = RuntimeSignal.create("disk full", dedupe_key="disk:1")
    first = await intake.accept(signal)
    again = await intake.accept(RuntimeSignal.create("disk full", dedupe_key="disk:1"))
    assert first.status_code == 202
    assert again.status_code == 200
    assert json.loads(bytes(again.body)) == {"id": signal.id, "status": "duplicate"}
    await intake.publish(RuntimeSignal.create("no key"))
    assert await host.broker.queue_depth(ATTENTION_QUEUE) == 2
    await host.broker.close()


@pytest.mark.parametrize(
    "signal_id", ["sig_0123456789abcdef", 'say "hi" \\ there', "\u2603 snow", "a" * 128]
)
async def test_the_answer_to_an_accepted_signal_is_the_json_response_it_was(
    signal_id: str,
) -> None:
    host = Host()
    await host.broker.start()
    signal = RuntimeSignal(id=signal_id, summary="disk full")
    answer = await Intake(host, publish_timeout=1.0, dedupe_ttl=60.0).accept(signal)
    await host.broker.close()
    expected = JSONResponse({"id": signal_id, "status": "accepted"}, status_code=202)
    assert answer.status_code == 202
    assert bytes(answer.body) == bytes(expected.body)
    assert answer.raw_headers == expected.raw_headers
    assert json.loads(bytes(answer.body)) == {"id": signal_id, "status": "accepted"}


def test_a_daemon_hands_adapters_its_context() -> None:
    daemon = Daemon(Agent(Model.test()), settings=Settings(api_token="tok", webhook_secret="s"))
    context = daemon.adapter_context
    assert context_of(daemon) is context
    assert context_of(context) is context
    assert (context.api_token, context.webhook_secret) == ("tok", "s")
    assert context.publish_timeout == daemon.settings.publish_timeout
    assert context.lease_ttl == daemon.settings.worker.lease_ttl
    assert context.runtime_timeout == daemon.agent.runtime.timeout
    assert context.section("http", type(daemon.settings.http)) is daemon.settings.http
    assert context.section("http", dict) is None
    assert context.section("nothing", object) is None


async def test_an_adapter_written_against_the_daemon_still_starts() -> None:
    seen: dict[str, Any] = {}

    class Old(Adapter):
        name = "old"

        @property
        def scheduled(self) -> bool:
            return True

        async def start(self, daemon: Any) -> None:
            seen["timeout"] = daemon.settings.publish_timeout
            seen["state"] = await daemon.state.ping()
            seen["broker"] = await daemon.broker.ping()

    daemon = Daemon(Agent(Model.test()), adapters=[Old()], settings=Settings())
    await daemon.start(["scheduler"])
    await daemon.stop()
    assert seen == {"timeout": 10.0, "state": True, "broker": True}


def test_the_old_import_paths_still_work() -> None:
    import loom.adapters.base as base
    import loom.adapters.cloudevents as old_cloudevents
    import loom.adapters.signing as old_signing
    import loom.daemon.intake as old_intake
    import loom.intake.cloudevents as cloudevents
    import loom.intake.signing as signing
    from loom.adapters import Reply, Slack
    from loom.adapters.slack_settings import SlackSettings
    from loom.daemon.http import accept, error, read_body
    from loom.daemon.settings import (
        CronJobSettings,
        HeartbeatSettings,
        ProbeSettings,
        WebhookMapping,
        WebhookSettings,
    )
    from loom.daemon.settings import SlackSettings as OldSlackSettings
    from loom.intake import Reply as IntakeReply

    assert base.Adapter is Adapter
    assert base.Reply is Reply is IntakeReply
    assert old_signing.verify is signing.verify
    assert old_signing.SignatureError
    assert old_cloudevents.signal_from_cloudevent is cloudevents.signal_from_cloudevent
    assert accept is old_intake.accept
    assert error is old_intake.error
    assert read_body is old_intake.read_body
    assert OldSlackSettings is SlackSettings
    assert Slack.name == "slack"
    assert {CronJobSettings, HeartbeatSettings, ProbeSettings, WebhookMapping, WebhookSettings}


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, type-only and in-function imports included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("package", ["adapters", "intake"])
def test_adapters_and_intake_never_import_the_daemon(package: str) -> None:
    for path in sorted((LOOM / package).glob("*.py")):
        upward = sorted(m for m in _imports(path) if m.startswith("loom.daemon"))
        assert not upward, f"{path.name} imports {upward}"


def test_the_daemon_imports_only_the_adapter_table_of_the_adapters() -> None:
    for path in sorted((LOOM / "daemon").glob("*.py")):
        names = _imports(path)
        adapters = {m.rsplit(".", 1)[0] for m in names if m.startswith("loom.adapters")}
        assert adapters <= {"loom.adapters.registry"}, f"{path.name} imports {adapters}"
        assert "loom.adapters" not in names, path.name


def test_the_intake_imports_no_adapter() -> None:
    for path in sorted((LOOM / "intake").glob("*.py")):
        assert not [m for m in _imports(path) if m.startswith("loom.adapters")], path.name
