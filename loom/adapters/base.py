"""The adapter contract, re-exported: ``Adapter``, ``Reply`` and ``UndeliverableReply`` live
in ``loom.intake`` (below both the adapters and the daemon); this path keeps working."""

from loom.intake.adapter import Adapter
from loom.intake.context import AdapterContext
from loom.intake.replies import Reply, UndeliverableReply

__all__ = ["Adapter", "AdapterContext", "Reply", "UndeliverableReply"]
