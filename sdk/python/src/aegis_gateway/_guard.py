"""What `protect` decides before and after asking the gateway, shared by both clients."""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from ._wire import MAX_WAIT_SECS, check_name, check_positive, check_source_trust
from .errors import ApprovalRejected, ApprovalRequired, Denied
from .models import Approval, Decision

log = logging.getLogger("aegis_gateway")

# A value fixed when decorating, or computed from the guarded call's arguments.
Derived = Callable[..., Any]


class GuardOptions(TypedDict, total=False):
    """What a guarded call may say besides its tool and action: the keyword arguments shared
    by `protect`, `guard_tool` and `gateway_guardrail`. Their defaults are `Guard`'s."""

    resource: str | Callable[..., str | None] | None
    parameters: Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None
    source_trust: str | Callable[..., str | None] | None
    mutates_state: bool | None
    wait: bool
    wait_timeout: float


@dataclass(frozen=True)
class Guard:
    """The tool call a guarded function stands for, and what to do with the answer. Checked
    when built, so a bad argument is refused when decorating, before any call."""

    tool: str
    action: str
    resource: str | Derived | None = None
    parameters: Mapping[str, Any] | Derived | None = None
    source_trust: str | Derived | None = None
    mutates_state: bool | None = None
    wait: bool = False
    wait_timeout: float = 300.0
    fail_open: bool = False

    def __post_init__(self) -> None:
        check_name(self.tool, "tool")
        check_name(self.action, "action")
        if not (self.resource is None or isinstance(self.resource, str) or callable(self.resource)):
            raise ValueError("resource must be a string, a callable or None")
        if not (
            self.parameters is None
            or isinstance(self.parameters, Mapping)
            or callable(self.parameters)
        ):
            raise ValueError("parameters must be a mapping, a callable or None")
        if not callable(self.source_trust):
            check_source_trust(self.source_trust)
        if self.mutates_state is not None and not isinstance(self.mutates_state, bool):
            raise ValueError("mutates_state must be a bool or None")
        if not isinstance(self.wait, bool):
            raise ValueError("wait must be a bool")
        check_positive(self.wait_timeout, "wait_timeout")
        if not isinstance(self.fail_open, bool):
            raise ValueError("fail_open must be a bool")
        if self.fail_open and self.mutates_state is not False:
            # Failing open is only ever acceptable for a call that changes nothing.
            raise ValueError("fail_open=True is only allowed for reads: pass mutates_state=False")

    @staticmethod
    def arguments_of(
        signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """One call's arguments by name (`**kwargs` merged in, `*args` as a list), given the
        guarded function's signature (read once, when decorating)."""
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        for name, parameter in signature.parameters.items():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update(arguments.pop(name, {}))
            elif parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                arguments[name] = list(arguments.get(name, ()))
        return arguments

    def call_with(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The `authorize` arguments for one call. By default the parameters are the call's
        arguments by name, so the hash covers what runs."""

        def derive(value: Any) -> Any:
            return value(**arguments) if callable(value) else value

        parameters = dict(arguments) if self.parameters is None else derive(self.parameters)
        return {
            "tool": self.tool,
            "action": self.action,
            "resource": derive(self.resource),
            "parameters": parameters,
            "source_trust": derive(self.source_trust),
            "mutates_state": self.mutates_state,
        }

    def may_fail_open(self, error: Exception) -> bool:
        if self.fail_open:
            log.warning(
                "gateway unavailable; running the read %s.%s without a decision (fail_open): %s",
                self.tool,
                self.action,
                error,
            )
        return self.fail_open


def enforce(decision: Decision) -> Decision:
    """Returns an `allow`; raises for anything else."""
    if decision.decision == "allow":
        return decision
    if decision.decision == "require_approval":
        raise ApprovalRequired(decision)
    raise Denied(decision)


class ApprovalWait:
    """The client side of waiting for an approval: long-poll until the approval is settled or
    the deadline passes; then the caller repeats the identical call naming the approval."""

    def __init__(self, decision: Decision, timeout: float) -> None:
        if decision.approval is None:
            # A require_approval without an approval to wait for cannot be waited on.
            raise ApprovalRequired(decision)
        self.decision = decision
        self.approval: Approval = decision.approval
        self.deadline = time.monotonic() + timeout

    def next_poll_secs(self) -> int | None:
        """Seconds to long-poll for next; `None` once the approval is no longer pending."""
        if self.approval.status != "pending":
            return None
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise ApprovalRequired(
                self.decision,
                f"approval {self.approval.id} is still pending after the wait timeout "
                f"(decision {self.decision.decision_id}): the call was not run",
            )
        return max(1, min(MAX_WAIT_SECS, math.ceil(remaining)))

    def settled(self, approval: Approval) -> None:
        if approval.id != self.approval.id:
            raise ApprovalRequired(self.decision, f"the gateway answered approval {approval.id}")
        self.approval = approval

    def approved_id(self) -> str:
        """The approval to name in the repeated call; raises when it was not approved."""
        if self.approval.status != "approved":
            raise ApprovalRejected(self.decision, self.approval)
        return self.approval.id
