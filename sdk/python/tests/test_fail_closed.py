"""Fail closed: without a decision the tool never runs; retries are recorded once."""

from __future__ import annotations

import logging
import socket

import pytest

from aegis_gateway import (
    Client,
    GatewayError,
    GatewayUnavailable,
    UnexpectedResponse,
)

from .gateway import Gateway
from .servers import LossyProxy, answering, serving


def test_a_stopped_gateway_never_lets_the_tool_run(own_gateway: Gateway) -> None:
    _, token = own_gateway.new_agent("stopped")
    ran: list[str] = []
    with Client(own_gateway.base_url, token, timeout=1, retries=2, backoff=0.05) as client:

        @client.protect(tool="github", action="get_file")
        def get_file(path: str) -> None:
            ran.append(path)

        get_file("before")
        own_gateway.stop()
        with pytest.raises(GatewayUnavailable) as unavailable:
            get_file("after")
    assert ran == ["before"]
    assert token not in str(unavailable.value)


def test_a_gateway_slower_than_the_timeout_never_lets_the_tool_run() -> None:
    # A listening socket nobody accepts from: the connection opens, no answer ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        base_url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with Client(base_url, "token", timeout=0.3, retries=1, backoff=0.05) as client:

            @client.protect(tool="github", action="get_file")
            def get_file(path: str) -> None:
                raise AssertionError("must not run")

            with pytest.raises(GatewayUnavailable, match="Timeout"):
                get_file("README.md")


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (200, b"<html>" + b"x" * 500 + b"</html>", "text/html"),
        (200, b'{"decision": "maybe"}', "application/json"),
        (200, b'{"decision": "allow", "decision_id": 7}', "application/json"),
        (418, b"I'm a teapot", "text/plain"),
        (500, b'{"error": {"code": "internal", "message": "boom"}}', "application/json"),
    ],
)
def test_an_answer_that_is_not_a_decision_never_lets_the_tool_run(
    status: int, body: bytes, content_type: str
) -> None:
    token = "aat_secret-token-value"
    server = serving(answering(status, body + token.encode(), content_type))
    with server as base_url, Client(base_url, token, timeout=2, retries=0) as client:

        @client.protect(tool="github", action="get_file")
        def get_file(path: str) -> None:
            raise AssertionError("must not run")

        with pytest.raises(GatewayUnavailable) as unavailable:
            get_file("README.md")
    message = str(unavailable.value)
    assert token not in message
    assert f"HTTP {status}" in message
    if isinstance(unavailable.value, UnexpectedResponse):
        assert len(unavailable.value.body_excerpt) <= 200
        assert body[:20].decode(errors="replace")[:10] in message


@pytest.mark.parametrize(("status", "attempts"), [(502, 3), (503, 3), (504, 3), (500, 1)])
def test_a_failing_gateway_is_retried_then_never_lets_the_tool_run(
    status: int, attempts: int
) -> None:
    requests: list[str] = []
    server = serving(answering(status, b'{"error": "busy"}', "application/json", requests))
    with server as base_url, Client(base_url, "token", retries=2, backoff=0.01) as client:

        @client.protect(tool="github", action="get_file")
        def get_file(path: str) -> None:
            raise AssertionError("must not run")

        with pytest.raises(GatewayUnavailable, match=f"HTTP {status}"):
            get_file("README.md")
    # 502/503/504 are retried (2 more attempts); a 500 is a bug, and repeating it changes nothing.
    assert requests == ["/v1/authorize"] * attempts


def test_fail_open_runs_only_declared_reads_when_the_gateway_is_down(
    own_gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    _, token = own_gateway.new_agent("fail-open")
    own_gateway.stop()
    ran: list[str] = []
    with Client(own_gateway.base_url, token, timeout=1, retries=0) as client:

        @client.protect(tool="github", action="get_file", mutates_state=False, fail_open=True)
        def get_file(path: str) -> None:
            ran.append(path)

        @client.protect(tool="github", action="merge_pull_request", mutates_state=True)
        def merge(pr: int) -> None:
            ran.append(f"merge {pr}")

        with caplog.at_level(logging.WARNING, logger="aegis_gateway"):
            get_file("README.md")
        with pytest.raises(GatewayUnavailable):
            merge(482)
    assert ran == ["README.md"]
    assert "fail_open" in caplog.text
    assert token not in caplog.text


def test_a_retry_after_a_lost_answer_is_recorded_once(
    gateway: Gateway, agent: tuple[str, str]
) -> None:
    proxy = LossyProxy(gateway.base_url, lose=1)
    with (
        serving(proxy.handler()) as base_url,
        Client(base_url, agent[1], timeout=5, retries=2, backoff=0.05) as client,
    ):
        decision = client.authorize("github", "get_file", resource="README.md")
    first, retry = proxy.bodies
    assert first == retry, "the retry repeats the call with the same request_id"
    [record] = gateway.decisions_of(agent[0])
    assert record["decision_id"] == decision.decision_id
    assert record["request_id"] == first["request_id"]


def test_a_retry_after_a_503_is_recorded_once(gateway: Gateway, agent: tuple[str, str]) -> None:
    # The gateway decided, but a proxy in front of it answered 503 (twice).
    proxy = LossyProxy(gateway.base_url, lose=2, lost_status=503)
    with (
        serving(proxy.handler()) as base_url,
        Client(base_url, agent[1], timeout=5, retries=2, backoff=0.05) as client,
    ):
        decision = client.authorize("github", "get_file", resource="README.md")
    assert len(proxy.bodies) == 3
    assert len({body["request_id"] for body in proxy.bodies}) == 1
    [record] = gateway.decisions_of(agent[0])
    assert record["decision_id"] == decision.decision_id


def test_a_repeated_request_id_gets_the_stored_decision(
    gateway: Gateway, agent: tuple[str, str], client: Client
) -> None:
    once = client.authorize("github", "get_file", request_id="req-fixed-1")
    again = client.authorize("github", "get_file", request_id="req-fixed-1")
    assert again == once
    assert len(gateway.decisions_of(agent[0])) == 1
    other = client.authorize("github", "get_file", request_id="req-fixed-2")
    assert other.decision_id != once.decision_id


def test_a_repeated_request_id_never_bypasses_a_freeze_or_a_revoke(
    gateway: Gateway, agent: tuple[str, str], client: Client
) -> None:
    agent_id, _ = agent
    allowed = client.authorize("github", "get_file", request_id="req-before-freeze")
    assert allowed.allowed
    gateway.call("POST", f"/v1/agents/{agent_id}/freeze", json={"reason": "investigating"})
    refused = client.authorize("github", "get_file", request_id="req-before-freeze")
    assert refused.decision == "deny"
    assert refused.decision_id != allowed.decision_id
    assert "frozen" in refused.reason or "investigating" in refused.reason
    gateway.call("POST", f"/v1/agents/{agent_id}/revoke", json={})
    with pytest.raises(GatewayError) as revoked:
        client.authorize("github", "get_file", request_id="req-before-freeze")
    assert revoked.value.status == 401
