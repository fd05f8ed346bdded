"""The intake: the narrow port signals come in through, below the adapters and the daemon.

- ``Intake`` (``loom.intake.port``): ``accept`` a signal with dedupe and the 202/200/503
  answer, or ``publish`` it confirmed;
- ``AdapterContext`` (``loom.intake.context``): what an adapter is handed instead of the
  Daemon;
- ``Adapter``, ``Reply``, ``UndeliverableReply``: the adapter contract;
- the HTTP kit of inbound routes: ``loom.intake.http`` (errors, body reading),
  ``loom.intake.signing`` (bearer tokens, ``X-Loom-Signature``), ``loom.intake.openapi``
  (the pieces of an adapter's ``openapi()``), ``loom.intake.cloudevents``.
"""

from loom.intake.adapter import Adapter
from loom.intake.context import AdapterContext, HasContext, context_of
from loom.intake.http import error, inbound_body, read_body
from loom.intake.port import Host, Intake
from loom.intake.replies import Reply, UndeliverableReply

__all__ = [
    "Adapter",
    "AdapterContext",
    "HasContext",
    "Host",
    "Intake",
    "Reply",
    "UndeliverableReply",
    "context_of",
    "error",
    "inbound_body",
    "read_body",
]
