"""Set-up work that would otherwise land inside a user's first click: ``python -m latent warm-up``.

``scripts/setup.sh`` runs it once per machine and version of the search code (and ``scripts/app.sh``
through it), so that a fresh clone's first visit of a page only loads what this left on disk:

1. the search's numba kernels, compiled into numba's on-disk cache (:func:`latent.search.warm_up`);
2. when the dataset is already in the data folder (set-up never downloads), the derived files in the
   cache folder that the first page visit would otherwise build: the decoded dataset in canonical order
   and the numpy copy of the decoder (which needs torch's import once).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .config import Settings


def warm_up(settings: Settings, say: Callable[[str], None] = print) -> None:
    """Compile and cache as described in the module docstring, reporting each step through ``say``."""
    from .search import warm_up as compile_search

    started = time.perf_counter()
    say("warm-up: compiling the search kernels into numba's cache (once per machine; about a minute) ...")
    last = [-1]

    def progress(done: int, total: int, message: str) -> None:
        percent = 100 * done // max(total, 1)
        if percent // 25 != last[0] // 25 or done == total:
            say(f"warm-up:   {percent:3d}% {message}")
            last[0] = percent

    compile_search(progress)
    say(f"warm-up: search kernels ready ({time.perf_counter() - started:.1f} s)")
    _prepare_caches(settings, say)


def _prepare_caches(settings: Settings, say: Callable[[str], None]) -> None:
    from .catalog import file_sha256
    from .data import DataError, load_fashion_mnist, missing_files
    from .numpy_decoder import load_or_export

    if missing_files(settings.data_dir):
        say(f"warm-up: no dataset in {settings.data_dir} yet; the app downloads it on its first start")
        return
    started = time.perf_counter()
    try:
        load_fashion_mnist(settings.data_dir, download=False, cache_dir=settings.cache_dir)
    except DataError as exc:
        say(f"warm-up: the dataset in {settings.data_dir} could not be read, so nothing was cached: {exc}")
        return
    if settings.checkpoint.is_file():
        from .model import load_checkpoint

        sha256 = file_sha256(settings.checkpoint)
        load_or_export(settings.cache_dir, sha256, lambda: load_checkpoint(settings.checkpoint)[0])
    say(f"warm-up: decoded dataset and decoder cached in {settings.cache_dir} "
        f"({time.perf_counter() - started:.1f} s)")
