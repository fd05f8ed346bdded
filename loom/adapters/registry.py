"""The adapters a daemon gets from its settings, before those given in code."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from loom.adapters.base import Adapter

if TYPE_CHECKING:
    from loom.daemon.settings import Settings


def adapters_from_settings(settings: Settings) -> list[Adapter]:
    """Every adapter the settings configure (each module decides from its own section)."""
    from loom.adapters.alertmanager import Alertmanager
    from loom.adapters.callback import Callbacks
    from loom.adapters.github import GitHub
    from loom.adapters.webhook import Webhook

    # Callbacks and Alertmanager need nothing of their own: replies to http(s) addresses
    # and alerts (checked with LOOM_API_TOKEN) work out of the box.
    configured: list[Adapter] = [Callbacks.from_settings(settings), Alertmanager()]
    webhooks = settings.webhooks
    if webhooks.github_secret is not None:
        configured.append(GitHub(webhooks.github_secret.get_secret_value()))
    configured.extend(Webhook.from_settings(n, m) for n, m in webhooks.mappings.items())
    slack = settings.slack
    # Either secret switches Slack on: a gateway needs only the signing secret (to check
    # Slack's requests), a worker only the bot token (to post replies).
    if any(s is not None and s.get_secret_value() for s in (slack.signing_secret, slack.bot_token)):
        from loom.adapters.slack import Slack

        configured.append(Slack(settings=settings.slack))
    if settings.cron:
        from loom.adapters.cron import Cron

        configured.extend(Cron.from_settings(job) for job in settings.cron)
    if settings.heartbeat.interval is not None:
        from loom.adapters.heartbeat import Heartbeat

        configured.append(Heartbeat.from_settings(settings.heartbeat))
    return configured


def merge_adapters(configured: Sequence[Adapter], given: Sequence[Adapter]) -> list[Adapter]:
    """``configured`` then ``given``; an adapter given in code replaces a configured one of
    the same name (one ``/webhooks/github`` route, one Slack app)."""
    names = {adapter.name for adapter in given}
    return [a for a in configured if a.name not in names] + list(given)


__all__ = ["adapters_from_settings", "merge_adapters"]
