"""Offline verification of exported receipt chains (`aegis receipts export`), with the rules
of `aegis receipts verify FILE`: the receipt body schema, hash links, gap-free `seq` and
Ed25519-signed checkpoints over chain heads (see docs/receipts.md in the repository)."""

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
# The unsigned integer widths of the gateway's schema (u32, u64, u8).
_BOUNDS: dict[str, int] = {"v": 2**32, "seq": 2**64, "risk_score": 2**8}


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

    def __init__(self, tenant_id: str, checkpoints: dict[int, str]) -> None:
        self.tenant_id = tenant_id
        self.checkpoints = checkpoints
        self.last: tuple[int, str] | None = None
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
        if self.last is not None and not self.last_signed:
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


def _verify(lines: Iterable[str], pinned: dict[str, Ed25519PublicKey]) -> VerificationResult:
    keys = dict(pinned)
    chains: dict[str, list[_Line]] = {}
    checkpoints: dict[tuple[str, int], dict[str, Any]] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            body = _typed(data, _BODY_FIELDS, "receipt")
            if not all(isinstance(p, str) for p in body["matched_policies"]):
                raise ValueError("receipt: matched_policies holds a non-string")
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
        chain = _Chain(tenant_id, heads)
        for line in chains[tenant_id]:
            chain.push(line)
        total += chain.finish()
    return VerificationResult(ok=True, receipts=total, chains=len(chains))


def _signed(checkpoint: dict[str, Any], keys: Mapping[str, Ed25519PublicKey]) -> bool:
    key = keys.get(checkpoint["key_id"])
    if key is None:
        return False
    try:
        signature = bytes.fromhex(checkpoint["signature"])
        body = {name: checkpoint[name] for name in _CHECKPOINT_FIELDS}
        key.verify(signature, canonical_json(body, name="checkpoint"))
    except (ValueError, InvalidSignature):
        return False
    return True
