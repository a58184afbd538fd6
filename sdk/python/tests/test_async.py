"""The asyncio variants: `AsyncClient`, and `Client.protect` on `async def` functions."""

from __future__ import annotations

import pytest

from aegis_gateway import (
    ApprovalRequired,
    AsyncClient,
    Client,
    Denied,
    GatewayUnavailable,
    action_hash,
)

from .gateway import Gateway
from .servers import LossyProxy, serving


@pytest.mark.asyncio
async def test_async_allow_runs_and_deny_raises(gateway: Gateway, agent: tuple[str, str]) -> None:
    ran: list[str] = []
    async with AsyncClient(gateway.base_url, agent[1]) as client:

        @client.protect(tool="github", action="get_file", resource=lambda path: path)
        async def get_file(path: str) -> str:
            ran.append(path)
            return path.upper()

        @client.protect(
            tool="github", action="merge_pull_request", source_trust="untrusted_external"
        )
        async def merge(pr: int) -> None:
            ran.append(f"merge {pr}")

        @client.protect(
            tool="github", action="merge_pull_request", source_trust="semi_trusted_customer"
        )
        async def merge_for_a_customer(pr: int) -> None:
            ran.append(f"merge {pr}")

        assert await get_file("readme") == "README"
        with pytest.raises(Denied) as denied:
            await merge(482)
        with pytest.raises(ApprovalRequired):
            await merge_for_a_customer(483)
        decision = await client.authorize("github", "get_file", parameters={"n": 1})
    assert ran == ["readme"]
    records = {r["decision_id"]: r for r in gateway.decisions_of(agent[0])}
    assert records[denied.value.decision_id]["decision"] == "deny"
    assert decision.action_hash == action_hash("github", "get_file", parameters={"n": 1})


@pytest.mark.asyncio
async def test_the_sync_client_guards_async_functions_too(
    gateway: Gateway, agent: tuple[str, str], client: Client
) -> None:
    @client.protect(tool="github", action="get_file")
    async def get_file(path: str) -> str:
        return path

    assert await get_file("README.md") == "README.md"
    [record] = gateway.decisions_of(agent[0])
    assert record["decision"] == "allow"


def test_the_async_client_refuses_to_guard_a_sync_function(gateway: Gateway) -> None:
    client = AsyncClient(gateway.base_url, "token")
    with pytest.raises(TypeError, match="async"):

        @client.protect(tool="github", action="get_file")  # type: ignore[type-var]
        def get_file(path: str) -> None:
            pass


@pytest.mark.asyncio
async def test_async_fail_closed_when_the_gateway_is_stopped(own_gateway: Gateway) -> None:
    _, token = own_gateway.new_agent("async-stopped")
    own_gateway.stop()
    async with AsyncClient(own_gateway.base_url, token, timeout=1, retries=1, backoff=0.05) as c:

        @c.protect(tool="github", action="get_file")
        async def get_file(path: str) -> None:
            raise AssertionError("must not run")

        with pytest.raises(GatewayUnavailable):
            await get_file("README.md")


@pytest.mark.asyncio
@pytest.mark.parametrize("lost_status", [None, 503], ids=["connection-lost", "503"])
async def test_async_retry_after_a_lost_answer_is_recorded_once(
    gateway: Gateway, agent: tuple[str, str], lost_status: int | None
) -> None:
    proxy = LossyProxy(gateway.base_url, lose=2, lost_status=lost_status)
    with serving(proxy.handler()) as base_url:
        async with AsyncClient(base_url, agent[1], retries=2, backoff=0.05) as client:
            decision = await client.authorize("github", "get_file")
    assert len(proxy.bodies) == 3
    assert len({body["request_id"] for body in proxy.bodies}) == 1
    [record] = gateway.decisions_of(agent[0])
    assert record["decision_id"] == decision.decision_id
