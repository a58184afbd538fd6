"""What the SDK raises. Every exception derives from `AegisError`; none carries a credential."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Approval, Decision


class AegisError(Exception):
    """Base class of everything this package raises on purpose."""


class Denied(AegisError):
    """The gateway denied the call: the tool did not run."""

    def __init__(self, decision: Decision, message: str | None = None) -> None:
        self.decision = decision
        self.decision_id = decision.decision_id
        self.reason = decision.reason
        super().__init__(
            message or f"denied by the gateway (decision {decision.decision_id}): {decision.reason}"
        )


class ApprovalRejected(Denied):
    """An operator rejected the approval the call waited for, or it expired unused."""

    def __init__(self, decision: Decision, approval: Approval) -> None:
        self.approval = approval
        super().__init__(
            decision,
            f"approval {approval.id} is {approval.status} "
            f"(decision {decision.decision_id}): the call was not run",
        )


class ApprovalRequired(AegisError):
    """The gateway wants an operator's approval first: the tool did not run.

    Raised at once without `wait=True`, and when the wait timed out with the approval still
    pending; `approval` names it, so the call can be repeated once it is approved.
    """

    def __init__(self, decision: Decision, message: str | None = None) -> None:
        self.decision = decision
        self.decision_id = decision.decision_id
        self.approval = decision.approval
        approval = f"approval {self.approval.id}" if self.approval else "an approval"
        super().__init__(
            message
            or f"{approval} is required (decision {decision.decision_id}): {decision.reason}"
        )


class GatewayUnavailable(AegisError):
    """No decision could be had: the gateway is down, too slow, failing (5xx) or answered
    something that is not a decision. The call must be treated as denied (fail closed)."""


class UnexpectedResponse(GatewayUnavailable):
    """The gateway answered something this SDK cannot read as the expected answer."""

    def __init__(self, what: str, status: int, body: bytes) -> None:
        self.status = status
        self.body_excerpt = body[:200]
        super().__init__(
            f"{what}: unexpected answer (HTTP {status}): {self.body_excerpt!r}"
            + (" ..." if len(body) > 200 else "")
        )


class GatewayError(AegisError):
    """The gateway refused the request itself (a 4xx with its JSON error: bad input,
    unknown or revoked credential, missing role, unknown id)."""

    def __init__(self, status: int, code: str, message: str, field: str | None) -> None:
        self.status = status
        self.code = code
        self.field = field
        where = f" (field {field})" if field else ""
        super().__init__(f"HTTP {status} {code}{where}: {message}")
