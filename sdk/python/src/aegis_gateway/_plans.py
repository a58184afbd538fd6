"""The clients' one implementation, without I/O.

Each operation is a *plan*: a generator that yields the HTTP requests it needs (`Send`) and
the pauses between retries (`Pause`), is sent back each answer (or has the connection error
thrown in), and returns the result. The retry policy, the request bodies, the reading of
answers, the wait for an approval and what a guarded call decides are written here once;
`drive` (blocking) and `drive_async` (asyncio) are the only code that touches the network, so
`Client`, `AsyncClient` and `OperatorClient` are thin shells around the same plans.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from ._guard import ApprovalWait, Guard, enforce
from ._wire import (
    RETRYABLE_STATUSES,
    Connection,
    authorize_body,
    check_name,
    check_wait_secs,
    new_request_id,
    read_json,
    unavailable,
)
from .errors import GatewayUnavailable, UnexpectedResponse
from .models import Approval, Decision, ShapeError

T = TypeVar("T")


@dataclass(frozen=True)
class Send:
    """One HTTP attempt; the plan is sent back the `httpx.Response`."""

    method: str
    path: str
    timeout: float
    params: Mapping[str, Any] | None = None
    json: Any = None


@dataclass(frozen=True)
class Pause:
    """Wait this long before the next attempt."""

    seconds: float


Step = Send | Pause
Plan = Generator[Step, Any, T]


def exchange(
    conn: Connection, send: Send, read: Callable[[Any], T], *, retries: int | None = None
) -> Plan[T]:
    """One request, its answer read by `read`. Connection errors, timeouts and 502/503/504
    are retried (`retries` more attempts, by default the connection's policy) with the same
    request; anything that is not the expected answer raises (see `read_json`)."""
    what = f"{send.method} {send.path}"
    retries = conn.retry.retries if retries is None else retries
    attempt = 0
    while True:
        try:
            response: httpx.Response = yield send
        except httpx.TransportError as error:
            if attempt == retries:
                raise unavailable(what, error) from None
        else:
            if response.status_code not in RETRYABLE_STATUSES or attempt == retries:
                data = read_json(what, response, conn.redact)
                try:
                    return read(data)
                except ShapeError as error:
                    raise UnexpectedResponse(
                        f"{what} ({error})",
                        response.status_code,
                        conn.redact.bytes(response.content),
                    ) from None
        yield Pause(conn.retry.delay(attempt))
        attempt += 1


def authorize(
    conn: Connection,
    /,
    tool: str,
    action: str,
    resource: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    source_trust: str | None = None,
    mutates_state: bool | None = None,
    run_id: str | None = None,
    trace_id: str | None = None,
    *,
    request_id: str | None = None,
    approval_id: str | None = None,
) -> Plan[Decision]:
    """Asks the gateway about one tool call. Returns the decision, whatever it is.

    Each call sends a fresh `request_id` (unless given); its retries reuse it, so the gateway
    records the call once."""
    body = authorize_body(
        tool=tool,
        action=action,
        resource=resource,
        parameters=parameters,
        source_trust=source_trust,
        mutates_state=mutates_state,
        run_id=run_id,
        trace_id=trace_id,
        request_id=new_request_id() if request_id is None else request_id,
        approval_id=approval_id,
    )
    send = Send("POST", "/v1/authorize", conn.timeout, json=body)
    return (yield from exchange(conn, send, Decision.parse))


def approval(conn: Connection, /, approval_id: str, wait_secs: int = 0) -> Plan[Approval]:
    """This agent's approval; with `wait_secs`, answers once it changes or after that long."""
    path = f"/v1/approvals/{quote(check_name(approval_id, 'approval_id'), safe='')}"
    wait = check_wait_secs(wait_secs)
    send = Send("GET", path, conn.timeout + wait, params={"wait_secs": wait} if wait else None)
    return (yield from exchange(conn, send, Approval.parse))


def authorize_and_wait(conn: Connection, /, timeout: float, **call: Any) -> Plan[Decision]:
    """As `authorize`; a `require_approval` is waited for up to `timeout` seconds, then the
    identical call is repeated naming the approval, which consumes it."""
    decision = yield from authorize(conn, **call)
    if decision.decision != "require_approval":
        return decision
    wait = ApprovalWait(decision, timeout)
    while (secs := wait.next_poll_secs()) is not None:
        wait.settled((yield from approval(conn, wait.approval.id, secs)))
    return (yield from authorize(conn, **call, approval_id=wait.approved_id()))


def guarded(
    conn: Connection, /, guard: Guard, arguments: Mapping[str, Any]
) -> Plan[Decision | None]:
    """What a guarded call decides: returns the allow (`None` when failing open on a read)
    and raises for anything else, so the guarded code runs only when this returns."""
    call = guard.call_with(arguments)
    try:
        if guard.wait:
            decision = yield from authorize_and_wait(conn, guard.wait_timeout, **call)
        else:
            decision = yield from authorize(conn, **call)
    except GatewayUnavailable as error:
        if guard.may_fail_open(error):
            return None
        raise
    return enforce(decision)


def drive(http: httpx.Client, plan: Plan[T]) -> T:
    """Runs `plan` with blocking I/O."""
    outcome: httpx.Response | httpx.TransportError | None = None
    while True:
        try:
            step = _resume(plan, outcome)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        if isinstance(step, Pause):
            time.sleep(step.seconds)
            outcome = None
            continue
        try:
            outcome = http.request(
                step.method, step.path, params=step.params, json=step.json, timeout=step.timeout
            )
        except httpx.TransportError as error:
            outcome = error


async def drive_async(http: httpx.AsyncClient, plan: Plan[T]) -> T:
    """Runs `plan` with asyncio I/O."""
    outcome: httpx.Response | httpx.TransportError | None = None
    while True:
        try:
            step = _resume(plan, outcome)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        if isinstance(step, Pause):
            await asyncio.sleep(step.seconds)
            outcome = None
            continue
        try:
            outcome = await http.request(
                step.method, step.path, params=step.params, json=step.json, timeout=step.timeout
            )
        except httpx.TransportError as error:
            outcome = error


def _resume(plan: Plan[Any], outcome: httpx.Response | httpx.TransportError | None) -> Step:
    if isinstance(outcome, httpx.TransportError):
        return plan.throw(outcome)
    return plan.send(outcome)
