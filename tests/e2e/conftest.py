"""Browser tests: the real Streamlit server on 127.0.0.1, driven in Debian's headless Chromium.

Chromium comes from Debian (``/usr/bin/chromium``), never from ``playwright install``. When it is
missing, these tests skip and say why; ``scripts/test.sh`` installs it where it can (root + apt).
Screenshots go to ``artifacts/screenshots/`` (and, with ``LATENT_UPDATE_SCREENSHOTS=1``, to
``docs/screenshots/`` for the README).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from latent import paths

CHROMIUM = os.environ.get("LATENT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = paths.REPO_ROOT / "artifacts" / "screenshots"
README_SHOTS = paths.REPO_ROOT / "docs" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
    """``python -m ui.serve`` (``streamlit run app.py``, warmed) on 127.0.0.1:port, as scripts/app.sh starts it."""
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        [sys.executable, "-m", "ui.serve", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=paths.REPO_ROOT, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)


def wait_healthy(port: int, process: subprocess.Popen, timeout: float = 120.0) -> float:
    """Seconds until the server answers its health check."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return time.perf_counter() - started
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"streamlit did not become healthy on port {port} in {timeout} s")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"browser tests skipped: Chromium not found at {CHROMIUM}. Install Debian's package "
                    "(sudo apt-get install chromium) or set LATENT_CHROMIUM; scripts/test.sh does this as root.")
    return CHROMIUM


@pytest.fixture(scope="session")
def server(real_data_dir) -> Iterator[str]:
    port = free_port()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    process = start_server(port, log=ARTIFACTS.parent / "streamlit-e2e.log")
    try:
        wait_healthy(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1500, "height": 1000}, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(120_000)
    try:
        yield page
    finally:
        context.close()


def save_screenshot(page, name: str) -> Path:
    """Save a full-page screenshot as a test artifact (and for the README when asked)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    if os.environ.get("LATENT_UPDATE_SCREENSHOTS") == "1":
        README_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, README_SHOTS / path.name)
    return path
