"""A deployment-watching daemon: Slack, a CI webhook, a cron check and a heartbeat.

Run it with ``uv run loom run examples.ops_daemon:daemon``. It needs
``LOOM_SLACK__SIGNING_SECRET`` and ``LOOM_SLACK__BOT_TOKEN`` for Slack; the model comes from
``LOOM_MODEL`` (or ``ANTHROPIC_API_KEY`` / ``OPENAI_API_KEY``; the offline test model
otherwise).
"""

from __future__ import annotations

from loom import Agent, Model
from loom.adapters import Cron, Heartbeat, HttpProbe, Slack, Webhook
from loom.daemon import Daemon
from loom.signals import SignalAdapter

agent = Agent(Model.from_environment(), "You watch deployments. Answer briefly.")
daemon = Daemon(
    agent,
    adapters=[
        Slack(),
        Webhook("deploys", SignalAdapter(source="ci", summary=lambda e: e["title"])),
        Cron("*/5 * * * *", "Deployment health check is due", job_id="health", session_id="ops"),
        Heartbeat(every=30, probes=[HttpProbe("api", "http://127.0.0.1:9000/healthz")]),
    ],
)
