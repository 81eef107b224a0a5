"""Geometry resources for the Cartography page: cached per process, heavy work only on request.

* Cheap, interactive views (the 32 x 32 slice with its grid-difference magnification, the garment mosaic,
  the slice cartogram) are ``st.cache_data`` functions keyed by the checkpoint's SHA-256 and the view's
  parameters, so a rerun never recomputes them.
* Work of a second or more (exact JVP magnification, a continuous geodesic) runs only when the user asks
  (a button): the result is cached per process by the same keys, and the session remembers that it asked
  (:data:`REQUESTED`), so later reruns show it without asking again.
* The catalog's kNN graph (70,000 decodes, tens of seconds) is built behind a button with a progress bar,
  saved in the cache folder keyed by the catalog key (model hash + data fingerprint) and the graph's
  parameters (measure included), and loaded once per process with ``st.cache_resource``.

Nothing here runs at import time or at start-up; every function takes the page's
:class:`ui.resources.Resources`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import streamlit as st

from latent.cartogram import Cartogram
from latent.cartography import (
    CURVE_POINTS,
    MagnificationMap,
    build_slice,
    graph_stretch,
    magnification_map,
    map_cartogram,
    slice_cartogram,
    slice_thumbnails,
)
from latent.catalog import kl_per_dimension
from latent.config import Settings
from latent.geodesic import GeodesicResult, LatentGraph, continuous_geodesic
from latent.geometry import Decoder, LatentSlice, torch_threads, vae_decoder
from latent.io import atomic_writer
from ui.resources import Resources

#: Session-state key: the set of expensive results this session asked for (keys as tuples).
REQUESTED = "carto_requested"
#: Neighbours per node in the catalog graph (k in docs/cartography.md section 3.1).
GRAPH_K = 10
#: Garments per side of the slice mosaic.
TILES = 8

SliceKey = tuple  # (span, z, dims, via_points, extent, resolution, measure): hashable view parameters


@st.cache_resource(show_spinner=False)
def _decoder(sha256: str, _model) -> Decoder:
    return vae_decoder(_model)


def get_decoder(res: Resources) -> Decoder:
    """The VAE's decoder as a :class:`latent.geometry.Decoder` (float32, flattened 784-pixel means)."""
    return _decoder(res.checkpoint_sha256, res.model)


def slice_key(span: str, z: tuple[float, ...], dims: tuple[int, int], via: tuple[tuple[float, ...], ...] | None,
              extent: float | None, resolution: int, measure: str) -> SliceKey:
    """The hashable parameters of one slice view (z and the via points as float tuples)."""
    return (span, tuple(z), tuple(dims), None if via is None else tuple(tuple(p) for p in via), extent,
            int(resolution), measure)


def slice_of(key: SliceKey) -> LatentSlice:
    """The :class:`LatentSlice` of a view (cheap; raises ValueError when the items span no plane)."""
    span, z, dims, via, extent, resolution, _ = key
    return build_slice(np.array(z), span=span, dims=dims, via=via, extent=extent, resolution=resolution)


@st.cache_resource(show_spinner=False)
def _dimension_kl(key: str, _catalog) -> np.ndarray:
    kl = kl_per_dimension(_catalog)
    kl.setflags(write=False)
    return kl


def dimension_kl(res: Resources) -> np.ndarray:
    """Mean KL to the prior per latent dimension (d,), nats: how much the model uses each dimension."""
    return _dimension_kl(res.catalog.key, res.catalog)


# --------------------------------------------------------------------------- interactive views (cached)


@st.cache_data(show_spinner=False, max_entries=64)
def _slice_view(sha256: str, key: SliceKey, _model) -> tuple[MagnificationMap, np.ndarray]:
    sl = slice_of(key)
    decoder = _decoder(sha256, _model)
    with torch_threads(1):
        mag = magnification_map(decoder, sl, key[-1], "grid")
        tiles = slice_thumbnails(decoder, sl, TILES)
    return mag, tiles


def slice_view(res: Resources, key: SliceKey) -> tuple[MagnificationMap, np.ndarray]:
    """Grid-difference log MF_2 over the slice and its (8, 8, 28, 28) garment mosaic: interactive (< 1 s)."""
    return _slice_view(res.checkpoint_sha256, key, res.model)


@st.cache_data(show_spinner=False, max_entries=32)
def _slice_cartogram(sha256: str, key: SliceKey, method: str, _mag: MagnificationMap) -> Cartogram:
    return slice_cartogram(_mag, slice_of(key))


def stretched_slice(res: Resources, key: SliceKey, mag: MagnificationMap) -> Cartogram:
    """The slice's cartogram for the magnification shown (grid estimate or exact)."""
    return _slice_cartogram(res.checkpoint_sha256, key, mag.method, mag)


