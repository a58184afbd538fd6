"""The wire format, without I/O: argument checks that mirror the gateway's, request bodies,
the connection settings and retry timing, and the reading of answers."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ._canonical import check_json_object
from .errors import GatewayError, GatewayUnavailable, UnexpectedResponse

SOURCE_TRUST_LEVELS = (
    "trusted_internal_signed",
    "trusted_internal_unsigned",
    "semi_trusted_customer",
    "untrusted_external",
    "malicious_suspected",
    "unknown",
)

# 500 is not retried: it is a bug or a refused input, and repeating it changes nothing.
RETRYABLE_STATUSES = frozenset({502, 503, 504})

# The gateway's long-poll bound for GET /v1/approvals/{id}?wait_secs=N.
MAX_WAIT_SECS = 60

USER_AGENT = "aegis-gateway-python/0.1.0"


def check_name(value: Any, argument: str, max_chars: int = 128) -> str:
    """A non-blank string of at most `max_chars` characters, as the gateway's `Text` rule."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{argument} must be a non-blank string")
    if len(value) > max_chars:
        raise ValueError(f"{argument} must be at most {max_chars} characters")
    return value


def check_optional_name(value: Any, argument: str, max_chars: int = 128) -> str | None:
    return None if value is None else check_name(value, argument, max_chars)


def check_source_trust(value: Any, argument: str = "source_trust") -> str | None:
    if value is not None and value not in SOURCE_TRUST_LEVELS:
        raise ValueError(f"{argument} must be one of {', '.join(SOURCE_TRUST_LEVELS)} or None")
    return value  # type: ignore[no-any-return]


def check_positive(value: Any, argument: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{argument} must be a positive number of seconds")
    return float(value)


def check_wait_secs(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WAIT_SECS:
        raise ValueError(f"wait_secs must be a whole number from 0 to {MAX_WAIT_SECS}")
    return value


def new_request_id() -> str:
    """A fresh id for one logical call; its retries reuse it so it is recorded once."""
    return f"req_{uuid.uuid4().hex}"


def authorize_body(
    *,
    tool: Any,
    action: Any,
    resource: Any,
    parameters: Any,
    source_trust: Any,
    mutates_state: Any,
    run_id: Any,
    trace_id: Any,
    request_id: Any,
    approval_id: Any,
) -> dict[str, Any]:
    """The JSON body of `POST /v1/authorize`; `ValueError` naming the first bad argument."""
    call: dict[str, Any] = {
        "tool": check_name(tool, "tool"),
        "action": check_name(action, "action"),
    }
    if resource is not None:
        call["resource"] = check_name(resource, "resource", 1024)
    if parameters is not None:
        call["parameters"] = check_json_object(parameters)
    if mutates_state is not None:
        if not isinstance(mutates_state, bool):
            raise ValueError("mutates_state must be a bool or None")
        call["mutates_state"] = mutates_state
    body: dict[str, Any] = {
        "request_id": check_name(request_id, "request_id"),
        "tool_call": call,
        "context": {},
    }
    trust = check_source_trust(source_trust)
    if trust is not None:
        body["context"]["source_trust"] = trust
    trace = {
        key: value
        for key, value in (
            ("run_id", check_optional_name(run_id, "run_id")),
            ("trace_id", check_optional_name(trace_id, "trace_id")),
        )
        if value is not None
    }
    if trace:
        body["trace"] = trace
    if approval_id is not None:
        body["approval_id"] = check_name(approval_id, "approval_id")
    return body


@dataclass(frozen=True)
class RetryPolicy:
    """Retries on connection errors, timeouts and 502/503/504: `retries` more attempts,
    waiting `backoff * 2**n` seconds (with full jitter, capped at `max_backoff`)."""

    retries: int = 2
    backoff: float = 0.2
    max_backoff: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError("retries must be a whole number >= 0")
        check_positive(self.backoff, "backoff")
        check_positive(self.max_backoff, "max_backoff")

    def delay(self, attempt: int) -> float:
        # Jitter spreads the retries of many agents after one gateway restart; this is not
        # a security decision.
        return random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))  # noqa: S311


class Connection:
    """Where a client sends its requests, with which credential, and how patiently. The
    credential is only ever put in the Authorization header (never in a repr)."""

    def __init__(
        self,
        base_url: Any,
        credential: Any,
        *,
        credential_name: str,
        timeout: Any,
        retries: Any = 2,
        backoff: Any = 0.2,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http:// or https:// URL")
        if not isinstance(credential, str) or not credential.strip():
            raise ValueError(f"{credential_name} must be a non-blank string")
        self.base_url = base_url.rstrip("/")
        self.credential = credential
        self.timeout = check_positive(timeout, "timeout")
        self.retry = RetryPolicy(retries=retries, backoff=backoff)
        self.redact = Redactor(credential)

    def __repr__(self) -> str:
        return f"Connection(base_url={self.base_url!r})"

    def http_options(self) -> dict[str, Any]:
        """The arguments of `httpx.Client` / `httpx.AsyncClient` for this connection (each
        request carries its own timeout: `Send.timeout`)."""
        return {
            "base_url": self.base_url,
            "headers": {"Authorization": f"Bearer {self.credential}", "User-Agent": USER_AGENT},
        }


class Redactor:
    """Removes a credential from text shown to people (exception messages)."""

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    def bytes(self, data: bytes) -> bytes:
        return data.replace(self._secret, b"<redacted>") if self._secret else data


def unavailable(what: str, error: Exception) -> GatewayUnavailable:
    # httpx messages name the URL and the failure, never the request headers.
    return GatewayUnavailable(
        f"{what}: the gateway did not answer ({type(error).__name__}: {error})"
    )


def read_json(what: str, response: httpx.Response, redact: Redactor) -> Any:
    """The JSON of a 2xx answer; a gateway error (4xx JSON) as `GatewayError`; anything else
    as `UnexpectedResponse` (5xx, or not JSON) showing at most 200 bytes of what came."""
    body = redact.bytes(response.content)
    try:
        data = json.loads(body)
    except ValueError:
        raise UnexpectedResponse(what, response.status_code, body) from None
    if response.is_success:
        return data
    error = data.get("error") if isinstance(data, Mapping) else None
    if 400 <= response.status_code < 500 and isinstance(error, Mapping):
        code, message, field = error.get("code"), error.get("message"), error.get("field")
        if isinstance(code, str) and isinstance(message, str):
            field = field if isinstance(field, str) else None
            raise GatewayError(response.status_code, code, message, field)
    if response.status_code >= 500:
        raise GatewayUnavailable(
            f"{what}: the gateway failed (HTTP {response.status_code}): {body[:200]!r}"
        )
    raise UnexpectedResponse(what, response.status_code, body)
