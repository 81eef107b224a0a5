"""Heavy, read-only resources shared by every browser session: loaded once per server process.

Each loader is an ``st.cache_resource`` keyed by content hashes (the checkpoint's SHA-256, the data
fingerprint, the catalog key), so a rerun never recomputes them and a new checkpoint or dataset
gets fresh ones. First-run work that takes seconds (download, encode, map) runs *outside* the
cached functions, behind a visible progress bar, and leaves its result on disk; the cached
function then only loads it. The returned objects are never mutated, so sharing them between
sessions (threads) is safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from latent import paths
from latent.catalog import Catalog, catalog_key, file_sha256, load_catalog, load_or_build_catalog
from latent.config import ConfigError, Settings
from latent.data import DataError, FashionMNIST, load_fashion_mnist, missing_files
from latent.numpy_decoder import NumpyDecoder, load_or_export

if TYPE_CHECKING:
    from latent.model import VAE


@dataclass(frozen=True)
class Resources:
    """Everything a page needs, all read-only.

    ``decoder`` decodes garments in numpy; the torch model (``model``, ``model_meta``) loads on first use,
    so that the landing page never waits for torch's import (over a second here).
    """

    data: FashionMNIST
    decoder: NumpyDecoder
    checkpoint: Path
    checkpoint_sha256: str
    catalog: Catalog

    @property
    def model(self) -> VAE:
        """The torch VAE (loaded once per process, on first use)."""
        return _load_model(str(self.checkpoint), self.checkpoint_sha256)[0]

    @property
    def model_meta(self) -> dict:
        """The checkpoint's metadata (training history and machine)."""
        return _load_model(str(self.checkpoint), self.checkpoint_sha256)[1]


def checkpoint_path() -> Path:
    """``$LATENT_CHECKPOINT`` or the shipped ``models/vae.pt`` (never taken from the URL)."""
    return Settings.from_env().checkpoint


@st.cache_resource(show_spinner=False)
def configure_runtime() -> int:
    """Set torch's process-wide thread count once per server process.

    One thread: every interaction is a tiny batch, for which extra threads only add contention
    between concurrent sessions (docs/geometry.md section 4, "Threads").
    """
    import torch

    torch.set_num_threads(Settings.from_env().torch_threads)
    return torch.get_num_threads()


def _file_stamp(folder: Path) -> tuple:
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.glob("*.gz")))


@st.cache_resource(show_spinner=False)
def _checkpoint_sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def checkpoint_sha256(ckpt: Path) -> str:
    """The checkpoint file's SHA-256, hashed once per process and file version; "" when there is no file
    (loading it then raises the CheckpointError that the page shows)."""
    if not ckpt.is_file():
        return ""
    stat = ckpt.stat()
    return _checkpoint_sha256(str(ckpt), stat.st_size, stat.st_mtime_ns)


@st.cache_resource(show_spinner="Reading Fashion-MNIST ...")
def _load_data(folder: str, stamp: tuple) -> FashionMNIST:
    return load_fashion_mnist(folder, download=False, cache_dir=Settings.from_env().cache_dir)


@st.cache_resource(show_spinner="Loading the model ...")
def _load_model(path: str, sha256: str) -> tuple[VAE, dict]:
    from latent.model import load_checkpoint

    configure_runtime()  # torch's thread count: once per process, before the model first runs
    model, meta = load_checkpoint(path)
    for param in model.parameters():
        param.requires_grad_(False)
    return model, meta


@st.cache_resource(show_spinner="Loading the decoder ...")
def _load_decoder(path: str, sha256: str) -> NumpyDecoder:
    """The numpy decoder of the checkpoint (raises CheckpointError for a missing or bad checkpoint)."""
    return load_or_export(Settings.from_env().cache_dir, sha256, lambda: _load_model(path, sha256)[0])


@st.cache_resource(show_spinner="Loading the catalog ...")
def _load_catalog(key: str, path: str, sha256: str, _data: FashionMNIST, latent_dim: int) -> Catalog:
    catalog = load_catalog(key, _data, latent_dim)
    if catalog is None:  # not on disk (a read-only cache folder): encode it here
        model, _ = _load_model(path, sha256)
        catalog = load_or_build_catalog(model, path, _data)
    return catalog


