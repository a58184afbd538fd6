"""The canonical action hash, computed exactly as the gateway computes it.

`action_hash = hex(SHA-256(JCS({action, mutates_state, parameters, resource, tool})))` of the
tool call as the agent sends it, where JCS is RFC 8785 canonical JSON: absent `mutates_state`
is `false`, absent `resource` is `null`, absent `parameters` is `{}`. An approval is bound to
this hash, so an agent can compute it before it calls and compare it with the gateway's.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

import rfc8785

# RFC 8785 writes every number as an IEEE 754 double. The `rfc8785` package refuses integers
# a double cannot hold exactly; the gateway reads such an integer and rounds it to the nearest
# double, so the same rounding is applied here first (send such values as strings to keep
# them exact).
_SAFE_INTEGER = 2**53 - 1


def _as_gateway_reads(value: Any, path: str) -> Any:
    """`value` as the gateway holds it after parsing the JSON the client sends."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if -_SAFE_INTEGER <= value <= _SAFE_INTEGER:
            return value
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"{path}: the integer {value} is beyond a JSON number") from None
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path}: {value} is not a JSON number")
        return value
    if isinstance(value, Mapping):
        converted: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path}: object keys must be strings, got {key!r}")
            converted[key] = _as_gateway_reads(item, f"{path}.{key}")
        return converted
    if isinstance(value, (list, tuple)):
        return [_as_gateway_reads(item, f"{path}[{index}]") for index, item in enumerate(value)]
    raise ValueError(f"{path}: {type(value).__name__} is not JSON")


def canonical_json(value: Any, *, name: str = "value") -> bytes:
    """RFC 8785 canonical JSON of `value`; `ValueError` naming `name` when it is not JSON."""
    try:
        return rfc8785.dumps(_as_gateway_reads(value, name))
    except rfc8785.CanonicalizationError as error:
        raise ValueError(f"{name}: {error}") from None


def check_json_object(parameters: Any, name: str = "parameters") -> dict[str, Any]:
    """`parameters` as a JSON object, or `ValueError` naming the argument."""
    if not isinstance(parameters, Mapping):
        raise ValueError(
            f"{name} must be a mapping (a JSON object), got {type(parameters).__name__}"
        )
    # Canonicalising checks every value is JSON the gateway reads the same way.
    canonical_json(parameters, name=name)
    return dict(parameters)


def action_hash(
    tool: str,
    action: str,
    resource: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    mutates_state: bool | None = False,
) -> str:
    """The gateway's canonical hash of a tool call (lower-case hex SHA-256)."""
    if not isinstance(tool, str) or not tool.strip():
        raise ValueError("tool must be a non-blank string")
    if not isinstance(action, str) or not action.strip():
        raise ValueError("action must be a non-blank string")
    if resource is not None and not isinstance(resource, str):
        raise ValueError("resource must be a string or None")
    if mutates_state is not None and not isinstance(mutates_state, bool):
        raise ValueError("mutates_state must be a bool or None")
    call = {
        "action": action,
        "mutates_state": bool(mutates_state),
        "parameters": {} if parameters is None else check_json_object(parameters),
        "resource": resource,
        "tool": tool,
    }
    return hashlib.sha256(canonical_json(call, name="tool call")).hexdigest()
