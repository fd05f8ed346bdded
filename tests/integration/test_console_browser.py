"""The operator console in a real headless Chromium (Debian's ``chromium``, driven by
Playwright) against a daemon on RabbitMQ and Redis: log in, watch a session appear live
after ``POST /signals``, read a run's transcript, approve with a click and see the run
complete, replay a dead letter; hostile text renders as text (no script runs); without
the token only the login page is served and a cross-site POST is refused. The tests take
the screenshots docs/console.md shows: into a temporary folder, or into docs/console/ with
``LOOM_UPDATE_SCREENSHOTS=1`` (so an ordinary run leaves the tracked pictures alone)."""

from __future__ import annotations

import http.server
import os
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loom import RuntimeSignal
from loom.broker.base import Message
from loom.wire import ATTENTION_QUEUE, WORK_QUEUE
from tests.integration.conftest import ROOT, Cluster, Proc
from tests.polling import eventually

playwright_api = pytest.importorskip("playwright.async_api")

APP = "tests.integration.console_app:daemon"
TOKEN = "console-browser-token"
CHROMIUM = "/usr/bin/chromium"
DOCS_SHOTS = ROOT / "docs" / "console"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000

pytestmark = pytest.mark.slow


def chromium() -> str:
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package")
    found = shutil.which("chromium")
    if found is None:
        pytest.skip("no chromium: apt-get install -y --no-install-recommends chromium")
    return found


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    executable = chromium()
    async with playwright_api.async_playwright() as driver:
        launched = await driver.chromium.launch(executable_path=executable, args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def serve(cluster: Cluster) -> Proc:
    proc = cluster.start("run", app=APP, LOOM_API_TOKEN=TOKEN, LOOM_CONSOLE__POLL="0.2")
    await cluster.wait_ready(proc)
    return proc


async def new_page(browser: Any) -> tuple[Any, Any, list[str]]:
    """A fresh context (no cookie) and page; dialogs (an ``alert``) are recorded."""
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    dialogs: list[str] = []

    async def dismiss(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", dismiss)
    return context, page, dialogs


async def log_in(page: Any, proc: Proc) -> None:
    await page.goto(f"{proc.url}/console/")
    assert page.url.endswith("/console/login")
    await page.fill("#operator", "alice")
    await page.fill("#token", TOKEN)
    await page.click("#login")
    await page.wait_for_url("**/console/sessions")


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where the screenshots go: docs/console/ only when asked to update them."""
    folder = DOCS_SHOTS if os.environ.get("LOOM_UPDATE_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def shot(page: Any, folder: Path, name: str) -> None:
    await page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


async def post_signal(proc: Proc, summary: str, session: str, **fields: Any) -> None:
    body = {"summary": summary, "session_id": session, "source": "webhook", **fields}
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(
            f"{proc.url}/signals", json=body, headers={"authorization": f"Bearer {TOKEN}"}
        )
    assert answer.status_code == 202, answer.text


async def test_operator_console_in_a_browser(cluster: Cluster, browser: Any, shots: Path) -> None:
    proc = await serve(cluster)
    context, page, dialogs = await new_page(browser)
    await log_in(page, proc)

    # A session appears live (server-sent events), without a reload.
    await page.wait_for_selector("#live")
    marker = await page.evaluate("() => { window.__same_page = 1; return 1; }")
    await post_signal(proc, "<script>window.__xss=3</script> disk html", "web-1", urgency="high")
    row = page.locator('tr.session-row[data-session="web-1"]')
    await row.wait_for()
    assert await page.evaluate("() => window.__same_page") == marker  # not reloaded
    assert "<script>window.__xss=3</script>" in await row.inner_text()  # as text
    await eventually(lambda: _run_status(cluster, "web-1", "completed"), "the run to end",
                     timeout=60)  # fmt: skip
    await page.locator('tr.session-row[data-session="web-1"] .status.completed').wait_for()
    await shot(page, shots, "sessions")

    # The session, and its run's transcript: the model's HTML answer is text.
    await page.click('tr.session-row[data-session="web-1"] a')
    await page.wait_for_selector("#session-id")
    assert "<script>window.__xss=3</script>" in await page.inner_text("table.decisions")
    await shot(page, shots, "session")
    await page.click("tr.run-row a")
    await page.wait_for_selector("#run-output")
    output = await page.inner_text("#run-output")
    assert output.startswith('<img src=x onerror="window.__xss=1"><script>')
    transcript = await page.inner_text("ol.transcript")
    assert "disk html" in transcript
    assert await page.locator("ol.transcript img, ol.transcript script, #run-output b").count() == 0
    await shot(page, shots, "run")

    # Approve with a click; the approvals page updates live and the run completes.
    await page.goto(f"{proc.url}/console/approvals")
    await page.wait_for_selector("#no-approvals")
    await post_signal(proc, "please restart api", "ops-1")
    approval = page.locator("article.approval")
    await approval.wait_for()
    assert '"service": "api"' in await approval.locator("pre.arguments").inner_text()
    await shot(page, shots, "approvals")
    await approval.locator("input[name=message]").fill("go ahead")
    await approval.locator("button.approve").click()
    await page.wait_for_selector("#notice")
    checkpoint_gone = await eventually(
        lambda: _run_status(cluster, "ops-1", "completed"), "the approved run", timeout=60
    )
    assert checkpoint_gone
    await page.goto(f"{proc.url}/console/session?id=ops-1")
    await page.click("tr.run-row a")
    assert await page.inner_text("#run-status") == "completed"
    assert "api restarted" in await page.inner_text("#run-output")
    snapshot = await cluster.state.sessions.load("ops-1")
    assert snapshot is not None
    assert snapshot.runs[-1].metadata  # the run carries what it handled

    # A dead letter is replayed with a click; its signal is then decided and run.
    letter = RuntimeSignal.create("replayed <i>letter</i>", session_id="dl-1")
    message = Message(letter.model_dump_json().encode(), {}, letter.id)
    await cluster.broker.dead_letter(message, ATTENTION_QUEUE, "gave up <b>early</b>")
    await page.goto(f"{proc.url}/console/dead-letters")
    row = page.locator(f'tr.letter[data-message="{letter.id}"]')
    await row.wait_for()
    assert "gave up <b>early</b>" in await row.inner_text()
    await shot(page, shots, "dead-letters")
    await row.locator("button.replay").click()
    await page.wait_for_selector("#notice")
    await eventually(lambda: _run_status(cluster, "dl-1", "completed"), "the replayed signal",
                     timeout=60)  # fmt: skip
    assert await page.locator(f'tr.letter[data-message="{letter.id}"]').count() == 0

    await page.goto(f"{proc.url}/console/system")
    work = await page.inner_text(f'table.queues tr:has(td:text-is("{WORK_QUEUE}"))')
    assert work.split("\t")[1:3] == ["worker", "1"]  # the one process's worker consumes
    await shot(page, shots, "system")

    # No script ran anywhere.
    assert await page.evaluate("() => window.__xss") is None
    assert dialogs == []
    await context.close()


async def test_without_the_token_only_the_login_page_and_no_cross_site_post(
    cluster: Cluster, browser: Any, tmp_path: Path, shots: Path
) -> None:
    proc = await serve(cluster)
    context, page, _ = await new_page(browser)
    for path in ("/console/sessions", "/console/approvals", "/console/dead-letters"):
        await page.goto(f"{proc.url}{path}")
        assert page.url.endswith("/console/login")
        assert await page.locator("#token").count() == 1
    await page.fill("#operator", "mallory")
    await page.fill("#token", "not-the-token")
    await page.click("#login")
    assert await page.inner_text("#login-error") == "wrong token"
    await shot(page, shots, "login")

    # Logged in, the operator visits another site whose page posts to the console.
    await log_in(page, proc)
    letter = RuntimeSignal.create("keep me", session_id="dl-2")
    await cluster.broker.dead_letter(
        Message(letter.model_dump_json().encode(), {}, letter.id), ATTENTION_QUEUE, "kept"
    )
    evil = tmp_path / "evil.html"
    evil.write_text(
        f'<form id="f" method="post" action="{proc.url}/console/dead-letters/replay">'
        f'<input name="message_id" value="{letter.id}"><input name="csrf" value="guess"></form>'
        '<script>document.getElementById("f").submit()</script>'
    )
    with static_site(tmp_path) as site:
        await page.goto(f"{site}/evil.html")
        await page.wait_for_url(f"{proc.url}/console/**")
    assert "log in first" in await page.inner_text("#problem")  # SameSite: no cookie sent
    assert [d.message.message_id for d in await cluster.broker.dead_letters()] == [letter.id]

    # A login that ends while a live page is open: the next change leads to the login
    # page rather than embedding it in the live part.
    await page.goto(f"{proc.url}/console/sessions")
    await page.wait_for_selector("#live")
    await context.clear_cookies()
    await post_signal(proc, "while logged out", "gone-1", urgency="low")
    await page.wait_for_url("**/console/login")
    await context.close()


async def _run_status(cluster: Cluster, session: str, status: str) -> bool:
    snapshot = await cluster.state.sessions.load(session)
    return bool(snapshot and snapshot.runs and snapshot.runs[-1].status == status)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class static_site:  # a context manager, named as a function is
    """Another origin (``localhost`` on its own port) serving ``root``."""

    def __init__(self, root: Path) -> None:
        handler = lambda *a, **k: _Quiet(*a, directory=str(root), **k)  # noqa: E731
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://localhost:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
