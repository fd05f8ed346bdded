"""Small truths: the offline model's reply keeps real line breaks, the Slack warning says
what happens to replies, ``make bench`` runs every bench, and the tests' Redis comes from
one documented variable."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from loom import Agent, Model
from loom.adapters.registry import SlackSettings
from loom.adapters.slack import Slack
from loom.intake import Reply, UndeliverableReply

ROOT = Path(__file__).resolve().parents[1]


async def test_the_test_model_reply_keeps_real_line_breaks() -> None:
    result = await Agent(Model.test(call_tools=[])).run("deploy 42 failed\nsee the logs")
    assert "deploy 42 failed\nsee the logs" in result.output
    assert "\\n" not in result.output
    one_line = await Agent(Model.test(call_tools=[])).run("just talk")
    assert one_line.output == "test model reply to 'just talk'"  # unchanged


def slack(**secrets: str) -> Slack:
    return Slack(settings=SlackSettings(), api_url="http://127.0.0.1:9/api/", **secrets)


async def test_slack_without_a_bot_token_says_replies_are_dead_lettered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="loom")
    adapter = slack()
    assert adapter.routes(None) == []  # type: ignore[arg-type]
    [warning] = [r.getMessage() for r in caplog.records if "Slack" in r.getMessage()]
    assert "still posted" not in warning
    assert "dead-lettered at once" in warning
    assert "LOOM_SLACK__BOT_TOKEN" in warning
    # ...which is what happens: the reply is undeliverable, so it is not retried.
    with pytest.raises(UndeliverableReply, match="without a bot token"):
        await adapter.send_reply(Reply("slack:C1", "s", "run_1", "completed", "hi"))


def test_slack_with_a_bot_token_and_no_signing_secret_says_replies_are_posted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="loom")
    assert slack(bot_token="xoxb-1").routes(None) == []  # type: ignore[arg-type]
    [warning] = [r.getMessage() for r in caplog.records if "Slack" in r.getMessage()]
    assert "still posted" in warning


def test_make_bench_runs_every_bench() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^bench:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe is not None
    run = set(re.findall(r"bench/(\w+\.py)", recipe.group(1)))
    assert run == {path.name for path in (ROOT / "bench").glob("*.py")}


def test_the_tests_take_redis_from_one_documented_variable() -> None:
    hard_coded = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").rglob("*.py")
        if path.name not in ("services.py", Path(__file__).name)
        and "redis://127.0.0.1:6379" in path.read_text()
    ]  # the real Redis comes from require_redis(); other URLs in tests are parsed, not used
    assert hard_coded == []
    assert "LOOM_TEST_REDIS_URL" in (ROOT / "tests" / "services.py").read_text()
    assert "LOOM_TEST_REDIS_URL" in (ROOT / "README.md").read_text()
