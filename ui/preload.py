"""Import every page's modules in the background, once per server process, after the first page is shown.

The landing page (Explore) never imports torch, so a server starts fast; the other pages need torch,
the geometry and their figure modules, whose first import takes over a second. Loading them in a
background thread while the user looks at the first page keeps that second out of the first visit of
every other page. The modules to load are read from the page files themselves (their import
statements), so the list cannot go stale.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import threading
from collections.abc import Iterable
from pathlib import Path

import streamlit as st

from latent import paths


def page_imports(page_files: Iterable[Path]) -> list[str]:
    """The absolute modules that the given page scripts import at their top level, in first-seen order."""
    seen: dict[str, None] = {}
    for file in page_files:
        for node in ast.parse(file.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Import):
                seen.update((alias.name, None) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__":
                seen[node.module] = None
                seen.update((f"{node.module}.{alias.name}", None) for alias in node.names)
    return list(seen)


def import_modules(modules: list[str]) -> None:
    """Import each name that is a module; names of functions or classes are skipped."""
    for name in modules:
        with contextlib.suppress(ImportError):  # a name from a module (a function, a class), not a module
            importlib.import_module(name)


@st.cache_resource(show_spinner=False)
def start(page_files: tuple[str, ...]) -> threading.Thread:
    """Start the background import of these page files' modules (once per process); returns the thread."""
    modules = page_imports(paths.REPO_ROOT / file for file in page_files)
    thread = threading.Thread(target=import_modules, args=(modules,), name="latent-preload", daemon=True)
    thread.start()
    return thread
