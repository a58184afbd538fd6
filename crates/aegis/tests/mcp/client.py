"""Drives an MCP server with the official Python SDK's client, as an agent's MCP client
would, and prints what it saw as JSON. Usage: client.py PROGRAM_JSON

PROGRAM_JSON: {"url", "token"?, "headers"?, "then_url"?, "steps": [...]}, each step
{"op": "list"} or {"op": "call", "name", "arguments"?, "meta"?}. With "then_url", every
request after the initialize handshake goes to that URL instead (another replica), in the
same client session. With {"stdio": {"command", "args", "env"}, "steps"} instead of "url",
the client starts that command and speaks MCP over its standard input and output, as a
desktop MCP client starts a local server.
"""

import asyncio
import json
import sys

import httpx2
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client


def text_of(result) -> str:
    return "\n".join(block.text for block in result.content if getattr(block, "text", None) is not None)


async def run_steps(read, write, steps: list, after_handshake=lambda: None) -> list:
    seen = []
    async with ClientSession(read, write) as session:
        info = await session.initialize()
        seen.append({"op": "initialize", "server": info.server_info.name})
        after_handshake()
        for step in steps:
            try:
                if step["op"] == "list":
                    tools = await session.list_tools()
                    seen.append({"op": "list", "tools": sorted(t.name for t in tools.tools)})
                elif step["op"] == "ping":
                    await session.send_ping()
                    seen.append({"op": "ping"})
                else:
                    result = await session.call_tool(
                        step["name"], step.get("arguments", {}), meta=step.get("meta")
                    )
                    seen.append({"op": "call", "is_error": bool(result.is_error), "text": text_of(result)})
            except Exception as error:  # the test asserts on what failed
                seen.append({"op": step["op"], "error": f"{type(error).__name__}: {error}"})
    return seen


async def main(program: dict) -> list:
    if "stdio" in program:
        async with stdio_client(StdioServerParameters(**program["stdio"])) as (read, write, *_):
            return await run_steps(read, write, program["steps"])
    headers = dict(program.get("headers", {}))
    if program.get("token"):
        headers["Authorization"] = f"Bearer {program['token']}"
    handshake_done = False

    def handshake_is_done() -> None:
        nonlocal handshake_done
        handshake_done = True

    async def redirect(request: httpx2.Request) -> None:
        if handshake_done and program.get("then_url"):
            request.url = httpx2.URL(program["then_url"])

    http = httpx2.AsyncClient(headers=headers, event_hooks={"request": [redirect]}, timeout=60)
    async with http, streamable_http_client(program["url"], http_client=http) as (read, write, *_):
        return await run_steps(read, write, program["steps"], handshake_is_done)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
