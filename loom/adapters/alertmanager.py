"""Prometheus Alertmanager's webhook receiver at ``POST /webhooks/alertmanager``.

Authenticated with the bearer token (LOOM_API_TOKEN, sent by the receiver's
``http_config.authorization``). One notification (payload version 4, one alert group) is one
signal of type ``alert.firing`` or ``alert.resolved``:

- urgency: the highest ``severity`` label of the firing alerts (critical -> critical,
  error/high -> high, warning -> normal, info/none -> low, other or missing -> normal);
  ``resolved`` is ``low``;
- summary: ``[FIRING:2] HighLatency (service=api): <summary>`` from the common annotations'
  ``summary`` or ``description`` (else the first alert's);
- session: one per alert name, ``alertmanager:{alertname}``, so the firing and the
  resolution of an alert meet in one session whatever the grouping; a group without a common
  alert name gets ``alertmanager:group-{hash of groupKey}``;
- dedupe key: a hash of the groupKey, the status and each alert's fingerprint, startsAt and
  status, so a repeat notification is a duplicate but a change inside the group is not;
- payload: the group's labels and annotations, ``status`` and a ``risk_key`` per group (a
  firing group is an active risk until its resolved notification), and the first 20 alerts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from loom.adapters.webhook import Webhook, WebhookError, json_object, webhook_openapi
from loom.intake.context import AdapterContext
from loom.signals import RuntimeSignal, Urgency, session_id_from

SEVERITIES: dict[str, Urgency] = {
    "critical": "critical",
    "error": "high",
    "high": "high",
    "warning": "normal",
    "info": "low",
    "none": "low",
}
RANK: dict[Urgency, int] = {"low": 0, "normal": 1, "high": 2, "critical": 3}
MAX_ALERTS = 20
MAX_ANNOTATION = 2_000


NOTIFICATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["version", "status", "groupKey", "alerts"],
    "properties": {
        "version": {"const": "4"},
        "status": {"enum": ["firing", "resolved"]},
        "groupKey": {"type": "string", "minLength": 1},
        "alerts": {"type": "array", "items": {"type": "object"}},
    },
}
"""What ``to_signal`` requires of a notification (the rest is read when present)."""


class Alertmanager(Webhook):
    """Alertmanager notifications; ``token`` defaults to LOOM_API_TOKEN."""

    def __init__(self, token: str | None = None) -> None:
        super().__init__("alertmanager", token=token)

    def refusal(
        self, context: AdapterContext, headers: Mapping[str, str], body: bytes
    ) -> str | None:
        if (self.token or context.api_token) is None and context.webhook_secret is not None:
            # Alertmanager cannot sign: the secret alone shuts it out, so say what lets it in.
            return (
                "Alertmanager authenticates with a bearer token (http_config.authorization), "
                "and none is configured: set LOOM_API_TOKEN (LOOM_WEBHOOK_SECRET alone "
                "refuses every alert)"
            )
        return super().refusal(context, headers, body)

    def to_signal(self, body: bytes, headers: Mapping[str, str]) -> RuntimeSignal | Response:
        note = json_object(body)
        if note.get("version") != "4":  # Alertmanager sends the version as a string
            raise WebhookError(
                f"version: want Alertmanager's webhook payload version '4', "
                f"not {note.get('version')!r}"
            )
        status, group_key = note.get("status"), note.get("groupKey")
        if status not in ("firing", "resolved"):
            raise WebhookError(f"status: want 'firing' or 'resolved', not {status!r}")
        if not isinstance(group_key, str) or not group_key:
            raise WebhookError("groupKey: missing (a non-empty string)")
        raw = note.get("alerts")
        if not isinstance(raw, list) or not all(isinstance(a, Mapping) for a in raw):
            raise WebhookError("alerts: want a list of alert objects")
        alerts = [_alert(a) for a in raw]
        common = _strings(note.get("commonLabels"))
        groups = _strings(note.get("groupLabels"))
        annotations = _strings(note.get("commonAnnotations"))
        name = groups.get("alertname") or common.get("alertname")
        group_hash = hashlib.sha256(group_key.encode()).hexdigest()
        session = session_id_from(f"alertmanager:{name}") if name else None
        return RuntimeSignal(
            source="alertmanager",
            type=f"alert.{status}",
            summary=_summary(status, name, groups, annotations, alerts)[:10_000],
            urgency=_urgency(status, alerts),
            session_id=(session or f"alertmanager:group-{group_hash[:16]}")[:256],
            dedupe_key=f"alertmanager:{_digest(group_key, status, alerts)}",
            payload={
                "status": status,
                "risk_key": f"alertmanager:{group_hash[:32]}",
                "receiver": note.get("receiver"),
                "group_key": group_key,
                "group_labels": groups,
                "common_labels": common,
                "common_annotations": {k: v[:MAX_ANNOTATION] for k, v in annotations.items()},
                "external_url": note.get("externalURL"),
                "truncated_alerts": note.get("truncatedAlerts", 0),
                "alerts": alerts[:MAX_ALERTS],
                "alerts_omitted": max(len(alerts) - MAX_ALERTS, 0),
            },
        )

    def openapi(self) -> dict[str, Any]:
        return webhook_openapi(
            self.path,
            "Alertmanager webhook notifications (payload version 4)",
            [{"bearer": []}],
            body_schema=NOTIFICATION_SCHEMA,
        )


def _strings(value: Any) -> dict[str, str]:
    """A label or annotation set; anything but string values is dropped."""
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def _alert(alert: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "status": alert.get("status"),
        "labels": _strings(alert.get("labels")),
        "annotations": {
            k: v[:MAX_ANNOTATION] for k, v in _strings(alert.get("annotations")).items()
        },
        "startsAt": alert.get("startsAt"),
        "endsAt": alert.get("endsAt"),
        "generatorURL": alert.get("generatorURL"),
        "fingerprint": alert.get("fingerprint"),
    }


def _urgency(status: str, alerts: list[dict[str, Any]]) -> Urgency:
    if status == "resolved":
        return "low"
    firing = [a for a in alerts if a["status"] == "firing"] or alerts
    levels = [SEVERITIES.get(a["labels"].get("severity", "").lower(), "normal") for a in firing]
    return max(levels, key=RANK.__getitem__, default="normal")


def _summary(
    status: str,
    name: str | None,
    groups: dict[str, str],
    annotations: dict[str, str],
    alerts: list[dict[str, Any]],
) -> str:
    count = sum(1 for a in alerts if a["status"] == status) or len(alerts)
    title = f"[{status.upper()}:{count}] {name or 'alerts'}"
    labels = ", ".join(f"{k}={v}" for k, v in sorted(groups.items()) if k != "alertname")
    if labels:
        title += f" ({labels})"
    first = alerts[0]["annotations"] if alerts else {}
    text = next(
        (
            source[key]
            for source in (annotations, first)
            for key in ("summary", "description")
            if source.get(key)
        ),
        "",
    )
    return f"{title}: {text}" if text else title


def _digest(group_key: str, status: str, alerts: list[dict[str, Any]]) -> str:
    parts = sorted(f"{a['fingerprint']}|{a['startsAt']}|{a['status']}" for a in alerts)
    return hashlib.sha256("\n".join([group_key, status, *parts]).encode()).hexdigest()[:40]


__all__ = ["Alertmanager"]