# --------------------------------------------------------------------------- on request (buttons)


def was_requested(key: tuple) -> bool:
    return key in st.session_state.setdefault(REQUESTED, set())


def _remember(key: tuple) -> None:
    st.session_state.setdefault(REQUESTED, set()).add(key)


@st.cache_data(show_spinner=False, max_entries=32)
def _exact_map(sha256: str, key: SliceKey, _model) -> MagnificationMap:
    with torch_threads(1):
        return magnification_map(_decoder(sha256, _model), slice_of(key), key[-1], "exact")


def request_exact(res: Resources, key: SliceKey) -> None:
    """Ask for the exact magnification of this slice (a button's callback; computed on the next run)."""
    _remember(("exact", res.checkpoint_sha256, key))


def exact_map(res: Resources, key: SliceKey) -> MagnificationMap | None:
    """The exact (JVP) log MF_2 of the slice if this session asked for it (seconds the first time), else None."""
    if not was_requested(("exact", res.checkpoint_sha256, key)):
        return None
    return _exact_map(res.checkpoint_sha256, key, res.model)


@st.cache_data(show_spinner=False, max_entries=64)
def _geodesic(sha256: str, za: tuple[float, ...], zb: tuple[float, ...], measure: str, n_points: int,
              _model) -> GeodesicResult:
    with torch_threads(1):
        return continuous_geodesic(_decoder(sha256, _model), np.array(za), np.array(zb), n_points=n_points,
                                   measure=measure)


def _geodesic_request(res: Resources, za: tuple[float, ...], zb: tuple[float, ...], measure: str) -> tuple:
    return ("geodesic", res.checkpoint_sha256, tuple(za), tuple(zb), measure, CURVE_POINTS)


def request_geodesic(res: Resources, za: tuple[float, ...], zb: tuple[float, ...], measure: str) -> None:
    """Ask for the geodesic from z_a to z_b (a button's callback; computed on the next run)."""
    _remember(_geodesic_request(res, za, zb, measure))


def geodesic(res: Resources, za: tuple[float, ...], zb: tuple[float, ...], measure: str) -> GeodesicResult | None:
    """The continuous geodesic (K = 32, L-BFGS) from z_a to z_b if this session asked for it (computed the
    first time, then cached), else None."""
    if not was_requested(_geodesic_request(res, za, zb, measure)):
        return None
    return _geodesic(res.checkpoint_sha256, tuple(za), tuple(zb), measure, CURVE_POINTS, res.model)


# --------------------------------------------------------------------------- the catalog graph


def graph_template(measure: str) -> LatentGraph:
    """The catalog graph's parameters: k = 10 nearest means, edge weight = the measure's decoded length."""
    return LatentGraph(k=GRAPH_K, measure=measure)


def graph_key(res: Resources, measure: str) -> str:
    return graph_template(measure).cache_key(res.catalog.key)


def graph_file(key: str) -> Path:
    """Where the graph for ``key`` is cached: ``graph-<hash of key>.npz`` in the cache folder."""
    return Settings.from_env().cache_dir / f"graph-{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"


@st.cache_resource(show_spinner="Loading the geodesic graph ...", max_entries=4)
def _load_graph(key: str, path: str) -> LatentGraph | None:
    return LatentGraph.load(path, key)


def get_graph(res: Resources, measure: str) -> LatentGraph | None:
    """The cached catalog graph for ``measure``, or None when it has not been built yet (nothing is built here)."""
    key = graph_key(res, measure)
    path = graph_file(key)
    if not path.is_file():
        return None
    graph = _load_graph(key, str(path))
    if graph is None:  # unreadable or stale: forget it so that a rebuilt file is read
        _load_graph.clear()
    return graph


def build_graph(res: Resources, measure: str) -> LatentGraph:
    """Build the catalog graph with a progress bar, save it in the cache folder and return it."""
    key = graph_key(res, measure)
    n = len(res.catalog)
    with st.status(f"Building the geodesic graph of all {n:,} items ({measure}) ...", expanded=True) as status:
        bar = st.progress(0.0, text="decoding the catalog means")

        def progress(done: int, total: int) -> None:
            stage = "decoding the catalog means" if done <= n else "weighing the edges"
            bar.progress(min(done / total, 1.0), text=f"{stage}: {done:,} of {total:,}")

        with torch_threads(1):
            graph = graph_template(measure).fit(get_decoder(res), res.catalog.mu, progress=progress)
        graph.save(graph_file(key), key)
        status.update(label=f"Geodesic graph built and cached ({len(graph.edges_):,} edges).", state="complete",
                      expanded=False)
    _load_graph.clear()
    return graph


