"""`Client` and `AsyncClient`: an agent's side of the action plane."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast
from urllib.parse import quote

import httpx

from ._guard import ApprovalWait, Guard, enforce
from ._wire import (
    RETRYABLE_STATUSES,
    USER_AGENT,
    Redactor,
    RetryPolicy,
    authorize_body,
    check_name,
    check_positive,
    check_wait_secs,
    new_request_id,
    read_json,
    unavailable,
)
from .errors import GatewayUnavailable, UnexpectedResponse
from .models import Approval, Decision, ShapeError

F = TypeVar("F", bound=Callable[..., Any])
AF = TypeVar("AF", bound=Callable[..., Awaitable[Any]])


class _Settings:
    """What both clients are configured with; the token stays out of every repr."""

    def __init__(self, base_url: Any, token: Any, timeout: Any, retries: Any, backoff: Any) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http:// or https:// URL")
        if not isinstance(token, str) or not token.strip():
            raise ValueError("token must be a non-blank string")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = check_positive(timeout, "timeout")
        self.retry = RetryPolicy(retries=retries, backoff=backoff)
        self.redact = Redactor(token)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "User-Agent": USER_AGENT}


def _decision(what: str, data: Any, response: httpx.Response, redact: Redactor) -> Decision:
    try:
        return Decision.parse(data)
    except ShapeError as error:
        raise UnexpectedResponse(
            f"{what} ({error})", response.status_code, redact.bytes(response.content)
        ) from None


def _approval(what: str, data: Any, response: httpx.Response, redact: Redactor) -> Approval:
    try:
        return Approval.parse(data)
    except ShapeError as error:
        raise UnexpectedResponse(
            f"{what} ({error})", response.status_code, redact.bytes(response.content)
        ) from None


def _approval_request(approval_id: Any, wait_secs: Any) -> tuple[str, dict[str, int]]:
    """The path and query of `GET /v1/approvals/{id}` (a long-poll with `wait_secs`)."""
    path = f"/v1/approvals/{quote(check_name(approval_id, 'approval_id'), safe='')}"
    wait = check_wait_secs(wait_secs)
    return path, {"wait_secs": wait} if wait else {}


class Client:
    """A synchronous client for one agent token.

    Every `authorize` sends a fresh `request_id`; connection errors, timeouts and 502/503/504
    are retried with the same id, so the gateway records the call once. Anything that is not
    a decision raises `GatewayUnavailable`: treat the call as denied.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.2,
    ) -> None:
        self._settings = _Settings(base_url, token, timeout, retries, backoff)
        self._http = httpx.Client(
            base_url=self._settings.base_url, headers=self._settings.headers()
        )

    def __repr__(self) -> str:
        return f"Client(base_url={self._settings.base_url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(
        self, what: str, method: str, path: str, timeout: float, **kwargs: Any
    ) -> tuple[Any, httpx.Response]:
        policy = self._settings.retry
        for attempt in range(policy.retries + 1):
            last = attempt == policy.retries
            try:
                response = self._http.request(method, path, timeout=timeout, **kwargs)
            except httpx.TransportError as error:
                if last:
                    raise unavailable(what, error) from None
            else:
                if response.status_code not in RETRYABLE_STATUSES or last:
                    return read_json(what, response, self._settings.redact), response
            time.sleep(policy.delay(attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def authorize(
        self,
        tool: str,
        action: str,
        resource: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        source_trust: str | None = None,
        mutates_state: bool | None = None,
        run_id: str | None = None,
        trace_id: str | None = None,
        *,
        request_id: str | None = None,
        approval_id: str | None = None,
    ) -> Decision:
        """Asks the gateway about one tool call. Returns the decision, whatever it is."""
        body = authorize_body(
            tool=tool,
            action=action,
            resource=resource,
            parameters=parameters,
            source_trust=source_trust,
            mutates_state=mutates_state,
            run_id=run_id,
            trace_id=trace_id,
            request_id=new_request_id() if request_id is None else request_id,
            approval_id=approval_id,
        )
        what = "POST /v1/authorize"
        data, response = self._request(
            what, "POST", "/v1/authorize", self._settings.timeout, json=body
        )
        return _decision(what, data, response, self._settings.redact)

    def approval(self, approval_id: str, wait_secs: int = 0) -> Approval:
        """This agent's approval; with `wait_secs`, answers once it changes or after that long."""
        path, params = _approval_request(approval_id, wait_secs)
        what = f"GET {path}"
        data, response = self._request(
            what, "GET", path, self._settings.timeout + wait_secs, params=params
        )
        return _approval(what, data, response, self._settings.redact)

    def authorize_and_wait(self, timeout: float, **call: Any) -> Decision:
        """As `authorize`; a `require_approval` is waited for up to `timeout` seconds, then
        the identical call is repeated naming the approval, which consumes it."""
        decision = self.authorize(**call)
        if decision.decision != "require_approval":
            return decision
        wait = ApprovalWait(decision, timeout)
        while (secs := wait.next_poll_secs()) is not None:
            wait.settled(self.approval(wait.approval.id, wait_secs=secs))
        return self.authorize(**call, approval_id=wait.approved_id())

    def _enforce(self, guard: Guard, arguments: Mapping[str, Any]) -> Decision | None:
        """Asks about the call `guard` stands for; returns the allow (`None` when failing
        open on a read), raises for anything else."""
        call = guard.call_with(arguments)
        try:
            if guard.wait:
                decision = self.authorize_and_wait(guard.wait_timeout, **call)
            else:
                decision = self.authorize(**call)
        except GatewayUnavailable as error:
            if guard.may_fail_open(error):
                return None
            raise
        return enforce(decision)

    def protect(
        self,
        *,
        tool: str,
        action: str,
        resource: str | Callable[..., str | None] | None = None,
        parameters: Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None = None,
        source_trust: str | Callable[..., str | None] | None = None,
        mutates_state: bool | None = None,
        wait: bool = False,
        wait_timeout: float = 300.0,
        fail_open: bool = False,
    ) -> Callable[[F], F]:
        """Decorates a function so that it runs only when the gateway allows the call.

        `resource`, `parameters` and `source_trust` are values or callables given the
        function's arguments by name; `parameters` defaults to those arguments. A deny raises
        `Denied`; `require_approval` raises `ApprovalRequired`, or with `wait=True` waits up
        to `wait_timeout` seconds for an operator. A gateway that cannot answer raises
        `GatewayUnavailable` and the function does not run, unless `fail_open=True` on a read
        (`mutates_state=False`). Async functions are guarded too (the HTTP call runs in a
        worker thread); an `AsyncClient` guards them without one.
        """
        guard = Guard(
            tool=tool,
            action=action,
            resource=resource,
            parameters=parameters,
            source_trust=source_trust,
            mutates_state=mutates_state,
            wait=wait,
            wait_timeout=wait_timeout,
            fail_open=fail_open,
        )

        def gate(function: Callable[..., Any], args: Any, kwargs: Any) -> None:
            self._enforce(guard, Guard.arguments_of(function, args, kwargs))

        def decorate(function: F) -> F:
            if inspect.iscoroutinefunction(function):

                @functools.wraps(function)
                async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                    await asyncio.to_thread(gate, function, args, kwargs)
                    return await function(*args, **kwargs)

                return cast(F, guarded_async)

            @functools.wraps(function)
            def guarded(*args: Any, **kwargs: Any) -> Any:
                gate(function, args, kwargs)
                return function(*args, **kwargs)

            return cast(F, guarded)

        return decorate


class AsyncClient:
    """The asyncio twin of `Client`, with the same arguments and guarantees."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.2,
    ) -> None:
        self._settings = _Settings(base_url, token, timeout, retries, backoff)
        self._http = httpx.AsyncClient(
            base_url=self._settings.base_url, headers=self._settings.headers()
        )

    def __repr__(self) -> str:
        return f"AsyncClient(base_url={self._settings.base_url!r})"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(
        self, what: str, method: str, path: str, timeout: float, **kwargs: Any
    ) -> tuple[Any, httpx.Response]:
        policy = self._settings.retry
        for attempt in range(policy.retries + 1):
            last = attempt == policy.retries
            try:
                response = await self._http.request(method, path, timeout=timeout, **kwargs)
            except httpx.TransportError as error:
                if last:
                    raise unavailable(what, error) from None
            else:
                if response.status_code not in RETRYABLE_STATUSES or last:
                    return read_json(what, response, self._settings.redact), response
            await asyncio.sleep(policy.delay(attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def authorize(
        self,
        tool: str,
        action: str,
        resource: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        source_trust: str | None = None,
        mutates_state: bool | None = None,
        run_id: str | None = None,
        trace_id: str | None = None,
        *,
        request_id: str | None = None,
        approval_id: str | None = None,
    ) -> Decision:
        """Asks the gateway about one tool call. Returns the decision, whatever it is."""
        body = authorize_body(
            tool=tool,
            action=action,
            resource=resource,
            parameters=parameters,
            source_trust=source_trust,
            mutates_state=mutates_state,
            run_id=run_id,
            trace_id=trace_id,
            request_id=new_request_id() if request_id is None else request_id,
            approval_id=approval_id,
        )
        what = "POST /v1/authorize"
        data, response = await self._request(
            what, "POST", "/v1/authorize", self._settings.timeout, json=body
        )
        return _decision(what, data, response, self._settings.redact)

    async def approval(self, approval_id: str, wait_secs: int = 0) -> Approval:
        """This agent's approval; with `wait_secs`, answers once it changes or after that long."""
        path, params = _approval_request(approval_id, wait_secs)
        what = f"GET {path}"
        data, response = await self._request(
            what, "GET", path, self._settings.timeout + wait_secs, params=params
        )
        return _approval(what, data, response, self._settings.redact)

    async def authorize_and_wait(self, timeout: float, **call: Any) -> Decision:
        """As `Client.authorize_and_wait`."""
        decision = await self.authorize(**call)
        if decision.decision != "require_approval":
            return decision
        wait = ApprovalWait(decision, timeout)
        while (secs := wait.next_poll_secs()) is not None:
            wait.settled(await self.approval(wait.approval.id, wait_secs=secs))
        return await self.authorize(**call, approval_id=wait.approved_id())

    async def _enforce(self, guard: Guard, arguments: Mapping[str, Any]) -> Decision | None:
        """As `Client._enforce`."""
        call = guard.call_with(arguments)
        try:
            if guard.wait:
                decision = await self.authorize_and_wait(guard.wait_timeout, **call)
            else:
                decision = await self.authorize(**call)
        except GatewayUnavailable as error:
            if guard.may_fail_open(error):
                return None
            raise
        return enforce(decision)

    def protect(
        self,
        *,
        tool: str,
        action: str,
        resource: str | Callable[..., str | None] | None = None,
        parameters: Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None = None,
        source_trust: str | Callable[..., str | None] | None = None,
        mutates_state: bool | None = None,
        wait: bool = False,
        wait_timeout: float = 300.0,
        fail_open: bool = False,
    ) -> Callable[[AF], AF]:
        """As `Client.protect`, for `async def` functions."""
        guard = Guard(
            tool=tool,
            action=action,
            resource=resource,
            parameters=parameters,
            source_trust=source_trust,
            mutates_state=mutates_state,
            wait=wait,
            wait_timeout=wait_timeout,
            fail_open=fail_open,
        )

        def decorate(function: AF) -> AF:
            if not inspect.iscoroutinefunction(function):
                raise TypeError(
                    f"AsyncClient.protect guards async functions; {function.__qualname__} is "
                    "not one (use Client.protect)"
                )

            @functools.wraps(function)
            async def guarded(*args: Any, **kwargs: Any) -> Any:
                await self._enforce(guard, Guard.arguments_of(function, args, kwargs))
                return await function(*args, **kwargs)

            return cast(AF, guarded)

        return decorate
