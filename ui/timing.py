"""How long each page script run takes on the server: a small, thread-safe, per-process record.

``app.py`` wraps every run in :func:`measure`; the Model page shows recent figures, and
``bench/bench_app.py`` reads them for the server-side rerun latency.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from latent.config import ConfigError, Settings


class _Record:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: deque[tuple[str, float]] = deque(maxlen=1000)


@st.cache_resource(show_spinner=False)
def _record() -> _Record:
    """One record per server process (Streamlit may re-import app modules between runs)."""
    return _Record()


@contextmanager
def measure(page: str) -> Iterator[None]:
    """Record the wall time of the enclosed page run (also when it stops early with st.stop)."""
    record = _record()
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - started
        with record.lock:
            record.runs.append((page, seconds))
        try:
            log = Settings.from_env().log_timing  # LATENT_LOG_TIMING=1, for bench/bench_app.py
        except ConfigError:
            log = False  # the page itself reports a bad setting (ui.resources.get_resources)
        if log:
            print(f"latent-timing page={page!r} ms={1000 * seconds:.2f}", file=sys.stderr, flush=True)


def recent(page: str | None = None) -> list[float]:
    """Durations in seconds of the recorded runs (of one page, if given), oldest first."""
    record = _record()
    with record.lock:
        return [seconds for name, seconds in record.runs if page is None or name == page]
