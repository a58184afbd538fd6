"""`verify_receipts` checks `aegis receipts export` output offline, like `aegis receipts verify`."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from aegis_gateway import Client, Decision, OperatorClient, verify_receipts

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


def test_the_receipt_of_a_consumed_approval_verifies(own_gateway: Gateway) -> None:
    # The allow that consumes an approval names it and its approvers in its receipt body.
    _, token = own_gateway.new_agent("approved")
    with Client(own_gateway.base_url, token) as client:

        def merge() -> Decision:
            return client.authorize(
                "github",
                "merge_pull_request",
                resource="payments#1",
                source_trust="semi_trusted_customer",
            )

        asked = merge()
        assert asked.decision == "require_approval" and asked.approval is not None
        with OperatorClient(own_gateway.base_url, own_gateway.admin_key) as ops:
            ops.approve(asked.approval.id, reason="reviewed")
        assert merge().decision == "allow"
    own_gateway.stop()
    lines = own_gateway.aegis("receipts", "export", "--db", str(own_gateway.db)).stdout
    receipts = [json.loads(line) for line in lines.splitlines()]
    assert [r.get("approval", {}).get("id") for r in receipts] == [None, asked.approval.id]
    result = verify_receipts(lines.splitlines())
    assert result, result.error
    assert result.receipts == 2
    # The approval is hashed like every other field: naming another one breaks the chain.
    forged = receipts[-1] | {"approval": {"id": "apr_other", "approved_by": []}}
    broken = verify_receipts([*lines.splitlines()[:-1], json.dumps(forged)])
    assert "hash does not match" in (broken.error or "")


def test_an_archive_and_the_pruned_chain_verify(own_gateway: Gateway, tmp_path: Path) -> None:
    _, token = own_gateway.new_agent("archived")

    def reads(first: int, count: int) -> None:
        with Client(own_gateway.base_url, token) as client:
            for n in range(first, first + count):
                assert client.authorize("github", "get_file", resource=f"f{n}").decision == "allow"

    def consumed() -> None:
        # A decision is archived only once the SOC and notification consumers read its event.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            lags = [
                line.rsplit(" ", 1)[1]
                for line in httpx.get(f"{own_gateway.base_url}/metrics").text.splitlines()
                if line.startswith("aegis_consumer_lag_events{")
            ]
            if lags and all(lag == "0" for lag in lags):
                return
            time.sleep(0.1)
        raise AssertionError("the consumers did not catch up")

    reads(0, 4)
    consumed()
    own_gateway.stop()
    archive = tmp_path / "archive.jsonl"
    before = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    own_gateway.aegis(
        "archive", "--db", str(own_gateway.db), "--before", before, "--out", str(archive)
    )
    own_gateway.start()
    reads(4, 2)
    own_gateway.stop()
    live = own_gateway.aegis("receipts", "export", "--db", str(own_gateway.db)).stdout
    live_lines = live.splitlines()

    # The cut never takes a chain's head: of the first four receipts, three are archived.
    archived = verify_receipts(archive)
    assert archived, archived.error
    assert archived.receipts == 3
    # The live chain starts after the signed cut its header carries, not at seq 1.
    header = json.loads(live_lines[0])
    assert header["chains"][0]["starts_after"]["pruned_through_seq"] == 3
    pruned = verify_receipts(live_lines)
    assert pruned, pruned.error
    assert pruned.receipts == 3

    # A cut whose signature does not hold, or an archive cut short, is refused.
    header["chains"][0]["starts_after"]["pruned_through_seq"] = 2
    forged = verify_receipts([json.dumps(header), *live_lines[1:]])
    assert "bad signature" in (forged.error or "")
    short = archive.read_text().splitlines()[:-1]
    assert "header says the archive holds the chain through seq 3" in (
        verify_receipts(short).error or ""
    )


def test_a_checkpoint_moved_within_its_batch_is_caught(exported: list[str]) -> None:
    # Each checkpoint is signed as a leaf of its commit batch's Merkle tree; claiming another
    # place in the batch (or another batch size) breaks the path to the signed root.
    last = json.loads(exported[-1])
    batch = last["checkpoint"]["batch"]
    assert batch["index"] < batch["size"]
    for moved in ({"index": batch["size"]}, {"size": batch["size"] + 1}):
        edited = json.loads(exported[-1])
        edited["checkpoint"]["batch"] = {**batch, **moved}
        result = verify_receipts([*exported[:-1], json.dumps(edited)])
        assert not result
        assert "bad signature" in (result.error or "")


def test_merkle_paths_follow_the_certificate_transparency_reference() -> None:
    # transparency-dev/merkle, testdata/inclusion/3/happy-path.json (Apache-2.0): leaf 2 of a
    # tree of 3 over the reference leaf inputs "", "00", "10".
    import hashlib

    from aegis_gateway.receipts import _merkle_root

    leaf = hashlib.sha256(b"\x00" + bytes.fromhex("10")).digest()
    path = [bytes.fromhex("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]
    root = "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"
    assert (_merkle_root(leaf, 2, 3, path) or b"").hex() == root
    assert _merkle_root(leaf, 1, 3, path) != bytes.fromhex(root)
    assert _merkle_root(leaf, 3, 3, path) is None
