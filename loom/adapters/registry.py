"""The one table of adapters configured from settings, and the settings sections they read.

Each entry names a settings section and the factory that builds that section's adapters
(none when the section leaves the adapter off). ``loom.daemon`` wires from this table and
knows no adapter by name: its ``Settings`` inherits ``AdapterSettings`` (the sections), and
a Daemon gets ``adapters_from_settings(settings)`` before the adapters given in code.
Factories import their adapter on use, so reading the settings stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, field_validator

from loom.adapters.cron_settings import CronJobSettings, unique_jobs
from loom.adapters.heartbeat_settings import HeartbeatSettings, ProbeSettings
from loom.adapters.slack_settings import SlackSettings
from loom.adapters.webhook_settings import WebhookMapping, WebhookSettings
from loom.intake.adapter import Adapter
from loom.intake.settings import Credential


class AdapterSettings(BaseModel):
    """The settings sections of the built-in adapters (``Settings`` inherits them)."""

    webhook_secret: Credential | None = None
    """Key of ``X-Loom-Signature`` on inbound requests and on callbacks."""
    slack: SlackSettings = Field(default_factory=SlackSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    cron: list[CronJobSettings] = Field(default_factory=list)
    """Cron jobs (``[[cron]]`` tables, or ``LOOM_CRON`` as a JSON list; docs/scheduler.md)."""
    heartbeat: HeartbeatSettings = Field(default_factory=HeartbeatSettings)

    @field_validator("cron")
    @classmethod
    def _unique_jobs(cls, value: list[CronJobSettings]) -> list[CronJobSettings]:
        return unique_jobs(value)


Factory = Callable[[Any, Any], Iterable[Adapter]]
"""``factory(section, settings)``: the adapters a section switches on; ``settings`` is the
whole settings object (an ``AdapterSettings``), for what several sections share."""


@dataclass(frozen=True, slots=True)
class OffRoute:
    """A route an entry serves once its section turns it on, and the hint a request to it
    gets while nothing serves it. ``path`` is a Starlette path (``/webhooks/{name}``);
    ``hint`` may name its parameters, ``{name}`` as sent and ``{NAME}`` in capitals (as in
    an environment variable)."""

    path: str
    hint: str

    def explain(self, params: Mapping[str, str]) -> str:
        """The hint, with the request's path parameters filled in."""
        values = {key: value[:64] for key, value in params.items()}
        return self.hint.format(**values, **{k.upper(): v.upper() for k, v in values.items()})


@dataclass(frozen=True, slots=True)
class AdapterEntry:
    """One row of the table: settings section ``section`` builds adapters with ``build``;
    ``off_routes`` say how to turn on the routes they serve, for a request that finds
    none."""

    section: str
    build: Factory
    off_routes: tuple[OffRoute, ...] = ()
    reply_prefixes: tuple[str, ...] = ()
    """How the ``reply_to`` addresses begin that this entry's adapters deliver to once
    configured: a gateway accepts them even where this process has not configured them."""


def _webhooks(webhooks: WebhookSettings, settings: AdapterSettings) -> list[Adapter]:
    from loom.adapters.alertmanager import Alertmanager
    from loom.adapters.callback import Callbacks
    from loom.adapters.github import GitHub
    from loom.adapters.webhook import Webhook

    # Callbacks and Alertmanager need nothing of their own: replies to http(s) addresses
    # and alerts (checked with LOOM_API_TOKEN) work out of the box.
    built: list[Adapter] = [Callbacks.from_settings(settings), Alertmanager()]
    if webhooks.github_secret is not None:
        built.append(GitHub(webhooks.github_secret.get_secret_value()))
    built.extend(Webhook.from_settings(n, m) for n, m in webhooks.mappings.items())
    return built


def _slack(slack: SlackSettings, settings: AdapterSettings) -> list[Adapter]:
    # Either secret switches Slack on: a gateway needs only the signing secret (to check
    # Slack's requests), a worker only the bot token (to post replies).
    secrets = (slack.signing_secret, slack.bot_token)
    if not any(s is not None and s.get_secret_value() for s in secrets):
        return []
    from loom.adapters.slack import Slack

    return [Slack(settings=slack)]


