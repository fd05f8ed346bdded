"""A delivery with no broker behind it, for the delivery-policy wrappers' unit tests."""

from __future__ import annotations

from loom.broker.base import Delivery, Message


class FakeDelivery(Delivery):
    """Records how it was settled: ``outcome`` is "ack", "retry" or "dead_letter"."""

    def __init__(
        self,
        body: bytes = b"{}",
        *,
        queue: str = "jobs",
        delivery_count: int = 1,
        final: bool = False,
        message_id: str = "m-1",
    ) -> None:
        super().__init__(Message(body, {}, message_id), queue, delivery_count, final=final)
        self.outcome: str | None = None
        self.reason: str | None = None

    async def ack(self) -> None:
        self._settle("ack")

    async def retry(self) -> None:
        self._settle("retry")

    async def dead_letter(self, reason: str) -> None:
        self._settle("dead_letter")
        self.reason = reason

    def _settle(self, outcome: str) -> None:
        if self.settled:
            raise RuntimeError(f"delivery from {self.queue!r} is already settled")
        self._settled = True
        self.outcome = outcome
