"""`verify_receipts` checks `aegis receipts export` output offline, like `aegis receipts verify`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aegis_gateway import Client, verify_receipts

from .gateway import Gateway


@pytest.fixture
def exported(own_gateway: Gateway, tmp_path: Path) -> list[str]:
    """A chain of a few decisions (allows and denies), exported after the gateway stopped."""
    _, token = own_gateway.new_agent("receipts")
    with Client(own_gateway.base_url, token) as client:
        for pr in range(3):
            client.authorize("github", "get_file", resource=f"file-{pr}")
            client.authorize(
                "github", "merge_pull_request", resource=f"pr-{pr}", source_trust="unknown"
            )
    own_gateway.stop()
    lines = own_gateway.aegis("receipts", "export", "--db", str(own_gateway.db)).stdout
    (tmp_path / "receipts.jsonl").write_text(lines)
    return lines.splitlines()


def test_an_exported_chain_verifies(exported: list[str], tmp_path: Path) -> None:
    result = verify_receipts(tmp_path / "receipts.jsonl")
    assert result, result.error
    assert (result.receipts, result.chains) == (6, 1)
    assert verify_receipts(exported).ok


def _edit(lines: list[str], index: int, **changes: object) -> list[str]:
    edited = list(lines)
    receipt = json.loads(edited[index])
    receipt.update(changes)
    edited[index] = json.dumps(receipt)
    return edited


def test_a_tampered_line_is_caught_and_named(exported: list[str], own_gateway: Gateway) -> None:
    tampered = _edit(exported, 2, decision="allow", risk_score=0)
    result = verify_receipts(tampered)
    assert not result
    assert result.error is not None
    assert "line 3" in result.error and "hash does not match" in result.error
    # The gateway's own verifier names the same receipt.
    path = own_gateway.directory / "tampered.jsonl"
    path.write_text("\n".join(tampered) + "\n")
    cli = own_gateway.aegis("receipts", "verify", str(path), check=False)
    assert cli.returncode != 0
    assert "line 3" in cli.stderr + cli.stdout


def test_a_dropped_or_reordered_receipt_is_caught(exported: list[str]) -> None:
    assert "gap or reordering" in (verify_receipts(exported[:2] + exported[3:]).error or "")
    assert not verify_receipts([exported[1], exported[0], *exported[2:]])


def test_a_receipt_without_its_checkpoint_is_caught(exported: list[str]) -> None:
    # The last receipt carries an earlier (validly signed) checkpoint instead of its own.
    last = json.loads(exported[-1])
    last["checkpoint"] = json.loads(exported[0])["checkpoint"]
    result = verify_receipts([*exported[:-1], json.dumps(last)])
    assert not result
    assert "no valid signed checkpoint covers this receipt" in (result.error or "")


def test_a_recomputed_hash_without_the_signing_key_is_caught(exported: list[str]) -> None:
    import hashlib

    import rfc8785

    receipt = json.loads(exported[-1])
    receipt["decision"] = "allow"
    body = {k: v for k, v in receipt.items() if k not in ("hash", "checkpoint", "public_key")}
    receipt["hash"] = hashlib.sha256(rfc8785.dumps(body)).hexdigest()
    result = verify_receipts([*exported[:-1], json.dumps(receipt)])
    assert not result
    assert "checkpoint" in (result.error or "")


def test_pinned_keys_refuse_a_file_signed_by_another_key(exported: list[str]) -> None:
    first = json.loads(exported[0])
    key_id, public_key = first["checkpoint"]["key_id"], first["public_key"]
    assert verify_receipts(exported, trusted_keys={key_id: public_key})
    other = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    from aegis_gateway.receipts import key_id as derive_key_id

    result = verify_receipts(exported, trusted_keys={derive_key_id(bytes.fromhex(other)): other})
    assert not result
    assert "unknown key" in (result.error or "")
    with pytest.raises(ValueError, match="trusted_keys"):
        verify_receipts(exported, trusted_keys={"0000000000000000": public_key})


def test_a_line_that_is_not_a_receipt_is_named(exported: list[str]) -> None:
    result = verify_receipts([exported[0], "{not json", *exported[1:]])
    assert not result
    assert "line 2" in (result.error or "")
