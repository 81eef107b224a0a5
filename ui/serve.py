"""``python -m ui.serve [streamlit options]``: ``streamlit run app.py``, with the server process warmed.

Streamlit runs ``app.py`` only when the first browser connects, so that visit would pay for every
import of the library and the pages, and for loading the compiled search kernels from numba's cache.
This entry point first imports what the landing page (the first of ``ui.navigation.PAGES``) needs and
loads the search kernels, then starts the same server (Streamlit's own command line, in this process);
the other pages' modules (torch among them) are imported in the background once the first page is
shown (:mod:`ui.preload`). So the address is printed a second or two later, and the first visit is
nearly as fast as later ones. ``scripts/app.sh`` uses
it; ``streamlit run app.py`` works too, with a slower first visit.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from latent import paths
from ui import preload
from ui.navigation import PAGE_FILES


def _warm_for_the_landing_page() -> None:
    from latent.search import warm_up

    preload.import_modules(preload.page_imports([paths.REPO_ROOT / PAGE_FILES[0]]))
    warm_up()  # kernels from numba's disk cache (compiled by scripts/setup.sh) into this process


def main(argv: Sequence[str] | None = None) -> int:
    from streamlit.web import cli

    _warm_for_the_landing_page()  # the other pages' imports follow the first visit (ui.navigation.run_app)
    args = list(sys.argv[1:] if argv is None else argv)
    return cli.main(["run", str(paths.REPO_ROOT / "app.py"), *args], prog_name="streamlit", standalone_mode=False) or 0


if __name__ == "__main__":
    raise SystemExit(main())
