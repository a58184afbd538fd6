"""`Client.protect` and `Client.authorize` against the real gateway: allow, deny, bad input."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from aegis_gateway import (
    ApprovalRequired,
    Client,
    Decision,
    Denied,
    GatewayError,
    action_hash,
)

from .gateway import Gateway


def test_an_allowed_call_runs_and_its_decision_is_recorded(
    gateway: Gateway, agent: tuple[str, str], client: Client
) -> None:
    ran: list[str] = []

    @client.protect(tool="github", action="get_file", resource=lambda repo, path: f"{repo}:{path}")
    def get_file(repo: str, path: str) -> str:
        ran.append(path)
        return f"contents of {path}"

    assert get_file("payments-service", "README.md") == "contents of README.md"
    assert ran == ["README.md"]
    [record] = gateway.decisions_of(agent[0])
    assert (record["tool"], record["action"], record["decision"]) == ("github", "get_file", "allow")
    assert record["resource"] == "payments-service:README.md"


def test_a_denied_call_raises_denied_and_never_runs(
    gateway: Gateway, agent: tuple[str, str], client: Client
) -> None:
    ran: list[int] = []

    @client.protect(
        tool="github",
        action="merge_pull_request",
        resource=lambda repo, pr: f"{repo}#{pr}",
        source_trust="untrusted_external",
    )
    def merge(repo: str, pr: int) -> None:
        ran.append(pr)

    with pytest.raises(Denied) as denied:
        merge("payments-service", 482)
    assert ran == []
    [record] = gateway.decisions_of(agent[0])
    assert denied.value.decision_id == record["decision_id"]
    assert denied.value.reason == record["reason"]
    assert denied.value.decision.decision == "deny"
    assert denied.value.decision_id in str(denied.value)


def test_require_approval_raises_without_wait(client: Client) -> None:
    @client.protect(
        tool="github", action="merge_pull_request", source_trust="semi_trusted_customer"
    )
    def merge(repo: str, pr: int) -> None:
        raise AssertionError("must not run")

    with pytest.raises(ApprovalRequired) as required:
        merge("payments-service", 482)
    assert required.value.decision.decision == "require_approval"


def test_authorize_answers_a_typed_decision_with_the_local_hash(client: Client) -> None:
    parameters: dict[str, Any] = {"path": "src/lib.rs", "ref": "main", "lines": [1, 20]}
    decision = client.authorize(
        "github",
        "get_file",
        resource="payments-service",
        parameters=parameters,
        source_trust="trusted_internal_signed",
        run_id="run-1",
        trace_id="trace-1",
    )
    assert isinstance(decision, Decision)
    assert decision.allowed
    assert decision.decision_id.startswith("dec_")
    assert 0 <= decision.risk_score <= 100
    assert decision.matched_policies
    assert decision.receipt.seq >= 1 and len(decision.receipt.hash) == 64
    assert decision.approval is None
    assert decision.action_hash == action_hash(
        "github", "get_file", "payments-service", parameters, mutates_state=False
    )


def test_parameters_default_to_the_functions_arguments(
    gateway: Gateway, agent: tuple[str, str], client: Client
) -> None:
    @client.protect(tool="github", action="get_file")
    def get_file(repo: str, path: str = "README.md", **options: Any) -> None:
        pass

    get_file("payments-service", ref="main")
    [record] = gateway.decisions_of(agent[0])
    expected = action_hash(
        "github", "get_file", None, {"repo": "payments-service", "path": "README.md", "ref": "main"}
    )
    assert record["action_hash"] == expected


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"tool": ""}, "tool"),
        ({"tool": "t" * 129}, "tool"),
        ({"action": None}, "action"),
        ({"resource": 7}, "resource"),
        ({"parameters": ["not", "an", "object"]}, "parameters"),
        ({"parameters": {"when": object()}}, "parameters"),
        ({"parameters": {"x": float("nan")}}, "parameters"),
        ({"source_trust": "trusted"}, "source_trust"),
        ({"mutates_state": "yes"}, "mutates_state"),
        ({"run_id": " "}, "run_id"),
        ({"request_id": ""}, "request_id"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them_before_any_request(
    arguments: dict[str, Any], named: str
) -> None:
    # Nothing listens on this port: a request would raise GatewayUnavailable instead.
    with Client("http://127.0.0.1:9", "token", retries=0) as offline:
        call: dict[str, Any] = {"tool": "github", "action": "get_file", **arguments}
        with pytest.raises(ValueError, match=named):
            offline.authorize(**call)


def test_bad_protect_arguments_are_refused_when_decorating(client: Client) -> None:
    with pytest.raises(ValueError, match="fail_open"):
        client.protect(tool="github", action="merge_pull_request", fail_open=True)
    with pytest.raises(ValueError, match="source_trust"):
        client.protect(tool="github", action="get_file", source_trust="somewhat")
    with pytest.raises(ValueError, match="wait_timeout"):
        client.protect(tool="github", action="get_file", wait=True, wait_timeout=0)
    with pytest.raises(ValueError, match="base_url"):
        Client("127.0.0.1:8080", "token")


def test_a_bad_token_is_a_gateway_error_that_does_not_show_it(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "aat_this-is-not-a-valid-token-0123456789"
    caplog.set_level(logging.DEBUG)
    with Client(gateway.base_url, secret) as wrong:
        assert secret not in repr(wrong)
        with pytest.raises(GatewayError) as refused:
            wrong.authorize("github", "get_file")
    assert refused.value.status == 401
    assert secret not in str(refused.value)
    assert secret not in caplog.text