def _cron(jobs: list[CronJobSettings], settings: AdapterSettings) -> list[Adapter]:
    if not jobs:
        return []
    from loom.adapters.cron import Cron

    return [Cron.from_settings(job) for job in jobs]


def _heartbeat(heartbeat: HeartbeatSettings, settings: AdapterSettings) -> list[Adapter]:
    if heartbeat.interval is None:
        return []
    from loom.adapters.heartbeat import Heartbeat

    return [Heartbeat.from_settings(heartbeat)]


_SLACK_OFF = (
    "Slack is off in this gateway: set LOOM_SLACK__SIGNING_SECRET to serve /slack/events "
    "and /slack/interactions (docs/slack.md)"
)

TABLE: list[AdapterEntry] = [
    AdapterEntry(
        "webhooks",
        _webhooks,
        reply_prefixes=("http://", "https://"),
        off_routes=(
            OffRoute(
                "/webhooks/github",
                "the GitHub webhook is off: set LOOM_WEBHOOKS__GITHUB_SECRET (docs/webhooks.md)",
            ),
            OffRoute(
                "/webhooks/{name}",
                "no webhook mapping named {name!r} is configured: set "
                "LOOM_WEBHOOKS__MAPPINGS__{NAME}__<FIELD> (e.g. __SUMMARY=alert.title) or "
                "LOOM_WEBHOOKS__MAPPINGS as JSON (docs/webhooks.md)",
            ),
        ),
    ),
    AdapterEntry(
        "slack",
        _slack,
        reply_prefixes=("slack:",),
        off_routes=(
            OffRoute("/slack/events", _SLACK_OFF),
            OffRoute("/slack/interactions", _SLACK_OFF),
        ),
    ),
    AdapterEntry("cron", _cron),
    AdapterEntry("heartbeat", _heartbeat),
]
"""Every adapter configured from settings, in the order they are built."""


def register(entry: AdapterEntry) -> None:
    """Add ``entry`` to the table (replacing one of the same section)."""
    unregister(entry.section)
    TABLE.append(entry)


def unregister(section: str) -> None:
    """Take the entry of ``section`` out of the table, if there is one."""
    TABLE[:] = [entry for entry in TABLE if entry.section != section]


def known_reply_prefixes() -> tuple[str, ...]:
    """Every kind of ``reply_to`` address an entry of the table delivers to when on."""
    return tuple(sorted({prefix for entry in TABLE for prefix in entry.reply_prefixes}))


def adapters_from_settings(settings: AdapterSettings) -> list[Adapter]:
    """Every adapter the settings configure, entry by entry; an entry whose section the
    settings lack (a model without it) builds nothing."""
    configured: list[Adapter] = []
    for entry in TABLE:
        section = getattr(settings, entry.section, None)
        if section is not None:
            configured.extend(entry.build(section, settings))
    return configured


def off_routes() -> list[OffRoute]:
    """Every entry's off routes, those with path parameters last (``/webhooks/github``
    before ``/webhooks/{name}``)."""
    routes = [route for entry in TABLE for route in entry.off_routes]
    return sorted(routes, key=lambda route: "{" in route.path)


def merge_adapters(configured: Sequence[Adapter], given: Sequence[Adapter]) -> list[Adapter]:
    """``configured`` then ``given``; an adapter given in code replaces a configured one of
    the same name (one ``/webhooks/github`` route, one Slack app)."""
    names = {adapter.name for adapter in given}
    return [a for a in configured if a.name not in names] + list(given)


__all__ = [
    "TABLE",
    "AdapterEntry",
    "AdapterSettings",
    "CronJobSettings",
    "Factory",
    "HeartbeatSettings",
    "OffRoute",
    "ProbeSettings",
    "SlackSettings",
    "WebhookMapping",
    "WebhookSettings",
    "adapters_from_settings",
    "known_reply_prefixes",
    "merge_adapters",
    "off_routes",
    "register",
    "unregister",
]
