"""`action_hash` reproduces the repository's conformance vectors and the gateway's answers."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from aegis_gateway import Client, action_hash

from .gateway import REPO

VECTOR_FILES = [
    REPO / "crates/aegis-core/vectors/reference_canonical_action_vectors.json",
    REPO / "crates/aegis-core/vectors/canonical_action_vectors.json",
]
VECTORS: list[dict[str, Any]] = [
    vector for path in VECTOR_FILES for vector in json.loads(path.read_text())["vectors"]
]


def test_every_vector_file_is_read() -> None:
    assert len(VECTORS) == 4 + 7


def _arguments(call: dict[str, Any]) -> dict[str, Any]:
    return {
        "tool": call["tool"],
        "action": call["action"],
        "resource": call.get("resource"),
        "parameters": call.get("parameters"),
        "mutates_state": call.get("mutates_state"),
    }


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_the_hash_reproduces_the_vector(vector: dict[str, Any]) -> None:
    expected = hashlib.sha256(vector["canonical"].encode()).hexdigest()
    assert action_hash(**_arguments(vector["tool_call"])) == expected
    if "action_hash" in vector:
        assert expected == vector["action_hash"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_the_hash_equals_the_gateways_answer(vector: dict[str, Any], client: Client) -> None:
    arguments = _arguments(vector["tool_call"])
    decision = client.authorize(**arguments)
    assert decision.action_hash == action_hash(**arguments)


def test_hash_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="tool"):
        action_hash("", "a")
    with pytest.raises(ValueError, match="parameters"):
        action_hash("t", "a", parameters={"x": {1, 2}})
    with pytest.raises(ValueError, match="parameters"):
        action_hash("t", "a", parameters={"big": 10**400})
