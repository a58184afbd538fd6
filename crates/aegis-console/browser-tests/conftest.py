"""Fixtures of the console's browser tests: the built `aegis` binary serving a fresh SQLite
database on a loopback port, an API client for setting the scene, and a real Chromium
(Debian's package) driven by Playwright that refuses every request to another host."""

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[3]
AEGIS = os.environ.get("AEGIS_BIN", str(REPO / "target" / "debug" / "aegis"))
CHROMIUM = os.environ.get("AEGIS_CHROMIUM", "/usr/bin/chromium")
# Where each test writes its screenshots (named in the README).
SCREENSHOTS = Path(os.environ.get("AEGIS_CONSOLE_SCREENSHOTS", REPO / "target" / "console-screenshots"))
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class Gateway:
    """`aegis serve` on a free loopback port, with the admin key `aegis init` printed."""

    def __init__(self, directory: Path):
        db = directory / "aegis.db"
        init = subprocess.run(
            [AEGIS, "init", "--tenant", "acme", "--db", str(db)],
            check=True, capture_output=True, text=True, cwd=directory,
        )
        self.admin = json.loads(init.stdout)["admin_key"]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.log = open(directory / "serve.log", "w")
        self.process = subprocess.Popen(
            [AEGIS, "serve", "--db", str(db), "--listen", f"127.0.0.1:{port}"],
            cwd=directory, stdout=subprocess.DEVNULL, stderr=self.log,
            env={**os.environ, "AEGIS_LOG": "info"},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.base}/readyz") as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the gateway did not become ready")

    def call(self, method: str, path: str, credential: str, body=None):
        """One API call; returns (status, JSON answer)."""
        request = urllib.request.Request(
            f"{self.base}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {credential}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def api(self, method: str, path: str, body=None, credential=None):
        status, answer = self.call(method, path, credential or self.admin, body)
        assert status < 300, f"{method} {path}: {status} {answer}"
        return answer

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=15)
        self.log.close()


@pytest.fixture
def gateway():
    with tempfile.TemporaryDirectory() as directory:
        gw = Gateway(Path(directory))
        yield gw
        gw.stop()


@pytest.fixture(scope="session")
def chromium():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


class Visits:
    """Browser contexts that fail the test on any request to a non-loopback host."""

    def __init__(self, browser):
        self.browser = browser
        self.contexts = []
        self.foreign = []

    def context(self, **options):
        context = self.browser.new_context(**options)

        def guard(route):
            host = urlsplit(route.request.url).hostname
            if host in LOOPBACK:
                route.continue_()
            else:
                self.foreign.append(route.request.url)
                route.abort()

        context.route("**/*", guard)
        context.on("page", self._watch_sockets)
        self.contexts.append(context)
        return context

    def _watch_sockets(self, page):
        def check(socket):
            if urlsplit(socket.url).hostname not in LOOPBACK:
                self.foreign.append(socket.url)

        page.on("websocket", check)


@pytest.fixture
def visits(chromium):
    tracker = Visits(chromium)
    yield tracker
    for context in tracker.contexts:
        context.close()
    assert tracker.foreign == [], f"the console made requests off this machine: {tracker.foreign}"


@pytest.fixture
def shots(request):
    """`shots("name", page)` writes a full-page screenshot for this test."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(name, page):
        page.screenshot(path=str(SCREENSHOTS / f"{request.node.name}-{name}.png"), full_page=True)

    return take
