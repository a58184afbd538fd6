from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from aegis_gateway import Client

from .gateway import Gateway

_names = itertools.count()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway per test module, with the `github` tool registered."""
    running = Gateway(tmp_path_factory.mktemp("gateway"))
    running.register_tools()
    yield running
    running.close()


@pytest.fixture
def own_gateway(tmp_path: Path) -> Iterator[Gateway]:
    """A gateway of this test alone (it may be stopped)."""
    running = Gateway(tmp_path)
    running.register_tools()
    yield running
    running.close()


@pytest.fixture
def agent(gateway: Gateway) -> tuple[str, str]:
    """A fresh agent of the module's gateway: id and token."""
    return gateway.new_agent(f"agent-{next(_names)}")


@pytest.fixture
def client(gateway: Gateway, agent: tuple[str, str]) -> Iterator[Client]:
    with Client(gateway.base_url, agent[1], timeout=5, retries=2, backoff=0.05) as opened:
        yield opened
