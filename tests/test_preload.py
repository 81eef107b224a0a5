"""ui/preload.py: which modules the background import loads, read from the page files."""

from __future__ import annotations

import importlib
import sys
import textwrap

from latent import paths
from ui import preload
from ui.navigation import PAGE_FILES


def test_page_imports_reads_top_level_absolute_imports(tmp_path):
    page = tmp_path / "page.py"
    page.write_text(textwrap.dedent("""
        from __future__ import annotations
        import json, email.mime as mime
        from os import path, sep
        from . import sibling
        def later():
            import tomllib  # inside a function: imported when the page runs that code, not preloaded
    """))
    assert preload.page_imports([page]) == ["json", "email.mime", "os", "os.path", "os.sep"]


def test_import_all_loads_modules_and_skips_names_that_are_not_modules(tmp_path, monkeypatch):
    (tmp_path / "preload_probe_module.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("preload_probe_module", None)
    preload.import_modules(["preload_probe_module", "preload_probe_module.VALUE", "json.not_a_module"])
    assert "preload_probe_module" in sys.modules
    sys.modules.pop("preload_probe_module", None)


def test_every_page_module_to_preload_exists():
    """Each name is a module or a name defined in its parent module: the pages' imports, nothing invented."""
    names = preload.page_imports(paths.REPO_ROOT / f for f in PAGE_FILES)
    assert "streamlit" in names and any(n.startswith("latent.") for n in names)
    for name in names:
        parent, _, attr = name.rpartition(".")
        try:
            importlib.import_module(name)
        except ImportError:
            assert parent and hasattr(importlib.import_module(parent), attr), name
