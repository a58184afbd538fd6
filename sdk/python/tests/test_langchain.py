"""`guard_tool` with real LangChain tools, driven by LangChain's own fake chat model."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, tool

from aegis_gateway import AsyncClient, Client, GatewayUnavailable
from aegis_gateway.langchain import guard_tool

from .gateway import Gateway

ran: list[str] = []


@tool
def merge_pull_request(repo: str, pr: int) -> str:
    """Merge a pull request."""
    ran.append(f"merge {repo}#{pr}")
    return f"merged {repo}#{pr}"


@tool
def get_file(repo: str, path: str) -> str:
    """Read a file."""
    ran.append(f"read {repo}:{path}")
    return f"contents of {path}"


def script(*turns: AIMessage) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter(turns))


def call(name: str, call_id: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "args": arguments, "id": call_id, "type": "tool_call"}


def agent_loop(model: GenericFakeChatModel, tools: Sequence[BaseTool]) -> list[BaseMessage]:
    """The usual tool-calling loop: the model asks, each tool call runs, results go back."""
    by_name = {t.name: t for t in tools}
    messages: list[BaseMessage] = [HumanMessage("tidy up the payments service")]
    while True:
        answer = model.invoke(messages)
        messages.append(answer)
        if not isinstance(answer, AIMessage) or not answer.tool_calls:
            return messages
        for tool_call in answer.tool_calls:
            messages.append(by_name[tool_call["name"]].invoke(tool_call))


@pytest.fixture(autouse=True)
def nothing_ran() -> Iterator[None]:
    ran.clear()
    yield


def test_allowed_tool_calls_run_and_denied_ones_are_reported_to_the_model(
    gateway: Gateway, agent: tuple[str, str], client: Client
) -> None:
    tools = [
        guard_tool(
            get_file,
            client,
            gateway_tool="github",
            action="get_file",
            resource=lambda repo, path: f"{repo}:{path}",
        ),
        guard_tool(
            merge_pull_request,
            client,
            gateway_tool="github",
            action="merge_pull_request",
            source_trust="untrusted_external",
        ),
    ]
    model = script(
        AIMessage("", tool_calls=[call("get_file", "c1", repo="payments", path="README.md")]),
        AIMessage("", tool_calls=[call("merge_pull_request", "c2", repo="payments", pr=482)]),
        AIMessage("done"),
    )
    messages = agent_loop(model, tools)
    assert ran == ["read payments:README.md"]
    results = [m for m in messages if isinstance(m, ToolMessage)]
    assert results[0].content == "contents of README.md"
    assert results[1].status == "error"
    records = gateway.decisions_of(agent[0])
    denied = next(r for r in records if r["decision"] == "deny")
    assert denied["decision_id"] in str(results[1].content)
    assert {(r["action"], r["decision"]) for r in records} == {
        ("get_file", "allow"),
        ("merge_pull_request", "deny"),
    }
    # The guarded tool looks the same to the model.
    assert tools[1].name == "merge_pull_request"
    assert tools[1].args == merge_pull_request.args


@pytest.mark.asyncio
async def test_the_async_client_guards_ainvoke(gateway: Gateway, agent: tuple[str, str]) -> None:
    async with AsyncClient(gateway.base_url, agent[1]) as client:
        guarded = guard_tool(get_file, client, gateway_tool="github", action="get_file")
        assert await guarded.ainvoke({"repo": "payments", "path": "a.txt"}) == "contents of a.txt"
        denied = guard_tool(
            merge_pull_request,
            client,
            gateway_tool="github",
            action="merge_pull_request",
            source_trust="malicious_suspected",
        )
        refused = await denied.ainvoke(call("merge_pull_request", "c9", repo="p", pr=1))
    assert ran == ["read payments:a.txt"]
    assert isinstance(refused, ToolMessage) and refused.status == "error"
    assert [r["decision"] for r in gateway.decisions_of(agent[0])] == ["deny", "allow"]


def test_a_stopped_gateway_stops_the_run(own_gateway: Gateway) -> None:
    _, token = own_gateway.new_agent("langchain-stopped")
    own_gateway.stop()
    with Client(own_gateway.base_url, token, timeout=1, retries=0) as client:
        guarded = guard_tool(get_file, client, gateway_tool="github", action="get_file")
        with pytest.raises(GatewayUnavailable):
            guarded.invoke({"repo": "payments", "path": "README.md"})
    assert ran == []