def _fail(title: str, exc: Exception) -> None:
    st.error(f"**{title}**\n\n{exc}")
    st.stop()


def _download_with_progress(folder: Path, url: str) -> None:
    from latent.data import download_fashion_mnist

    with st.status(f"First run: downloading Fashion-MNIST into `{folder}` ...", expanded=True) as status:
        bar = st.progress(0.0)

        def progress(label: str, done: int, total: int | None) -> None:
            if total:
                bar.progress(min(done / total, 1.0), text=f"{label}: {done / 1e6:.1f} of {total / 1e6:.1f} MB")

        download_fashion_mnist(folder, base_url=url, progress=progress)
        status.update(label="Fashion-MNIST downloaded and verified.", state="complete", expanded=False)


def _encode_with_progress(model: VAE, ckpt: Path, data: FashionMNIST) -> None:
    with st.status("First run: encoding all 70,000 items into the latent catalog ...", expanded=True) as status:
        bar = st.progress(0.0)
        load_or_build_catalog(
            model, ckpt, data,
            progress=lambda done, total: bar.progress(done / total, text=f"{done:,} of {total:,} items"),
        )
        status.update(label="Catalog built and cached.", state="complete", expanded=False)


def get_resources() -> Resources:
    """Load (or, on a first run, build with progress) everything; stops the page with a clear error."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        _fail("A setting is not valid.", exc)
    folder = settings.data_dir
    try:
        if missing_files(folder):
            _download_with_progress(folder, settings.data_url)
        data = _load_data(str(folder), _file_stamp(folder))
    except DataError as exc:
        _fail("The Fashion-MNIST data could not be loaded.", exc)
    ckpt = settings.checkpoint
    sha = checkpoint_sha256(ckpt)
    try:
        decoder = _load_decoder(str(ckpt), sha)
    except Exception as exc:
        from latent.model import CheckpointError  # already imported: the checkpoint was just read

        if not isinstance(exc, CheckpointError):
            raise
        _fail("The model checkpoint could not be loaded.", exc)
    key = catalog_key(sha, data.fingerprint)
    if _load_catalog_needs_build(key, len(data), decoder.latent_dim):
        _encode_with_progress(_load_model(str(ckpt), sha)[0], ckpt, data)
    catalog = _load_catalog(key, str(ckpt), sha, data, decoder.latent_dim)
    return Resources(data, decoder, ckpt, sha, catalog)


@st.cache_resource(show_spinner=False)
def _catalog_on_disk(key: str, n: int, d: int) -> bool:
    from latent.catalog import find_cached

    return find_cached(key, n, d) is not None


def _load_catalog_needs_build(key: str, n: int, d: int) -> bool:
    """True when no valid catalog file (shipped or cached) exists for ``key``: it must be encoded."""
    if _catalog_on_disk(key, n, d):
        return False
    _catalog_on_disk.clear()  # a later call looks again, after the build
    return True


@st.cache_resource(show_spinner="Building the search index ...")
def _search_index(key: str, _catalog: Catalog):
    from latent.search import SearchIndex

    # prepare(): every score's features at the default spread, and the compiled kernels loaded, so that
    # no first query waits for them.
    return SearchIndex().fit(_catalog.mu, _catalog.sigma).prepare()


def get_index(res: Resources):
    """The exact neighbour index over the catalog, fitted once per process and catalog."""
    return _search_index(res.catalog.key, res.catalog)


def prepare_spread(index, s: float | None) -> None:
    """Build the search features at spread ``s`` before the page's first query there (once per spread
    and process): tens of milliseconds at 70,000 items, seconds at millions. The spinner shows only
    when the build outlasts half a second."""
    if not index.is_prepared(s):
        with st.spinner(f"Preparing the search at spread s = {s} (once per spread) ..."):
            index.prepare([s])


@st.cache_resource(show_spinner=False)
def _active_dimensions(key: str, _catalog: Catalog) -> tuple[bool, ...]:
    from latent.catalog import kl_per_dimension

    return tuple(bool(v > 0.01) for v in kl_per_dimension(_catalog))


def active_dimensions(res: Resources) -> tuple[bool, ...]:
    """Per latent dimension: does the model use it (mean KL to the prior above 0.01 nats)?"""
    return _active_dimensions(res.catalog.key, res.catalog)


SHIPPED_MAP = paths.MODELS_DIR / "umap.npz"


def _map_cache_file(key: str) -> Path:
    return Settings.from_env().cache_dir / f"umap-{key[:20]}.npz"


@st.cache_resource(show_spinner="Loading the map ...")
def _load_map(key: str, _mu):
    from latent.projection import load_map

    for path in (SHIPPED_MAP, _map_cache_file(key)):
        result = load_map(path, _mu, key)
        if result.ok:
            return result.projector
    return None


def get_map(res: Resources):
    """The UMAP map of all catalog means: the shipped file, else the disk cache, else a fit with progress.

    A fit runs once per model and catalog (then it is cached on disk); the app never imports umap
    otherwise, and places queries on the map with a kNN average instead of ``transform``.
    """
    projector = _load_map(res.catalog.key, res.catalog.mu)
    if projector is not None:
        return projector
    from latent.projection import load_or_fit

    with st.status("First run: computing the UMAP map of all 70,000 items (a minute or two, once per model) ...",
                   expanded=True) as status:
        bar = st.progress(0.0, text="starting")

        def progress(stage: str, done: int, total: int | None) -> None:
            bar.progress(min(done / total, 1.0) if total else 0.0, text=stage)

        result = load_or_fit(res.catalog.mu, res.catalog.key, _map_cache_file(res.catalog.key),
                             also_try=[SHIPPED_MAP], progress=progress)
        status.update(label="Map ready.", state="complete", expanded=False)
    _load_map.clear()
    return result.projector



class _Thumbnails:
    """PNG bytes of dataset images, encoded once per (item, scale) and shared by all sessions."""

    def __init__(self, images) -> None:
        import threading

        self._images = images
        self._lock = threading.Lock()
        self._png: dict[tuple[int, int], bytes] = {}

    def get(self, item: int, scale: int) -> bytes:
        key = (int(item), int(scale))
        png = self._png.get(key)
        if png is None:
            from latent.render import png_bytes

            png = png_bytes(self._images[key[0]], scale=key[1])
            with self._lock:
                if len(self._png) > 50_000:  # bounded: a few KB each
                    self._png.clear()
                self._png[key] = png
        return png


@st.cache_resource(show_spinner=False)
def _thumbnails(fingerprint: str, _data: FashionMNIST) -> _Thumbnails:
    return _Thumbnails(_data.images)


def thumbnail_png(res: Resources, item: int, scale: int) -> bytes:
    """The dataset image ``item`` as PNG bytes, upscaled by ``scale`` (cached: images never change)."""
    return _thumbnails(res.data.fingerprint, res.data).get(item, scale)


def preload() -> bool:
    """Load the data, decoder, catalog and search index into this process's resource caches before any
    session starts (``python -m ui.serve``); True when they were loaded. Anything missing or invalid is
    left for the first page, which downloads or builds it with progress, or shows the error."""
    try:
        settings = Settings.from_env()
        if missing_files(settings.data_dir):
            return False
        data = _load_data(str(settings.data_dir), _file_stamp(settings.data_dir))
        ckpt = settings.checkpoint
        sha = checkpoint_sha256(ckpt)
        if not sha:
            return False
        decoder = _load_decoder(str(ckpt), sha)
        key = catalog_key(sha, data.fingerprint)
        if _load_catalog_needs_build(key, len(data), decoder.latent_dim):
            return False
        catalog = _load_catalog(key, str(ckpt), sha, data, decoder.latent_dim)
        _search_index(catalog.key, catalog)
    except Exception:  # the first page reports it, with what to do
        return False
    return True

