"""LangChain adapter (`pip install "aegis-gateway[langchain]"`): `guard_tool` wraps a
`BaseTool` (or an `@tool` function) so that every invocation asks the gateway first.

A deny or a pending approval becomes a `ToolException` whose text the model sees (the
wrapped tool has `handle_tool_error=True`), so the agent can change course; the tool body does
not run. A gateway that cannot answer raises `GatewayUnavailable` out of the run (fail closed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.tools import BaseTool, StructuredTool, ToolException

from ._guard import Guard, GuardOptions
from .client import AsyncClient, Client
from .errors import ApprovalRequired, Denied

if TYPE_CHECKING:  # typing.Unpack is Python 3.11+; annotations are not evaluated at runtime
    from typing_extensions import Unpack


def guard_tool(
    tool: BaseTool,
    client: Client | AsyncClient,
    *,
    gateway_tool: str | None = None,
    action: str | None = None,
    **options: Unpack[GuardOptions],
) -> StructuredTool:
    """A tool with the same name, description and arguments as `tool`, guarded by `client`.

    The gateway sees `tool=gateway_tool` (default: the tool's name), `action` (default
    `"invoke"`) and the tool's arguments as `parameters` (unless given); `resource` and
    `source_trust` are values or callables given the arguments by name. With an
    `AsyncClient` the tool can only be run asynchronously (`ainvoke`).
    """
    if not isinstance(tool, BaseTool):
        raise ValueError(f"tool must be a LangChain BaseTool, got {type(tool).__name__}")
    if not isinstance(client, (Client, AsyncClient)):
        raise ValueError("client must be an aegis_gateway Client or AsyncClient")
    guard = Guard(
        tool=tool.name if gateway_tool is None else gateway_tool,
        action="invoke" if action is None else action,
        fail_open=False,  # an adapter never runs a tool without a decision
        **options,
    )

    async def arun(**arguments: Any) -> Any:
        try:
            await client._check_async(guard, arguments)
        except (Denied, ApprovalRequired) as refused:
            raise ToolException(str(refused)) from refused
        return await tool.ainvoke(arguments)

    def run(**arguments: Any) -> Any:
        if isinstance(client, AsyncClient):
            raise RuntimeError(
                f"tool {tool.name} is guarded by an AsyncClient: run it with ainvoke"
            )
        try:
            client._check(guard, arguments)
        except (Denied, ApprovalRequired) as refused:
            raise ToolException(str(refused)) from refused
        return tool.invoke(arguments)

    return StructuredTool.from_function(
        func=run,
        coroutine=arun,
        name=tool.name,
        description=tool.description,
        args_schema=tool.args_schema,
        return_direct=tool.return_direct,
        handle_tool_error=True,
    )
