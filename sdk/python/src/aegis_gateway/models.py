"""Typed answers of the gateway, read strictly: an answer that does not have the documented
shape is not a decision (the caller gets `UnexpectedResponse`, never a guess)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

Verdict = Literal["allow", "deny", "require_approval"]
ApprovalStatus = Literal["pending", "approved", "rejected", "expired", "consumed"]

_VERDICTS = ("allow", "deny", "require_approval")
_APPROVAL_STATUSES = ("pending", "approved", "rejected", "expired", "consumed")


class ShapeError(ValueError):
    """A gateway answer lacks a field or has one of the wrong type."""


def _field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(name)
    # bool is an int in Python; a JSON true is never a count.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ShapeError(f"field {name!r} is missing or not {getattr(kind, '__name__', kind)}")
    return value


def _optional(data: Mapping[str, Any], name: str, kind: type) -> Any:
    return None if data.get(name) is None else _field(data, name, kind)


@dataclass(frozen=True)
class ReceiptRef:
    """Where the decision sits in the tenant's receipt chain."""

    id: str
    hash: str
    prev_hash: str
    seq: int

    @classmethod
    def parse(cls, data: Any) -> ReceiptRef:
        if not isinstance(data, Mapping):
            raise ShapeError("receipt is not an object")
        return cls(
            id=_field(data, "id", str),
            hash=_field(data, "hash", str),
            prev_hash=_field(data, "prev_hash", str),
            seq=_field(data, "seq", int),
        )


@dataclass(frozen=True)
class Approval:
    """An approval as the agent sees it: in an authorize answer, or from the long-poll."""

    id: str
    status: ApprovalStatus
    action_hash: str | None = None
    expires_at: str | None = None

    @classmethod
    def parse(cls, data: Any) -> Approval:
        if not isinstance(data, Mapping):
            raise ShapeError("approval is not an object")
        status = _field(data, "status", str)
        if status not in _APPROVAL_STATUSES:
            raise ShapeError(f"approval status {status!r} is unknown")
        return cls(
            id=_field(data, "id", str),
            status=cast(ApprovalStatus, status),
            action_hash=_optional(data, "action_hash", str),
            expires_at=_optional(data, "expires_at", str),
        )


@dataclass(frozen=True)
class Decision:
    """The gateway's verdict on one tool call, recorded before it was answered."""

    decision: Verdict
    decision_id: str
    reason: str
    risk_score: int
    matched_policies: tuple[str, ...]
    action_hash: str
    receipt: ReceiptRef
    approval: Approval | None = None
    retry_after_ms: int | None = None

    @property
    def allowed(self) -> bool:
        return self.decision == "allow"

    @classmethod
    def parse(cls, data: Any) -> Decision:
        if not isinstance(data, Mapping):
            raise ShapeError("the answer is not a JSON object")
        verdict = _field(data, "decision", str)
        if verdict not in _VERDICTS:
            raise ShapeError(f"decision {verdict!r} is unknown")
        policies = _field(data, "matched_policies", list)
        if not all(isinstance(p, str) for p in policies):
            raise ShapeError("matched_policies holds a non-string")
        approval = data.get("approval")
        return cls(
            decision=cast(Verdict, verdict),
            decision_id=_field(data, "decision_id", str),
            reason=_field(data, "reason", str),
            risk_score=_field(data, "risk_score", int),
            matched_policies=tuple(policies),
            action_hash=_field(data, "action_hash", str),
            receipt=ReceiptRef.parse(data.get("receipt")),
            approval=None if approval is None else Approval.parse(approval),
            retry_after_ms=_optional(data, "retry_after_ms", int),
        )
