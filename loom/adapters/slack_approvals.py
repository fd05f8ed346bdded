"""Approve and Deny pressed in Slack: the decision taken at the process's ``ApprovalDesk``,
and the person told how it went.

Who may decide: the users in ``LOOM_SLACK__APPROVERS`` when it is set, else everyone who
can press the buttons (everyone in the channel). Anyone else gets an ephemeral notice
(only they see it) and nothing is decided. A decision taken updates the request message:
the call's buttons give way to who decided what. A press that cannot count (decided
before, expired, unknown, other arguments) gets an ephemeral notice saying why; one decided
before, or expired, also has its buttons replaced by that outcome.

The notices and updates go through the Web API (``chat.postEphemeral``, ``chat.update``)
with the bot token, so a gateway that serves the buttons needs ``LOOM_SLACK__BOT_TOKEN``
too; without it the decision is still taken, and only the message stays as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from loom.adapters.slack_approval_blocks import (
    decided_blocks,
    escape,
    outcome_text,
    settled_blocks,
)
from loom.adapters.slack_events import ApprovalPress
from loom.core.approvals import (
    Approval,
    ApprovalAlreadyDecided,
    ApprovalDesk,
    ApprovalDigestMismatch,
    ApprovalError,
    ApprovalExpired,
    UnknownApproval,
)

if TYPE_CHECKING:
    from slack_sdk.web.async_client import AsyncWebClient

logger = logging.getLogger("loom.slack")


class ApprovalButtons:
    """Takes approval presses: ``client`` makes the Web API client (it may raise when the
    process has no bot token), ``approvers`` the user ids allowed (None: everyone)."""

    def __init__(
        self, client: Callable[[], AsyncWebClient], approvers: Collection[str] | None
    ) -> None:
        self._client = client
        self.approvers = frozenset(approvers) if approvers is not None else None

    async def press(self, press: ApprovalPress, desk: ApprovalDesk | None) -> bool:
        """Take one press; False when the decision could not be recorded now (the state is
        down: the person is told to press again)."""
        if self.approvers is not None and press.user not in self.approvers:
            logger.info(
                "approval %s: %s pressed %s but is not in LOOM_SLACK__APPROVERS; not decided",
                press.approval_id, press.user, press.decision.value,
            )  # fmt: skip
            await self._notice(
                press,
                ":lock: You are not one of the approvers of this request "
                "(LOOM_SLACK__APPROVERS), so your press was not counted.",
            )
            return True
        if desk is None:
            logger.warning(
                "approval %s pressed in Slack, but this process takes no approval decisions",
                press.approval_id,
            )
            await self._notice(
                press, ":warning: This Loom cannot take approval decisions here: nothing decided."
            )
            return True
        try:
            decided = await desk.decide(
                press.session_id,
                press.approval_id,
                press.decision,
                digest=press.digest,
                by=f"slack:{press.user}",
            )
        except ApprovalError as problem:
            await self._refused(press, problem)
            return True
        except Exception as problem:
            logger.warning(
                "approval %s: the %s of %s could not be recorded: %r",
                press.approval_id, press.decision.value, press.user, problem,
            )  # fmt: skip
            await self._notice(
                press, ":warning: Your decision could not be recorded just now: press again."
            )
            return False
        approval = decided.approval
        if decided.fresh:
            logger.info(
                "approval %s in session %s: %s by slack:%s",
                approval.id, approval.session_id, press.decision.value, press.user,
            )  # fmt: skip
        else:
            # The same decision taken before, maybe by this very user (Slack shows an error
            # when an answer is slow, and people press again): say so.
            await self._notice(press, f"It was already decided: {outcome_text(approval)}")
        await self._update(press, decided_blocks(press.blocks, approval), approval)
        return True

    async def _refused(self, press: ApprovalPress, problem: ApprovalError) -> None:
        """Tell why a press did not count; settle the buttons when nobody can press them
        usefully any more (decided before, expired)."""
        if isinstance(problem, ApprovalAlreadyDecided):
            first = problem.approval
            await self._notice(press, f"Not counted: it was already decided. {outcome_text(first)}")
            await self._update(press, decided_blocks(press.blocks, first), first)
        elif isinstance(problem, ApprovalExpired):
            await self._notice(press, f":hourglass: Not counted: {escape(str(problem))}.")
            outcome = ":hourglass: Expired without a decision: the call is denied."
            settled = settled_blocks(press.blocks, press.approval_id, outcome)
            if settled is not None:
                await self._call("chat_update", press, blocks=settled, text=outcome)
        elif isinstance(problem, UnknownApproval):
            await self._notice(
                press,
                f":grey_question: Not counted: no approval `{escape(press.approval_id)}` "
                "waits in this session (its run may have ended).",
            )
        elif isinstance(problem, ApprovalDigestMismatch):
            await self._notice(
                press,
                ":warning: Not counted: the call waiting for approval is not the one this "
                "message shows (other arguments).",
            )
        else:
            await self._notice(press, f":warning: Not counted: {escape(str(problem))}")
        logger.info(
            "approval %s: the %s of %s was refused (%s)",
            press.approval_id, press.decision.value, press.user, problem,
        )  # fmt: skip

    async def _notice(self, press: ApprovalPress, text: str) -> None:
        """An ephemeral message in the thread, seen only by the one who pressed."""
        await self._call("chat_postEphemeral", press, user=press.user, text=text)

    async def _update(
        self, press: ApprovalPress, blocks: Sequence[Mapping[str, Any]], approval: Approval
    ) -> None:
        text = f"{approval.tool}: {outcome_text(approval)}"
        await self._call("chat_update", press, blocks=list(blocks), text=text)

    async def _call(self, method: str, press: ApprovalPress, **arguments: Any) -> None:
        """One Web API call; a failure is logged, never raised (the decision stands)."""
        if method == "chat_update":
            arguments["ts"] = press.message_ts
        else:
            arguments["thread_ts"] = press.thread_ts
        try:
            await getattr(self._client(), method)(channel=press.channel, **arguments)
        except Exception as problem:
            logger.warning(
                "approval %s: %s in %s failed (%s)%s",
                press.approval_id, method.replace("_", "."), press.channel, problem,
                "; set LOOM_SLACK__BOT_TOKEN on the gateway to show decisions in Slack"
                if "bot token" in str(problem) else "",
            )  # fmt: skip


__all__ = ["ApprovalButtons"]