def _graph_stamp(res: Resources, measure: str) -> tuple[str, str, int]:
    """The graph's key, file and modification time: what its derived caches are keyed by."""
    key = graph_key(res, measure)
    path = graph_file(key)
    return key, str(path), path.stat().st_mtime_ns if path.is_file() else 0


@st.cache_resource(show_spinner=False, max_entries=16)
def _graph_distances(stamp: tuple, z: tuple[float, ...], _graph: LatentGraph, _decoder: Decoder) -> np.ndarray:
    with torch_threads(1):
        distances = _graph.query(_decoder, np.array(z)).distances
    distances.setflags(write=False)
    return distances


def graph_distances(res: Resources, graph: LatentGraph, measure: str, z: tuple[float, ...]) -> np.ndarray:
    """Graph-geodesic distance from z to every item (N,): one Dijkstra on the cached graph (tens of ms)."""
    return _graph_distances(_graph_stamp(res, measure), tuple(z), graph, get_decoder(res))


@st.cache_resource(show_spinner="Stretching the map ...", max_entries=4)
def _stretched_map(stamp: tuple, _graph: LatentGraph, _embedding: np.ndarray) -> tuple[Cartogram, np.ndarray]:
    weights = graph_stretch(_graph) ** 2
    cart = map_cartogram(_embedding, weights)
    moved = cart.map_points(np.asarray(_embedding, dtype=np.float64))
    moved.setflags(write=False)
    return cart, moved


def stretched_map(res: Resources, graph: LatentGraph, measure: str,
                  embedding: np.ndarray) -> tuple[Cartogram, np.ndarray]:
    """The UMAP map stretched by the items' squared graph stretch, and every item's carried position (N, 2)."""
    return _stretched_map(_graph_stamp(res, measure), graph, embedding)



# --------------------------------------------------------------------------- magnification at every catalog mean


def magnification_file(res: Resources) -> Path:
    """Where the log MF at every catalog mean is cached (keyed by the catalog key: model hash + data)."""
    return Settings.from_env().cache_dir / f"mf-{res.catalog.key[:20]}.npz"


@st.cache_resource(show_spinner=False, max_entries=2)
def _load_catalog_mf(key: str, path: str, n: int) -> np.ndarray | None:
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as npz:
            if str(npz["key"]) != key:
                return None
            values = npz["log_mf"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if values.shape != (n,):
        return None
    values.setflags(write=False)
    return values


def catalog_magnification(res: Resources) -> np.ndarray | None:
    """log MF = 0.5 log det G at every catalog mean (N,), or None until it has been computed."""
    path = magnification_file(res)
    if not path.is_file():
        return None
    values = _load_catalog_mf(res.catalog.key, str(path), len(res.catalog))
    if values is None:  # stale or damaged: forget it so that a recomputed file is read
        _load_catalog_mf.clear()
    return values


def build_catalog_magnification(res: Resources) -> np.ndarray:
    """Compute log MF at every catalog mean (10 JVPs each; minutes) with a progress bar, and cache it on disk."""
    import time

    from latent.geometry import log_magnification_at

    n = len(res.catalog)
    with st.status(f"Computing the magnification factor at all {n:,} means (10 JVPs each) ...",
                   expanded=True) as status:
        bar = st.progress(0.0, text="starting")
        started = time.perf_counter()

        def progress(done: int, total: int) -> None:
            elapsed = time.perf_counter() - started
            left = elapsed / max(done, 1) * (total - done)
            bar.progress(min(done / total, 1.0), text=f"{done:,} of {total:,} means · about {left / 60:.0f} min left")

        with torch_threads(1):
            values = log_magnification_at(get_decoder(res), res.catalog.mu, batch_size=500, progress=progress)
        with atomic_writer(magnification_file(res)) as fh:
            np.savez(fh, key=np.array(res.catalog.key), log_mf=np.asarray(values, dtype=np.float64))
        status.update(label="Magnification at every mean computed and cached.", state="complete", expanded=False)
    _load_catalog_mf.clear()
    return np.asarray(values)


@st.cache_resource(show_spinner="Stretching the map ...", max_entries=2)
def _mf_stretched_map(key: str, _log_mf: np.ndarray, _embedding: np.ndarray) -> tuple[Cartogram, np.ndarray]:
    from latent.cartography import magnification_weights

    cart = map_cartogram(_embedding, magnification_weights(_log_mf))
    moved = cart.map_points(np.asarray(_embedding, dtype=np.float64))
    moved.setflags(write=False)
    return cart, moved


def mf_stretched_map(res: Resources, log_mf: np.ndarray, embedding: np.ndarray) -> tuple[Cartogram, np.ndarray]:
    """The UMAP map stretched by the magnification factor at each item's mean, and every item's new position."""
    return _mf_stretched_map(res.catalog.key, log_mf, embedding)
