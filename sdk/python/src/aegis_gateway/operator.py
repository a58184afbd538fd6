"""`OperatorClient`: thin helpers over the management API for notebooks and scripts.

Answers are the gateway's JSON (dicts and lists) as the API documents them. The live feed
needs the `operator` extra (`pip install "aegis-gateway[operator]"`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from ._wire import (
    RETRYABLE_STATUSES,
    USER_AGENT,
    Redactor,
    RetryPolicy,
    check_name,
    check_positive,
    read_json,
    unavailable,
)
from .errors import UnexpectedResponse


def _id(value: Any, argument: str) -> str:
    return quote(check_name(value, argument), safe="")


def _reason(reason: Any) -> dict[str, Any]:
    if reason is None:
        return {}
    return {"reason": check_name(reason, "reason", 1024)}


class OperatorClient:
    """A client for one operator key (viewer, responder or admin)."""

    def __init__(self, base_url: str, key: str, *, timeout: float = 10.0, retries: int = 2) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http:// or https:// URL")
        if not isinstance(key, str) or not key.strip():
            raise ValueError("key must be a non-blank string")
        self._base_url = base_url.rstrip("/")
        self._key = key
        self._timeout = check_positive(timeout, "timeout")
        self._retry = RetryPolicy(retries=retries)
        self._redact = Redactor(key)
        self._http = httpx.Client(
            base_url=self._base_url,
            headers={"Authorization": f"Bearer {key}", "User-Agent": USER_AGENT},
            timeout=self._timeout,
        )

    def __repr__(self) -> str:
        return f"OperatorClient(base_url={self._base_url!r})"

    def __enter__(self) -> OperatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        what = f"{method} {path}"
        # Only reads are repeated: a repeated approve or freeze would not mean the same.
        attempts = self._retry.retries + 1 if method == "GET" else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as error:
                if last:
                    raise unavailable(what, error) from None
            else:
                if response.status_code not in RETRYABLE_STATUSES or last:
                    return read_json(what, response, self._redact)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _list(self, path: str, filters: Mapping[str, Any]) -> list[dict[str, Any]]:
        params = {name: value for name, value in filters.items() if value is not None}
        answer = self._call("GET", path, params=params)
        if not isinstance(answer, list):
            raise UnexpectedResponse(f"GET {path}", 200, json.dumps(answer).encode())
        return answer

    def incidents(
        self,
        *,
        status: str | None = None,
        severity: str | None = None,
        kind: str | None = None,
        agent_id: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """The newest incidents matching the filters (one page)."""
        return self._list(
            "/v1/incidents",
            {
                "status": status,
                "severity": severity,
                "kind": kind,
                "agent_id": agent_id,
                "limit": limit,
            },
        )

    def incident(self, incident_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/incidents/{_id(incident_id, 'incident_id')}")  # type: ignore[no-any-return]

    def approvals(
        self, *, status: str | None = None, agent_id: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The newest approvals matching the filters (one page)."""
        return self._list("/v1/approvals", {"status": status, "agent_id": agent_id, "limit": limit})

    def approve(self, approval_id: str, reason: str | None = None) -> dict[str, Any]:
        path = f"/v1/approvals/{_id(approval_id, 'approval_id')}/approve"
        return self._call("POST", path, json=_reason(reason))  # type: ignore[no-any-return]

    def reject(self, approval_id: str, reason: str | None = None) -> dict[str, Any]:
        path = f"/v1/approvals/{_id(approval_id, 'approval_id')}/reject"
        return self._call("POST", path, json=_reason(reason))  # type: ignore[no-any-return]

    def agent(self, agent_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/agents/{_id(agent_id, 'agent_id')}")  # type: ignore[no-any-return]

    def freeze(self, agent_id: str, reason: str) -> dict[str, Any]:
        path = f"/v1/agents/{_id(agent_id, 'agent_id')}/freeze"
        return self._call("POST", path, json={"reason": check_name(reason, "reason", 1024)})  # type: ignore[no-any-return]

    def unfreeze(self, agent_id: str) -> dict[str, Any]:
        path = f"/v1/agents/{_id(agent_id, 'agent_id')}/unfreeze"
        return self._call("POST", path, json={})  # type: ignore[no-any-return]

    def events(
        self,
        *,
        kinds: list[str] | None = None,
        agent_id: str | None = None,
        since: int | None = None,
        open_timeout: float | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The tenant's live events (`GET /v1/ws/events`), as they are committed.

        Yields each JSON message (`{"type": "hello" | "event" | "lagged", ...}`); resume after
        a disconnect with `since=` the last event's `seq`. Closing the iterator closes the feed.
        """
        try:
            from websockets.sync.client import connect
        except ImportError:  # pragma: no cover - depends on the installed extras
            raise ImportError(
                'the live feed needs the operator extra: pip install "aegis-gateway[operator]"'
            ) from None
        query: dict[str, Any] = {}
        if kinds:
            query["kinds"] = ",".join(check_name(kind, "kinds") for kind in kinds)
        if agent_id is not None:
            query["agent_id"] = check_name(agent_id, "agent_id")
        if since is not None:
            if isinstance(since, bool) or not isinstance(since, int) or since < 0:
                raise ValueError("since must be a whole number >= 0")
            query["since"] = since
        url = "ws" + self._base_url.removeprefix("http") + "/v1/ws/events"
        if query:
            url += "?" + urlencode(query)
        with connect(
            url,
            additional_headers={"Authorization": f"Bearer {self._key}"},
            open_timeout=open_timeout or self._timeout,
        ) as socket:
            for message in socket:
                yield json.loads(message)
