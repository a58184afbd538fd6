"""The OpenAI Agents SDK guardrail, with the SDK's own scripted model and its real runner."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from agents import Agent, RunConfig, Runner, Tool, function_tool
from agents.exceptions import ToolInputGuardrailTripwireTriggered
from agents.testing import ScriptedModel, assistant_message, function_call

from aegis_gateway import AsyncClient, Client
from aegis_gateway.openai_agents import gateway_guardrail

from .gateway import Gateway

ran: list[str] = []


@pytest.fixture(autouse=True)
def nothing_ran() -> Iterator[None]:
    ran.clear()
    yield


def tools(client: Client | AsyncClient) -> list[Tool]:
    @function_tool(
        tool_input_guardrails=[
            gateway_guardrail(client, gateway_tool="github", resource=lambda repo, path: path)
        ]
    )
    def get_file(repo: str, path: str) -> str:
        """Read a file."""
        ran.append(f"read {path}")
        return f"contents of {path}"

    @function_tool(
        tool_input_guardrails=[
            gateway_guardrail(client, gateway_tool="github", source_trust="untrusted_external")
        ]
    )
    def merge_pull_request(repo: str, pr: int) -> str:
        """Merge a pull request."""
        ran.append(f"merge {pr}")
        return "merged"

    return [get_file, merge_pull_request]


def scripted() -> ScriptedModel:
    return ScriptedModel(
        [
            [function_call("get_file", {"repo": "payments", "path": "README.md"}, call_id="c1")],
            [function_call("merge_pull_request", {"repo": "payments", "pr": 482}, call_id="c2")],
            [assistant_message("done")],
        ]
    )


async def run_agent(client: Client | AsyncClient, model: ScriptedModel) -> str:
    agent = Agent(name="maintainer", model=model, tools=tools(client))
    result = await Runner.run(agent, "tidy up", run_config=RunConfig(tracing_disabled=True))
    return str(result.final_output)


def check_the_run(gateway: Gateway, agent_id: str, model: ScriptedModel) -> None:
    assert ran == ["read README.md"]
    records = gateway.decisions_of(agent_id)
    assert {(r["action"], r["decision"]) for r in records} == {
        ("get_file", "allow"),
        ("merge_pull_request", "deny"),
    }
    # The model was told about the refusal, with the decision id, instead of a result.
    denied = next(r for r in records if r["decision"] == "deny")
    assert model.last_call is not None
    assert denied["decision_id"] in str(model.last_call)


@pytest.mark.asyncio
async def test_a_sync_client_guards_function_tools(
    gateway: Gateway, agent: tuple[str, str], client: Client
) -> None:
    model = scripted()
    assert await run_agent(client, model) == "done"
    check_the_run(gateway, agent[0], model)


@pytest.mark.asyncio
async def test_an_async_client_guards_function_tools(
    gateway: Gateway, agent: tuple[str, str]
) -> None:
    model = scripted()
    async with AsyncClient(gateway.base_url, agent[1]) as client:
        assert await run_agent(client, model) == "done"
    check_the_run(gateway, agent[0], model)


@pytest.mark.asyncio
async def test_a_stopped_gateway_halts_the_run(own_gateway: Gateway) -> None:
    _, token = own_gateway.new_agent("agents-stopped")
    own_gateway.stop()
    async with AsyncClient(own_gateway.base_url, token, timeout=1, retries=0) as client:
        with pytest.raises(ToolInputGuardrailTripwireTriggered):
            await run_agent(client, scripted())
    assert ran == []
