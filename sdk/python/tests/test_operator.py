"""`OperatorClient` against the real gateway: incidents, freeze/unfreeze, the live feed."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from aegis_gateway import Client, Denied, GatewayError, GatewayUnavailable, OperatorClient

from .gateway import Gateway
from .servers import LossyProxy, serving


@pytest.fixture
def operator(gateway: Gateway) -> Iterator[OperatorClient]:
    with OperatorClient(gateway.base_url, gateway.admin_key) as ops:
        yield ops


def test_freeze_and_unfreeze_an_agent(
    gateway: Gateway, agent: tuple[str, str], client: Client, operator: OperatorClient
) -> None:
    agent_id, _ = agent
    assert operator.freeze(agent_id, reason="investigating")["status"] == "frozen"

    @client.protect(tool="github", action="get_file")
    def get_file(path: str) -> str:
        return path

    with pytest.raises(Denied, match="investigating"):
        get_file("README.md")
    assert operator.unfreeze(agent_id)["status"] == "active"
    assert get_file("README.md") == "README.md"
    assert operator.agent(agent_id)["status"] == "active"
    assert gateway.admin_key not in repr(operator)


def test_a_deny_storm_shows_up_as_an_incident(
    agent: tuple[str, str], client: Client, operator: OperatorClient
) -> None:
    agent_id, _ = agent
    for pr in range(5):
        decision = client.authorize(
            "github", "merge_pull_request", resource=f"pr-{pr}", source_trust="untrusted_external"
        )
        assert decision.decision == "deny"
    deadline = time.monotonic() + 20
    storms: list[dict[str, Any]] = []
    while not storms and time.monotonic() < deadline:
        storms = operator.incidents(kind="deny_storm", agent_id=agent_id)
        time.sleep(0.1)
    [storm] = storms
    assert storm["agent_id"] == agent_id
    assert operator.incident(storm["id"])["id"] == storm["id"]


def test_the_live_feed_streams_decisions(
    agent: tuple[str, str], client: Client, operator: OperatorClient
) -> None:
    received: queue.Queue[dict[str, Any]] = queue.Queue()
    feed = operator.events(kinds=["decision"], agent_id=agent[0])

    def follow() -> None:
        for message in feed:
            received.put(message)
            if message.get("type") == "event":
                return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    hello = received.get(timeout=10)
    assert hello["type"] == "hello"
    decision = client.authorize("github", "get_file", resource="README.md")
    event = received.get(timeout=10)
    assert event["type"] == "event"
    assert decision.decision_id in str(event)
    follower.join(timeout=10)


def test_a_lost_freeze_answer_is_not_repeated(
    gateway: Gateway, agent: tuple[str, str], operator: OperatorClient
) -> None:
    # Only reads are retried: the freeze happened, its answer was lost, nothing is resent.
    proxy = LossyProxy(gateway.base_url, lose=1)
    with (
        serving(proxy.handler()) as base_url,
        OperatorClient(base_url, gateway.admin_key, retries=2) as through_proxy,
        pytest.raises(GatewayUnavailable),
    ):
        through_proxy.freeze(agent[0], reason="investigating")
    assert len(proxy.bodies) == 1
    assert operator.agent(agent[0])["status"] == "frozen"


def test_operator_errors_are_typed(gateway: Gateway, operator: OperatorClient) -> None:
    with pytest.raises(GatewayError) as missing:
        operator.agent("agt_does_not_exist")
    assert missing.value.status == 404
    with pytest.raises(ValueError, match="agent_id"):
        operator.freeze("", reason="x")
    with (
        OperatorClient(gateway.base_url, "ak_not-a-key") as stranger,
        pytest.raises(GatewayError) as refused,
    ):
        stranger.incidents()
    assert refused.value.status == 401
    assert "ak_not-a-key" not in str(refused.value)
