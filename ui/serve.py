"""Start the dashboard: import the heavy modules, then hand over to ``streamlit run app.py``.

Streamlit runs the page script only once a browser connects, so on its own the first visitor also
waits for the imports of torch, pandas and the library: about 1.5 s of the first page's 2.5 s here.
This launcher imports them first, in the server process and before the server listens, so that this
work overlaps with the time a browser needs to start and connect; the first page then only loads
its resources. It then runs Streamlit's own command line, unchanged. ``scripts/app.sh`` uses it;
extra arguments go to ``streamlit run``::

    python -m ui.serve --server.port 8501
"""

from __future__ import annotations

import importlib
import sys

#: What the landing page imports that takes time (torch alone is over a second here).
PRELOAD: tuple[str, ...] = ("torch", "pandas", "latent.model", "latent.rankings", "latent.search", "ui.page")


def preload(modules: tuple[str, ...] = PRELOAD) -> list[str]:
    """Import ``modules``; returns the ones that failed (the page reports a real problem itself)."""
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - reported on the page, with context, if it matters
            print(f"latent: could not preload {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed.append(name)
    return failed


def main(argv: list[str] | None = None) -> None:
    """Preload, then run ``streamlit run app.py [argv]`` in this process."""
    from latent import paths

    args = sys.argv[1:] if argv is None else argv
    preload()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(paths.REPO_ROOT / "app.py"), *args]
    cli.main()


if __name__ == "__main__":
    main()
