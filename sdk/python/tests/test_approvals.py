"""Waiting for an approval end to end: the agent's guarded call long-polls its approval while
an operator approves (or rejects) it from another thread; then the identical call is repeated
and consumes the approval, and the function runs once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from aegis_gateway import (
    ApprovalRejected,
    ApprovalRequired,
    AsyncClient,
    Client,
    OperatorClient,
)

from .gateway import Gateway


@pytest.fixture
def operator(gateway: Gateway) -> Iterator[OperatorClient]:
    with OperatorClient(gateway.base_url, gateway.admin_key) as ops:
        yield ops


def settle_when_pending(ops: OperatorClient, agent_id: str, approve: bool) -> threading.Thread:
    """An operator in another thread: waits for the agent's pending approval and settles it."""

    def act() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pending = ops.approvals(status="pending", agent_id=agent_id)
            if pending:
                if approve:
                    ops.approve(pending[0]["id"], reason="checked the diff")
                else:
                    ops.reject(pending[0]["id"], reason="not during the freeze window")
                return
            time.sleep(0.1)

    thread = threading.Thread(target=act)
    thread.start()
    return thread


def guarded_merge(client: Client, ran: list[int], timeout: float = 30) -> Any:
    @client.protect(
        tool="github",
        action="merge_pull_request",
        resource=lambda repo, pr: f"{repo}#{pr}",
        source_trust="semi_trusted_customer",
        wait=True,
        wait_timeout=timeout,
    )
    def merge(repo: str, pr: int) -> str:
        ran.append(pr)
        return "merged"

    return merge


def test_an_approved_call_runs_once(
    gateway: Gateway, agent: tuple[str, str], client: Client, operator: OperatorClient
) -> None:
    ran: list[int] = []
    merge = guarded_merge(client, ran)
    approver = settle_when_pending(operator, agent[0], approve=True)
    assert merge("payments-service", 482) == "merged"
    approver.join()
    assert ran == [482]
    verdicts = [r["decision"] for r in reversed(gateway.decisions_of(agent[0]))]
    assert verdicts == ["require_approval", "allow"]
    [approval] = operator.approvals(agent_id=agent[0])
    assert approval["status"] == "consumed"


def test_a_rejected_call_never_runs(
    agent: tuple[str, str], client: Client, operator: OperatorClient
) -> None:
    ran: list[int] = []
    merge = guarded_merge(client, ran)
    rejecter = settle_when_pending(operator, agent[0], approve=False)
    with pytest.raises(ApprovalRejected) as rejected:
        merge("payments-service", 482)
    rejecter.join()
    assert ran == []
    assert rejected.value.approval.status == "rejected"


def test_an_unanswered_approval_times_out_without_running(client: Client) -> None:
    ran: list[int] = []
    merge = guarded_merge(client, ran, timeout=1.5)
    started = time.monotonic()
    with pytest.raises(ApprovalRequired) as pending:
        merge("payments-service", 482)
    assert 1.5 <= time.monotonic() - started < 10
    assert ran == []
    assert pending.value.approval is not None
    assert "still pending" in str(pending.value)


@pytest.mark.asyncio
async def test_async_an_approved_call_runs_once(
    gateway: Gateway, agent: tuple[str, str], operator: OperatorClient
) -> None:
    ran: list[int] = []
    async with AsyncClient(gateway.base_url, agent[1]) as client:

        @client.protect(
            tool="github",
            action="merge_pull_request",
            source_trust="semi_trusted_customer",
            wait=True,
            wait_timeout=30,
        )
        async def merge(repo: str, pr: int) -> str:
            ran.append(pr)
            return "merged"

        approver = settle_when_pending(operator, agent[0], approve=True)
        assert await merge("payments-service", 482) == "merged"
        approver.join()
    assert ran == [482]
