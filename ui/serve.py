"""``python -m ui.serve [streamlit options]``: ``streamlit run app.py``, with the server process warmed.

Streamlit runs ``app.py`` only when the first browser connects, so that visit would pay for every
import of the library and the pages, and for loading the compiled search kernels from numba's cache.
This entry point first imports every page's modules (torch among them) and loads the search kernels,
then starts the same server (Streamlit's own command line, in this process). So the address is
printed a few seconds later, and no first visit of a page waits for an import or a kernel, nor
competes with a background import for the two cores of a small machine. ``scripts/app.sh`` uses
it; ``streamlit run app.py`` works too, with a slower first visit.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from latent import paths
from ui import preload, resources
from ui.navigation import PAGE_FILES

#: Modules that Streamlit imports on first use of an element the pages show: st.bar_chart (altair) and
#: st.dataframe of a pandas Styler (the Model page).
STREAMLIT_LAZY_IMPORTS = ("altair", "pandas.io.formats.style")


def _warm_server_process() -> None:
    from latent.search import warm_up

    preload.import_modules(preload.page_imports(paths.REPO_ROOT / f for f in PAGE_FILES))
    preload.import_modules(list(STREAMLIT_LAZY_IMPORTS))
    warm_up()  # kernels from numba's disk cache (compiled by scripts/setup.sh) into this process
    resources.preload()


def main(argv: Sequence[str] | None = None) -> int:
    from streamlit.web import cli

    print("Latent Explorer: loading the pages' modules and the search kernels ...", flush=True)
    _warm_server_process()
    args = list(sys.argv[1:] if argv is None else argv)
    return cli.main(["run", str(paths.REPO_ROOT / "app.py"), *args], prog_name="streamlit", standalone_mode=False) or 0


if __name__ == "__main__":
    raise SystemExit(main())
