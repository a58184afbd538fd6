"""Offline verification of exported receipt chains (`aegis receipts export`) and archive
segments (`aegis archive`), with the rules of `aegis receipts verify FILE`: the receipt body
schema, hash links, gap-free `seq`, Ed25519-signed checkpoints over chain heads, and a
segment's signed cut and end (see docs/receipts.md in the repository)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ._canonical import canonical_json

# The receipt body of schema version 1, field by field, with its JSON type.
_BODY_FIELDS: dict[str, type] = {
    "v": int,
    "id": str,
    "tenant_id": str,
    "seq": int,
    "decision_id": str,
    "agent_id": str,
    "tool": str,
    "action": str,
    "decision": str,
    "risk_score": int,
    "matched_policies": list,
    "action_hash": str,
    "created_at": str,
    "prev_hash": str,
}
_CHECKPOINT_FIELDS: dict[str, type] = {
    "v": int,
    "tenant_id": str,
    "seq": int,
    "head_hash": str,
    "key_id": str,
    "signed_at": str,
}
# What one signature covers when a commit batch signs the checkpoints of every chain it
# extended at once: the Merkle root (RFC 9162, SHA-256) of the checkpoint bodies, and how many.
_BATCH_FIELDS: dict[str, type] = {
    "v": int,
    "checkpoints_root": str,
    "checkpoints": int,
    "key_id": str,
    "signed_at": str,
}
# The signed statement that a chain's receipts through a seq were archived and pruned: where
# a segment (or the export of a pruned chain) starts instead of seq 1.
_CUT_FIELDS: dict[str, type] = {
    "v": int,
    "tenant_id": str,
    "pruned_through_seq": int,
    "pruned_through_hash": str,
    "key_id": str,
    "cut_at": str,
}
# The unsigned integer widths of the gateway's schema (u32, u64, u8).
_BOUNDS: dict[str, int] = {
    "v": 2**32,
    "seq": 2**64,
    "risk_score": 2**8,
    "pruned_through_seq": 2**64,
}


@dataclass(frozen=True)
class VerificationResult:
    """The outcome of `verify_receipts`: true when every chain verified."""

    ok: bool
    receipts: int
    chains: int
    error: str | None = None

    def __bool__(self) -> bool:
        return self.ok


class _Broken(Exception):
    pass


def key_id(public_key: bytes) -> str:
    """The gateway's id of an Ed25519 public key: 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def _public_key(hex_key: Any) -> tuple[bytes, Ed25519PublicKey] | None:
    try:
        raw = bytes.fromhex(hex_key) if isinstance(hex_key, str) else b""
        return raw, Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        return None


