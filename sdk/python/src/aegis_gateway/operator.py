"""`OperatorClient`: thin helpers over the management API for notebooks and scripts.

Answers are the gateway's JSON (dicts and lists) as the API documents them. The live feed
needs the `operator` extra (`pip install "aegis-gateway[operator]"`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import httpx

from . import _plans as plans
from ._wire import Connection, check_name
from .models import ShapeError

T = TypeVar("T")


def _id(value: Any, argument: str) -> str:
    return quote(check_name(value, argument), safe="")


def _reason(reason: Any) -> dict[str, Any]:
    if reason is None:
        return {}
    return {"reason": check_name(reason, "reason", 1024)}


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ShapeError("the answer is not a JSON object")
    return data


def _page(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, list):
        raise ShapeError("the answer is not a JSON array")
    return data


class OperatorClient:
    """A client for one operator key (viewer, responder or admin)."""

    def __init__(self, base_url: str, key: str, *, timeout: float = 10.0, retries: int = 2) -> None:
        self._conn = Connection(
            base_url, key, credential_name="key", timeout=timeout, retries=retries
        )
        self._http = httpx.Client(**self._conn.http_options())

    def __repr__(self) -> str:
        return f"OperatorClient(base_url={self._conn.base_url!r})"

    def __enter__(self) -> OperatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, read: Callable[[Any], T], **kwargs: Any) -> T:
        send = plans.Send(method, path, self._conn.timeout, **kwargs)
        # Only reads are repeated: a repeated approve or freeze would not mean the same.
        retries = None if method == "GET" else 0
        return plans.drive(self._http, plans.exchange(self._conn, send, read, retries=retries))

    def _list(self, path: str, filters: Mapping[str, Any]) -> list[dict[str, Any]]:
        params = {name: value for name, value in filters.items() if value is not None}
        return self._call("GET", path, _page, params=params)

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
        return self._call("GET", f"/v1/incidents/{_id(incident_id, 'incident_id')}", _object)

    def approvals(
        self, *, status: str | None = None, agent_id: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The newest approvals matching the filters (one page)."""
        return self._list("/v1/approvals", {"status": status, "agent_id": agent_id, "limit": limit})

    def approve(self, approval_id: str, reason: str | None = None) -> dict[str, Any]:
        path = f"/v1/approvals/{_id(approval_id, 'approval_id')}/approve"
        return self._call("POST", path, _object, json=_reason(reason))

    def reject(self, approval_id: str, reason: str | None = None) -> dict[str, Any]:
        path = f"/v1/approvals/{_id(approval_id, 'approval_id')}/reject"
        return self._call("POST", path, _object, json=_reason(reason))

    def agent(self, agent_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/agents/{_id(agent_id, 'agent_id')}", _object)

    def freeze(self, agent_id: str, reason: str) -> dict[str, Any]:
        path = f"/v1/agents/{_id(agent_id, 'agent_id')}/freeze"
        return self._call(
            "POST", path, _object, json={"reason": check_name(reason, "reason", 1024)}
        )

    def unfreeze(self, agent_id: str) -> dict[str, Any]:
        path = f"/v1/agents/{_id(agent_id, 'agent_id')}/unfreeze"
        return self._call("POST", path, _object, json={})

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
        url = "ws" + self._conn.base_url.removeprefix("http") + "/v1/ws/events"
        if query:
            url += "?" + urlencode(query)
        with connect(
            url,
            additional_headers={"Authorization": f"Bearer {self._conn.credential}"},
            open_timeout=open_timeout or self._conn.timeout,
        ) as socket:
            for message in socket:
                yield json.loads(message)
