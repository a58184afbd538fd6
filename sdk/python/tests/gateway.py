"""The real `aegis` binary, started like a user would: `aegis init`, then `aegis serve` on a
free loopback port with a fresh SQLite database in a temporary directory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[3]


def aegis_binary() -> Path:
    binary = Path(os.environ.get("AEGIS_BIN", REPO / "target" / "debug" / "aegis"))
    if not binary.is_file():
        raise RuntimeError(
            f"no aegis binary at {binary}: run `cargo build -p aegis` or set AEGIS_BIN"
        )
    return binary


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Gateway:
    """One gateway process and its database; `admin` speaks the management API."""

    def __init__(self, directory: Path, tenant: str = "acme") -> None:
        self.directory = directory
        self.db = directory / "aegis.db"
        self.binary = aegis_binary()
        init = self.aegis("init", "--tenant", tenant, "--db", str(self.db))
        self.admin_key: str = json.loads(init.stdout)["admin_key"]
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()
        self.admin = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.admin_key}"},
            timeout=10,
        )

    def aegis(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), *args],
            cwd=self.directory,
            env={**os.environ, "AEGIS_LOG": "warn"},
            capture_output=True,
            text=True,
            check=check,
        )

    def start(self) -> None:
        log = (self.directory / "serve.log").open("ab")
        self.process = subprocess.Popen(
            [str(self.binary), "serve", "--db", str(self.db), "--listen", f"127.0.0.1:{self.port}"],
            cwd=self.directory,
            env={**os.environ, "AEGIS_LOG": "warn"},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"aegis serve exited: {self.log()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"aegis serve did not become ready: {self.log()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)
        self.process = None

    def close(self) -> None:
        self.stop()
        self.admin.close()

    def log(self) -> str:
        return (self.directory / "serve.log").read_text(errors="replace")

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self.admin.request(method, path, **kwargs)
        assert answer.is_success, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json()

    def new_agent(self, name: str, risk_tier: str = "low") -> tuple[str, str]:
        """A new agent: its id and token."""
        agent = self.call("POST", "/v1/agents", json={"name": name, "risk_tier": risk_tier})
        return agent["id"], agent["agent_token"]

    def register_tools(self) -> None:
        """`github`: `get_file` (a read) and `merge_pull_request` (a high-risk write)."""
        self.call(
            "POST",
            "/v1/tools",
            json={
                "tool": "github",
                "actions": [
                    {"action": "get_file", "mutates_state": False, "risk": "low"},
                    {"action": "merge_pull_request", "mutates_state": True, "risk": "high"},
                ],
            },
        )

    def decisions_of(self, agent_id: str) -> list[dict[str, Any]]:
        decisions: list[dict[str, Any]] = self.call(
            "GET", "/v1/decisions", params={"agent_id": agent_id, "limit": 1000}
        )
        return decisions