def _typed(data: Mapping[str, Any], fields: Mapping[str, type], what: str) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name, kind in fields.items():
        value = data.get(name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{what}: field {name!r} is missing or not {kind.__name__}")
        if isinstance(value, int) and name in _BOUNDS and not 0 <= value < _BOUNDS[name]:
            raise ValueError(f"{what}: field {name!r} is out of range")
        body[name] = value
    return body


@dataclass
class _Line:
    number: int
    body: dict[str, Any]
    hash: str


class _Chain:
    """One tenant's chain walked in `seq` order: the receipt verifier of the gateway."""

    def __init__(
        self, tenant_id: str, checkpoints: dict[int, str], start: tuple[int, str] | None
    ) -> None:
        self.tenant_id = tenant_id
        self.checkpoints = checkpoints
        # The (seq, hash) the first receipt follows: a signed cut, or genesis when None.
        self.last: tuple[int, str] | None = start
        self.last_signed = False
        self.last_id = ""
        self.count = 0

    def fail(self, line: _Line | None, seq: int, receipt_id: str, why: str) -> _Broken:
        where = f"line {line.number}: " if line else ""
        return _Broken(f"{where}receipt {receipt_id} (tenant {self.tenant_id}, seq {seq}): {why}")

    def push(self, line: _Line) -> None:
        body = line.body
        seq, receipt_id = body["seq"], body["id"]
        expected_seq, expected_prev = (
            (1, "") if self.last is None else (self.last[0] + 1, self.last[1])
        )
        if seq != expected_seq:
            raise self.fail(
                line,
                seq,
                receipt_id,
                f"seq {seq} follows seq {expected_seq - 1}: gap or reordering",
            )
        if hashlib.sha256(canonical_json(body, name="receipt")).hexdigest() != line.hash:
            raise self.fail(line, seq, receipt_id, "hash does not match the receipt body")
        if body["prev_hash"] != expected_prev:
            raise self.fail(
                line, seq, receipt_id, "prev_hash does not match the previous receipt's hash"
            )
        head = self.checkpoints.pop(seq, None)
        if head is not None and head != line.hash:
            raise self.fail(
                line,
                seq,
                receipt_id,
                f"checkpoint at seq {seq} names a head hash the chain does not have",
            )
        self.last = (seq, line.hash)
        self.last_signed = head is not None
        self.last_id = receipt_id
        self.count += 1

    def finish(self) -> int:
        if self.count and self.last is not None and not self.last_signed:
            raise self.fail(
                None, self.last[0], self.last_id, "no valid signed checkpoint covers this receipt"
            )
        return self.count


def _read_lines(source: str | os.PathLike[str] | Iterable[str]) -> Iterable[str]:
    if isinstance(source, (str, os.PathLike)):
        return Path(source).read_text(encoding="utf-8").splitlines()
    return source


def verify_receipts(
    lines: str | os.PathLike[str] | Iterable[str],
    trusted_keys: Mapping[str, str] | None = None,
) -> VerificationResult:
    """Verifies exported receipt chains: a file path, or an iterable of its lines.

    Without `trusted_keys`, each line's `public_key` is accepted under the key id derived
    from it (this proves integrity against corruption). With `trusted_keys` (key id → hex
    Ed25519 public key, the gateway's keys pinned), only those keys count: this also defends
    against someone who rewrote the whole file. Returns a falsy result naming the first bad
    receipt (and its line) when any chain fails.
    """
    pinned: dict[str, Ed25519PublicKey] = {}
    for pinned_id, hex_key in (trusted_keys or {}).items():
        parsed = _public_key(hex_key)
        if parsed is None:
            raise ValueError(f"trusted_keys[{pinned_id!r}] is not a hex Ed25519 public key")
        if key_id(parsed[0]) != pinned_id:
            raise ValueError(
                f"trusted_keys: the key given for {pinned_id!r} has id {key_id(parsed[0])}"
            )
        pinned[pinned_id] = parsed[1]
    try:
        return _verify(_read_lines(lines), pinned)
    except _Broken as broken:
        return VerificationResult(ok=False, receipts=0, chains=0, error=str(broken))


@dataclass
class _SegmentChain:
    """One chain of a segment header: the signed cut it starts after, and its last receipt."""

    starts_after: dict[str, Any] | None
    through: tuple[int, str] | None


def _segment_header(
    data: dict[str, Any], number: int, keys: dict[str, Ed25519PublicKey], pinned: bool
) -> dict[str, _SegmentChain]:
    """Reads a segment's first line: its chains, and (unless keys are pinned) its keys."""
    if data.get("aegis_segment") != 1:
        raise _Broken(f"line {number}: unknown segment version {data.get('aegis_segment')!r}")
    public_keys, raw_chains = data.get("public_keys"), data.get("chains")
    if not isinstance(public_keys, dict) or not isinstance(raw_chains, list):
        raise _Broken(f"line {number}: not a segment header: needs chains and public_keys")
    if not pinned:
        for header_key_id, hex_key in public_keys.items():
            parsed = _public_key(hex_key)
            if parsed is None or key_id(parsed[0]) != header_key_id:
                raise _Broken(
                    f"line {number}: public key {header_key_id} does not match its key id"
                )
            keys[header_key_id] = parsed[1]
    chains: dict[str, _SegmentChain] = {}
    try:
        for raw in raw_chains:
            if not isinstance(raw, dict) or not isinstance(raw.get("tenant_id"), str):
                raise ValueError("a chain without a tenant_id")
            cut, through = raw.get("starts_after"), raw.get("through")
            if cut is not None:
                if not isinstance(cut, dict) or not isinstance(cut.get("signature"), str):
                    raise ValueError("starts_after is not a signed cut")
                cut = {**_typed(cut, _CUT_FIELDS, "cut"), "signature": cut["signature"]}
            if through is not None:
                point = _typed(through, {"seq": int, "hash": str}, "through")
                through = (point["seq"], point["hash"])
            chains[raw["tenant_id"]] = _SegmentChain(cut, through)
    except (ValueError, AttributeError) as error:
        raise _Broken(f"line {number}: not a segment header: {error}") from None
    return chains


def _approval(data: Mapping[str, Any]) -> dict[str, Any]:
    """The approval a consumed allow's receipt names (absent from every other receipt)."""
    approval = data["approval"]
    if not isinstance(approval, dict) or set(approval) != {"id", "approved_by"}:
        raise ValueError("receipt: field 'approval' is not {id, approved_by}")
    if not isinstance(approval["id"], str) or not (
        isinstance(approval["approved_by"], list)
        and all(isinstance(k, str) for k in approval["approved_by"])
    ):
        raise ValueError("receipt: field 'approval' is not {id: str, approved_by: [str]}")
    return approval


def _verify(lines: Iterable[str], pinned: dict[str, Ed25519PublicKey]) -> VerificationResult:
    keys = dict(pinned)
    chains: dict[str, list[_Line]] = {}
    checkpoints: dict[tuple[str, int], dict[str, Any]] = {}
    segment: dict[str, _SegmentChain] = {}
    first = True
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            if first and "aegis_segment" in data:
                first = False
                segment = _segment_header(data, number, keys, bool(pinned))
                continue
            first = False
            body = _typed(data, _BODY_FIELDS, "receipt")
            if not all(isinstance(p, str) for p in body["matched_policies"]):
                raise ValueError("receipt: matched_policies holds a non-string")
            if "approval" in data:
                body["approval"] = _approval(data)
            if "tool_definition_hash" in data:
                if not isinstance(data["tool_definition_hash"], str):
                    raise ValueError("receipt: field 'tool_definition_hash' is not str")
                body["tool_definition_hash"] = data["tool_definition_hash"]
            receipt_hash = data.get("hash")
            if not isinstance(receipt_hash, str):
                raise ValueError("receipt: field 'hash' is missing or not str")
            raw_checkpoint = data.get("checkpoint")
            if not isinstance(raw_checkpoint, dict):
                raise ValueError("field 'checkpoint' is missing or not an object")
            checkpoint = _typed(raw_checkpoint, _CHECKPOINT_FIELDS, "checkpoint")
            signature = raw_checkpoint.get("signature")
            if not isinstance(signature, str):
                raise ValueError("checkpoint: field 'signature' is missing or not str")
            if "batch" in raw_checkpoint:
                checkpoint["batch"] = _batch(raw_checkpoint["batch"])
            if not isinstance(data.get("public_key"), str):
                raise ValueError("field 'public_key' is missing or not str")
        except ValueError as error:
            raise _Broken(f"line {number}: not an exported receipt: {error}") from None
        if not pinned:
            # A key is only accepted under the id derived from it.
            parsed = _public_key(data["public_key"])
            if parsed is None or key_id(parsed[0]) != checkpoint["key_id"]:
                raise _Broken(
                    f"line {number}: public_key does not match key id {checkpoint['key_id']}"
                )
            keys[checkpoint["key_id"]] = parsed[1]
        checkpoints[(checkpoint["tenant_id"], checkpoint["seq"])] = {
            **checkpoint,
            "signature": signature,
        }
        chains.setdefault(body["tenant_id"], []).append(_Line(number, body, receipt_hash))

    total = 0
    for tenant_id in sorted(chains):
        heads: dict[int, str] = {}
        for (owner, seq), checkpoint in checkpoints.items():
            if owner != tenant_id:
                continue
            if not _signed(checkpoint, keys):
                raise _Broken(
                    f"receipt  (tenant {tenant_id}, seq {seq}): checkpoint at seq {seq} has a "
                    f"bad signature or unknown key {checkpoint['key_id']}"
                )
            heads[seq] = checkpoint["head_hash"]
        chain = _Chain(tenant_id, heads, _start(tenant_id, segment.get(tenant_id), keys))
        for line in chains[tenant_id]:
            chain.push(line)
        total += chain.finish()
        through = segment[tenant_id].through if tenant_id in segment else None
        if through is not None and chain.last != through:
            raise _Broken(
                f"tenant {tenant_id}: the file ends at seq {chain.last[0] if chain.last else 0} "
                f"but its header says the archive holds the chain through seq {through[0]}"
            )
    # An archive's header names every chain it holds: one missing from the file was lost.
    for tenant_id, named in segment.items():
        if named.through is not None and tenant_id not in chains:
            raise _Broken(
                f"tenant {tenant_id}: named in the header, but the file holds none of its receipts"
            )
    return VerificationResult(ok=True, receipts=total, chains=len(chains))


def _start(
    tenant_id: str, named: _SegmentChain | None, keys: Mapping[str, Ed25519PublicKey]
) -> tuple[int, str] | None:
    """Where a chain of the file starts: after its header's signed cut, else at seq 1."""
    cut = named.starts_after if named else None
    if cut is None:
        return None
    if cut["tenant_id"] != tenant_id or not _signed_body(cut, _CUT_FIELDS, keys):
        raise _Broken(
            f"tenant {tenant_id}: the cut at seq {cut['pruned_through_seq']} in the header has "
            f"a bad signature or unknown key {cut['key_id']}"
        )
    return cut["pruned_through_seq"], cut["pruned_through_hash"]


def _batch(batch: Any) -> dict[str, Any]:
    """A checkpoint's place in the batch its signature covers: leaf `index` of `size`, and the
    sibling hashes (hex) from that leaf to the root."""
    if not isinstance(batch, dict) or set(batch) != {"index", "size", "path"}:
        raise ValueError("checkpoint: field 'batch' is not {index, size, path}")
    index, size, path = batch["index"], batch["size"], batch["path"]
    counts = (index, size)
    if not (
        all(isinstance(n, int) and not isinstance(n, bool) for n in counts)
        and all(0 <= n < 2**64 for n in counts)
        and isinstance(path, list)
        and all(isinstance(node, str) for node in path)
    ):
        raise ValueError("checkpoint: field 'batch' is not {index: u64, size: u64, path: [str]}")
    return batch


def _merkle_root(leaf: bytes, index: int, size: int, path: list[bytes]) -> bytes | None:
    """The root `path` proves for `leaf` at `index` of a tree of `size` leaves, or None
    (RFC 9162, 2.1.3.2: inner nodes hash as SHA-256(0x01 || left || right))."""
    if index >= size:
        return None
    position, last, node = index, size - 1, leaf
    for sibling in path:
        if last == 0:
            return None
        if position % 2 == 1 or position == last:
            node = hashlib.sha256(b"\x01" + sibling + node).digest()
            while position % 2 == 0 and position != 0:
                position >>= 1
                last >>= 1
        else:
            node = hashlib.sha256(b"\x01" + node + sibling).digest()
        position >>= 1
        last >>= 1
    return node if last == 0 else None


def _signed(checkpoint: dict[str, Any], keys: Mapping[str, Ed25519PublicKey]) -> bool:
    """Whether a checkpoint is validly signed: over its own body, or (signed in a batch) over
    the batch's Merkle root, which its path must lead its body to."""
    batch = checkpoint.get("batch")
    if batch is None:
        return _signed_body(checkpoint, _CHECKPOINT_FIELDS, keys)
    try:
        path = [bytes.fromhex(node) for node in batch["path"]]
    except ValueError:
        return False
    if any(len(node) != 32 for node in path):
        return False
    body = {name: checkpoint[name] for name in _CHECKPOINT_FIELDS}
    leaf = hashlib.sha256(b"\x00" + canonical_json(body, name="checkpoint")).digest()
    root = _merkle_root(leaf, batch["index"], batch["size"], path)
    if root is None:
        return False
    statement = {
        "v": checkpoint["v"],
        "checkpoints_root": root.hex(),
        "checkpoints": batch["size"],
        "key_id": checkpoint["key_id"],
        "signed_at": checkpoint["signed_at"],
        "signature": checkpoint["signature"],
    }
    return _signed_body(statement, _BATCH_FIELDS, keys)


def _signed_body(
    signed: dict[str, Any], fields: Mapping[str, type], keys: Mapping[str, Ed25519PublicKey]
) -> bool:
    """Whether `signed["signature"]` is a valid signature over the JCS of its `fields`."""
    key = keys.get(signed["key_id"])
    if key is None:
        return False
    try:
        signature = bytes.fromhex(signed["signature"])
        body = {name: signed[name] for name in fields}
        key.verify(signature, canonical_json(body, name="signed statement"))
    except (ValueError, InvalidSignature):
        return False
    return True
