"""`Client` and `AsyncClient`: an agent's side of the action plane.

Both are thin shells around the plans of `_plans.py` (where requests are built, retried and
read): `Client` runs them with blocking I/O, `AsyncClient` with asyncio.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, cast

import httpx

from . import _plans as plans
from ._guard import Guard, GuardOptions
from ._wire import Connection
from .models import Decision

F = TypeVar("F", bound=Callable[..., Any])
AF = TypeVar("AF", bound=Callable[..., Awaitable[Any]])
H = TypeVar("H", httpx.Client, httpx.AsyncClient)
P = ParamSpec("P")
T = TypeVar("T")

if TYPE_CHECKING:  # typing.Unpack is Python 3.11+; annotations are not evaluated at runtime
    from typing_extensions import Unpack


class _AgentClient(Generic[H]):
    """What both clients hold: one agent token's connection and its HTTP client."""

    _transport: Callable[..., H]

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.2,
    ) -> None:
        self._conn = Connection(
            base_url,
            token,
            credential_name="token",
            timeout=timeout,
            retries=retries,
            backoff=backoff,
        )
        self._http: H = self._transport(**self._conn.http_options())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._conn.base_url!r})"


def _blocking(
    plan: Callable[Concatenate[Connection, P], plans.Plan[T]],
) -> Callable[Concatenate[Client, P], T]:
    """`plan` as a `Client` method."""

    @functools.wraps(plan)
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return plans.drive(self._http, plan(self._conn, *args, **kwargs))

    return method


def _awaiting(
    plan: Callable[Concatenate[Connection, P], plans.Plan[T]],
) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]:
    """`plan` as an `AsyncClient` method."""

    @functools.wraps(plan)
    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await plans.drive_async(self._http, plan(self._conn, *args, **kwargs))

    return method


def _guard_coroutine(
    client: Client | AsyncClient, guard: Guard, function: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    """`function` (an `async def`) running only once `guard` lets the call through."""

    signature = inspect.signature(function)

    @functools.wraps(function)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        await client._check_async(guard, Guard.arguments_of(signature, args, kwargs))
        return await function(*args, **kwargs)

    return guarded


class Client(_AgentClient[httpx.Client]):
    """A synchronous client for one agent token (`base_url`, `token`; `timeout` seconds per
    request, `retries` more attempts after `backoff`-based pauses).

    Every `authorize` sends a fresh `request_id`; connection errors, timeouts and 502/503/504
    are retried with the same id, so the gateway records the call once. Anything that is not
    a decision raises `GatewayUnavailable`: treat the call as denied.
    """

    _transport = httpx.Client

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    authorize = _blocking(plans.authorize)
    approval = _blocking(plans.approval)
    authorize_and_wait = _blocking(plans.authorize_and_wait)
    _check = _blocking(plans.guarded)

    async def _check_async(self, guard: Guard, arguments: Mapping[str, Any]) -> Decision | None:
        # The blocking HTTP call runs in a worker thread, so the event loop keeps running.
        return await asyncio.to_thread(self._check, guard, arguments)

    def protect(
        self,
        *,
        tool: str,
        action: str,
        fail_open: bool = False,
        **options: Unpack[GuardOptions],
    ) -> Callable[[F], F]:
        """Decorates a function so that it runs only when the gateway allows the call.

        Options (`GuardOptions`): `resource`, `parameters` and `source_trust` are values or
        callables given the function's arguments by name; `parameters` defaults to those
        arguments; `mutates_state` (default `None`: not sent). A deny raises `Denied`;
        `require_approval` raises `ApprovalRequired`, or with `wait=True` waits up to
        `wait_timeout` seconds (default 300) for an operator. A gateway that cannot answer raises
        `GatewayUnavailable` and the function does not run, unless `fail_open=True` on a read
        (`mutates_state=False`). Async functions are guarded too (the HTTP call runs in a
        worker thread); an `AsyncClient` guards them without one.
        """
        guard = Guard(tool=tool, action=action, fail_open=fail_open, **options)

        def decorate(function: F) -> F:
            if inspect.iscoroutinefunction(function):
                return cast(F, _guard_coroutine(self, guard, function))

            signature = inspect.signature(function)

            @functools.wraps(function)
            def guarded(*args: Any, **kwargs: Any) -> Any:
                self._check(guard, Guard.arguments_of(signature, args, kwargs))
                return function(*args, **kwargs)

            return cast(F, guarded)

        return decorate


class AsyncClient(_AgentClient[httpx.AsyncClient]):
    """The asyncio twin of `Client`, with the same arguments and guarantees."""

    _transport = httpx.AsyncClient

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    authorize = _awaiting(plans.authorize)
    approval = _awaiting(plans.approval)
    authorize_and_wait = _awaiting(plans.authorize_and_wait)
    _check_async = _awaiting(plans.guarded)

    def protect(
        self,
        *,
        tool: str,
        action: str,
        fail_open: bool = False,
        **options: Unpack[GuardOptions],
    ) -> Callable[[AF], AF]:
        """As `Client.protect`, for `async def` functions."""
        guard = Guard(tool=tool, action=action, fail_open=fail_open, **options)

        def decorate(function: AF) -> AF:
            if not inspect.iscoroutinefunction(function):
                raise TypeError(
                    f"AsyncClient.protect guards async functions; {function.__qualname__} is "
                    "not one (use Client.protect)"
                )
            return cast(AF, _guard_coroutine(self, guard, function))

        return decorate
