"""OpenAI Agents SDK adapter (`pip install "aegis-gateway[openai-agents]"`): a tool input
guardrail that asks the gateway before a function tool runs.

    from agents import function_tool
    from aegis_gateway.openai_agents import gateway_guardrail

    @function_tool(tool_input_guardrails=[gateway_guardrail(client, gateway_tool="github")])
    def merge_pull_request(repo: str, pr: int) -> str: ...

A deny or a pending approval rejects the call with a message the model sees (the tool does not
run); a gateway that cannot answer halts the run (`ToolInputGuardrailTripwireTriggered`,
fail closed).
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from agents import (
    ToolGuardrailFunctionOutput,
    ToolInputGuardrail,
    ToolInputGuardrailData,
)

from ._guard import Guard, GuardOptions
from .client import AsyncClient, Client
from .errors import AegisError, ApprovalRequired, Denied

if TYPE_CHECKING:  # typing.Unpack is Python 3.11+; annotations are not evaluated at runtime
    from typing_extensions import Unpack


def gateway_guardrail(
    client: Client | AsyncClient,
    *,
    gateway_tool: str | None = None,
    action: str | None = None,
    **options: Unpack[GuardOptions],
) -> ToolInputGuardrail[Any]:
    """A guardrail for function tools. The gateway sees `tool=gateway_tool` (default: the
    function tool's name), `action` (default: the function tool's name) and the tool's
    arguments as `parameters` (unless given); `resource` and `source_trust` are values or
    callables given the arguments by name."""
    if not isinstance(client, (Client, AsyncClient)):
        raise ValueError("client must be an aegis_gateway Client or AsyncClient")
    # The names are checked now; the tool's own name fills them in per call.
    template = Guard(
        tool=gateway_tool or "tool",
        action=action or "action",
        fail_open=False,  # an adapter never runs a tool without a decision
        **options,
    )

    async def ask_the_gateway(data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
        name = data.context.tool_name
        guard = dataclasses.replace(template, tool=gateway_tool or name, action=action or name)
        try:
            arguments = json.loads(data.context.tool_arguments or "{}")
            if not isinstance(arguments, dict):
                raise ValueError("the tool arguments are not a JSON object")
            decision = await client._check_async(guard, arguments)
        except (Denied, ApprovalRequired) as refused:
            return ToolGuardrailFunctionOutput.reject_content(
                str(refused), output_info={"decision_id": refused.decision_id}
            )
        except (AegisError, ValueError) as error:
            # Fail closed: without a decision the tool must not run, and the run stops.
            return ToolGuardrailFunctionOutput.raise_exception(output_info={"error": str(error)})
        decision_id = decision.decision_id if decision else None
        return ToolGuardrailFunctionOutput.allow(output_info={"decision_id": decision_id})

    return ToolInputGuardrail(guardrail_function=ask_the_gateway, name="aegis_gateway")
