"""The Atlas's 2-D map of all encoded means: a seeded UMAP fit, fast placement, and a disk cache.

The map is a UMAP embedding (McInnes, Healy & Melville 2018, arXiv:1802.03426) of the catalog's
encoded means ``mu`` (N, d), computed once per model and catalog with :class:`MapProjector` and kept
on disk as a small ``.npz`` (:func:`save_map`, :func:`load_map`, :func:`load_or_fit`).

umap-learn is slow to start (numba compiles on first use), so it is imported lazily inside
:meth:`MapProjector.fit` and :func:`placement_agreement` only. At run time a new query ``z`` is put
on the map without umap, by :func:`place_points`: the inverse-distance-weighted mean map position of
its k nearest catalog means,

    p(z) = sum_i w_i e_i / sum_i w_i,   w_i = 1 / ||z - mu_i||^p,   i in kNN(z),

and exactly ``e_i`` when ``z`` equals a catalog mean ``mu_i``. This is close in spirit to how
umap-learn initialises ``transform`` (a membership-weighted mean of the neighbours' positions) but
skips its optimisation epochs; :func:`placement_agreement` measures how far apart the two end up.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .io import atomic_writer, write_text_atomic

#: ``progress(label, done, total)``, as in :mod:`latent.data`; here ``done``/``total`` count stages.
ProgressFn = Callable[[str, int, "int | None"], None]

#: Identifies a map file; bump :data:`MAP_FORMAT_VERSION` when the layout of the file changes.
MAP_FORMAT = "latent-explorer/umap-map"
MAP_FORMAT_VERSION = 1

#: Parameters that shape the embedding (stored in the file; a mismatch makes a file stale).
EMBEDDING_PARAMS: tuple[str, ...] = ("n_neighbors", "min_dist", "seed", "n_epochs")
#: Extra candidates examined exactly after the fast distance pass (guards near-ties at the k-th place).
_CANDIDATE_MARGIN = 16
#: Upper bound on the (rows x catalog) distance block held at once during placement.
_BLOCK_ELEMENTS = 1 << 22


class NotFittedError(ValueError, AttributeError):
    """The projector was used before :meth:`MapProjector.fit` or a successful :func:`load_map`."""


# --------------------------------------------------------------------------- validation


def _as_matrix(mu: Any, name: str = "mu") -> np.ndarray:
    """A float32 (N, d) copy of ``mu``, validated: finite, N >= 1, d >= 1."""
    try:
        arr = np.array(mu, dtype=np.float32, copy=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array of shape (N, d); got {type(mu).__name__} ({exc})") from None
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, d) with N >= 1 and d >= 1; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise ValueError(f"{name} must be finite; {bad} of {arr.shape[0]} rows hold NaN or inf")
    return arr


def _as_queries(z: Any, d: int) -> tuple[np.ndarray, bool]:
    """``z`` as float64 (B, d) and whether it was a single (d,) vector."""
    try:
        arr = np.asarray(z, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"z must be a numeric array of shape ({d},) or (B, {d}); got {type(z).__name__} ({exc})"
        ) from None
    single = arr.ndim == 1
    if single:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != d:
        raise ValueError(f"z must have shape ({d},) or (B, {d}); got shape {np.shape(z)}")
    if not np.isfinite(arr).all():
        raise ValueError("z must be finite; it holds NaN or inf")
    return arr, single


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    return int(value)


def _check_float(name: str, value: Any, low: float, high: float | None = None, low_open: bool = False) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    v = float(value) if ok else math.nan
    if not ok or not math.isfinite(v) or v < low or (low_open and v == low) or (high is not None and v > high):
        upper = f" and <= {high}" if high is not None else ""
        raise ValueError(f"{name} must be a finite number {'>' if low_open else '>='} {low}{upper}; got {value!r}")
    return v


# --------------------------------------------------------------------------- placement


def nearest_catalog(
    z: Any,
    catalog: np.ndarray,
    k: int,
    *,
    catalog_sqnorm: np.ndarray | None = None,
    catalog_t: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest catalog rows of each query, by exact Euclidean distance.

    Args:
        z: (B, d) float queries (already validated).
        catalog: (N, d) float64 catalog (a float32 one works but is converted on every call).
        k: 1 <= k <= N.
        catalog_sqnorm: optional precomputed (N,) float64 ``||catalog_i||^2``.
        catalog_t: optional precomputed C-contiguous (d, N) float64 transpose of ``catalog``.

    Returns:
        ``(indices, distances)``, both (B, k): int64 indices and float64 distances, sorted by
        distance, ties broken by the lower index.

    A fast pass ranks all N rows with ``||z||^2 - 2 z.mu + ||mu||^2`` in float64 (one matrix product),
    then the best ``k + 16`` candidates are re-measured exactly as ``sqrt(sum((mu - z)^2))``, so an
    exact match has distance exactly 0. The product uses ``einsum`` rather than BLAS: on a busy 2-core
    machine a multi-threaded BLAS call for one query can stall far longer than this single-threaded loop.
    """
    q = np.asarray(z, dtype=np.float64)
    cat = np.asarray(catalog, dtype=np.float64)
    n = cat.shape[0]
    m = min(n, k + _CANDIDATE_MARGIN)
    sq = catalog_sqnorm if catalog_sqnorm is not None else np.einsum("nd,nd->n", cat, cat)
    cat_t = catalog_t if catalog_t is not None else np.ascontiguousarray(cat.T)
    rows = max(1, _BLOCK_ELEMENTS // max(n, 1))
    out_idx = np.empty((q.shape[0], k), dtype=np.int64)
    out_dist = np.empty((q.shape[0], k), dtype=np.float64)
    for start in range(0, q.shape[0], rows):
        qb = q[start:start + rows]                                          # (b, d)
        approx = sq[None, :] - 2.0 * np.einsum("bd,dn->bn", qb, cat_t)      # (b, N); ||z||^2 is constant per row
        if m < n:
            cand = np.argpartition(approx, m - 1, axis=1)[:, :m]           # (b, m)
        else:
            cand = np.broadcast_to(np.arange(n), (qb.shape[0], n))
        diff = cat[cand] - qb[:, None, :]                                   # (b, m, d)
        dist = np.sqrt(np.einsum("bmd,bmd->bm", diff, diff))               # (b, m)
        order = np.lexsort((cand, dist), axis=-1)[:, :k]                   # by distance, then index
        out_idx[start:start + rows] = np.take_along_axis(cand, order, axis=1)
        out_dist[start:start + rows] = np.take_along_axis(dist, order, axis=1)
    return out_idx, out_dist


def weighted_positions(
    indices: np.ndarray, distances: np.ndarray, embedding: np.ndarray, power: float = 1.0
) -> np.ndarray:
    """Inverse-distance-weighted mean of neighbours' map positions.

    Args:
        indices: (B, k) catalog indices, nearest first.
        distances: (B, k) their distances (>= 0).
        embedding: (N, 2) map positions.
        power: p in ``w_i = 1 / d_i^p``.

    Returns:
        (B, 2) float64. A row with an exact match (d = 0) gets the mean position of its exact matches.

    The weights are computed as ``(d_min / d_i)^p``, equal to ``1/d_i^p`` after normalisation but
    free of overflow for tiny distances.
    """
    pos = np.asarray(embedding, dtype=np.float64)[indices]                 # (B, k, 2)
    d = np.asarray(distances, dtype=np.float64)
    exact = d == 0.0                                                       # (B, k)
    has_exact = exact.any(axis=1)
    dmin = d[:, :1]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(has_exact[:, None], exact.astype(np.float64), (dmin / d) ** power)  # (B, k)
    w = np.nan_to_num(w, nan=0.0, posinf=0.0)
    w[w.sum(axis=1) == 0.0] = 1.0  # only if every distance overflowed (|z| ~ 1e154): plain mean
    return np.einsum("bk,bkc->bc", w, pos) / w.sum(axis=1, keepdims=True)


def place_points(z: Any, catalog: Any, embedding: Any, k: int = 10, power: float = 1.0) -> np.ndarray:
    """Place queries on the map without umap: inverse-distance-weighted mean of their kNN positions.

    Args:
        z: (d,) or (B, d) finite queries in latent space.
        catalog: (N, d) catalog means the map was fitted on.
        embedding: (N, 2) their map positions.
        k: neighbours used (capped at N).
        power: p in ``w_i = 1 / ||z - mu_i||^p``.

    Returns:
        (2,) or (B, 2) float32 map positions. A query equal to a catalog mean gets that mean's position.
    """
    cat = np.asarray(catalog)
    emb = np.asarray(embedding)
    if cat.ndim != 2 or emb.shape != (cat.shape[0], 2):
        raise ValueError(f"catalog must be (N, d) and embedding (N, 2); got {cat.shape} and {emb.shape}")
    k = min(_check_int("k", k, 1), cat.shape[0])
    power = _check_float("power", power, 0.0)
    q, single = _as_queries(z, cat.shape[1])
    idx, dist = nearest_catalog(q, cat, k)
    out = weighted_positions(idx, dist, emb, power).astype(np.float32)
    return out[0] if single else out


# --------------------------------------------------------------------------- the estimator


class MapProjector:
    """A seeded UMAP map of catalog means plus fast, umap-free placement of new points.

    Follows scikit-learn's estimator contract: ``__init__`` stores parameters only, :meth:`fit`
    validates and returns ``self``, and fitted state ends in ``_``. Fitted arrays are read-only, so
    one fitted projector can be shared by every session of the app.

    Args:
        n_neighbors: UMAP's local neighbourhood size (umap-learn default 15).
        min_dist: UMAP's minimum spacing of map points (umap-learn default 0.1).
        seed: ``random_state`` for UMAP; a seeded fit is reproducible on one machine (single-threaded).
        n_epochs: UMAP's optimisation epochs; None lets umap-learn choose (200 for large N, 500 small).
        placement_k: neighbours averaged by :meth:`place`.
        placement_power: p in the inverse-distance weights ``1 / d^p`` of :meth:`place`.
        keep_umap: keep the fitted ``umap.UMAP`` as ``umap_`` (needed by :func:`placement_agreement`;
            it holds the kNN graph, so leave it off for the app).

    Fitted attributes:
        embedding_: (N, 2) float32 map positions, read-only.
        mu_: (N, d) float32 copy of the catalog means, read-only.
        n_features_in_: d.
        umap_version_: the umap-learn version that made the map.
        fit_seconds_: wall time of the UMAP fit (0.0 when loaded from disk).
        umap_: the ``umap.UMAP`` object, only with ``keep_umap=True`` after :meth:`fit`.
    """

    def __init__(
        self,
        n_neighbors: int = 15,
        min_dist: float = 0.1,
        seed: int = 0,
        n_epochs: int | None = None,
        placement_k: int = 10,
        placement_power: float = 1.0,
        keep_umap: bool = False,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.seed = seed
        self.n_epochs = n_epochs
        self.placement_k = placement_k
        self.placement_power = placement_power
        self.keep_umap = keep_umap

    # -- scikit-learn's parameter protocol (duck-typed, so sklearn.base.clone works without importing sklearn here)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters, by name."""
        return {
            "n_neighbors": self.n_neighbors,
            "min_dist": self.min_dist,
            "seed": self.seed,
            "n_epochs": self.n_epochs,
            "placement_k": self.placement_k,
            "placement_power": self.placement_power,
            "keep_umap": self.keep_umap,
        }

    def set_params(self, **params: Any) -> MapProjector:
        """Set constructor parameters; unknown names raise ValueError listing the valid ones."""
        valid = self.get_params()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"unknown parameter {name!r} for MapProjector; choose from: {', '.join(valid)}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = MapProjector().get_params()
        changed = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if v != defaults[k])
        return f"MapProjector({changed})"

    def embedding_params(self) -> dict[str, Any]:
        """The parameters that shape the embedding (those stored in a map file)."""
        return {name: getattr(self, name) for name in EMBEDDING_PARAMS}

    def _validate_params(self) -> None:
        _check_int("n_neighbors", self.n_neighbors, 2)
        _check_float("min_dist", self.min_dist, 0.0)
        _check_int("seed", self.seed, 0)
        if self.n_epochs is not None:
            _check_int("n_epochs", self.n_epochs, 1)
        _check_int("placement_k", self.placement_k, 1)
        _check_float("placement_power", self.placement_power, 0.0)

    # -- fitting

    def fit(self, mu: Any, y: Any = None, progress: ProgressFn | None = None) -> MapProjector:
        """Fit the UMAP map of ``mu``.

        Args:
            mu: (N, d) finite catalog means; copied as float32, never modified. N must exceed
                ``n_neighbors``.
            y: ignored (scikit-learn signature).
            progress: optional ``progress(stage, done, total)`` called at each of 3 stages (umap-learn
                itself only logs, so there is no finer progress than this).

        Returns:
            self, with ``embedding_`` (N, 2) float32.
        """
        self._validate_params()
        stages = 3
        if progress:
            progress("validating the catalog means", 0, stages)
        mu32 = _as_matrix(mu)
        if mu32.shape[0] <= self.n_neighbors:
            raise ValueError(f"mu has {mu32.shape[0]} rows; UMAP needs more rows than n_neighbors={self.n_neighbors}")
        if progress:
            progress("loading umap-learn (compiles on first use)", 1, stages)
        import umap  # lazy: slow to import and JIT-compile; the app never needs it

        model = umap.UMAP(
            n_components=2,
            n_neighbors=int(self.n_neighbors),
            min_dist=float(self.min_dist),
            metric="euclidean",  # place() is Euclidean too
            n_epochs=None if self.n_epochs is None else int(self.n_epochs),
            random_state=int(self.seed),
            transform_seed=int(self.seed),
        )
        if progress:
            progress(f"fitting UMAP on {mu32.shape[0]:,} means (neighbour graph, then layout)", 2, stages)
        started = time.perf_counter()
        with warnings.catch_warnings():
            # A seeded fit is single-threaded by design; umap warns about that on every call.
            warnings.filterwarnings("ignore", message=".*n_jobs.*overridden.*")
            embedding = model.fit_transform(mu32)
        seconds = time.perf_counter() - started
        self._set_state(mu32, np.asarray(embedding, dtype=np.float32), umap.__version__, seconds)
        if self.keep_umap:
            self.umap_ = model
        elif hasattr(self, "umap_"):
            del self.umap_
        if progress:
            progress(f"map ready ({seconds:.1f} s)", stages, stages)
        return self

    @classmethod
    def from_embedding(cls, mu: Any, embedding: Any, **params: Any) -> MapProjector:
        """A fitted projector from a precomputed map, without umap.

        Args:
            mu: (N, d) finite catalog means (copied).
            embedding: (N, 2) finite map positions of those means (copied as float32).
            **params: constructor parameters (their embedding parameters are recorded, not checked).
        """
        projector = cls(**params)
        projector._validate_params()
        mu32 = _as_matrix(mu)
        emb = np.asarray(embedding, dtype=np.float32)
        projector._set_state(mu32, emb, "precomputed", 0.0)
        return projector

    def _set_state(self, mu32: np.ndarray, embedding: np.ndarray, version: str, seconds: float) -> None:
        if embedding.shape != (mu32.shape[0], 2) or not np.isfinite(embedding).all():
            raise ValueError(f"embedding must be finite with shape ({mu32.shape[0]}, 2); got {embedding.shape}")
        mu32.flags.writeable = False
        embedding = np.array(embedding, dtype=np.float32, copy=True)
        embedding.flags.writeable = False
        mu64 = mu32.astype(np.float64)
        mu64_t = np.ascontiguousarray(mu64.T)
        sqnorm = np.einsum("nd,nd->n", mu64, mu64)
        for arr in (mu64, mu64_t, sqnorm):
            arr.flags.writeable = False
        self.mu_ = mu32
        self.embedding_ = embedding
        self._mu64_ = mu64
        self._mu64_t_ = mu64_t
        self._sqnorm_ = sqnorm
        self.n_features_in_ = int(mu32.shape[1])
        self.umap_version_ = str(version)
        self.fit_seconds_ = float(seconds)

    def _check_fitted(self) -> None:
        if not hasattr(self, "embedding_"):
            raise NotFittedError("this MapProjector is not fitted yet; call fit(mu) or load_map(...) first")

    # -- using the map

    def place(self, z: Any) -> np.ndarray:
        """Map positions of new points, without umap (see :func:`place_points` for the formula).

        Args:
            z: (d,) or (B, d) finite latent vectors.

        Returns:
            (2,) or (B, 2) float32. Takes about a millisecond per query at N = 70,000, d = 10.
        """
        self._check_fitted()
        k = min(_check_int("placement_k", self.placement_k, 1), self.mu_.shape[0])
        power = _check_float("placement_power", self.placement_power, 0.0)
        q, single = _as_queries(z, self.n_features_in_)
        idx, dist = nearest_catalog(q, self._mu64_, k, catalog_sqnorm=self._sqnorm_, catalog_t=self._mu64_t_)
        out = weighted_positions(idx, dist, self.embedding_, power).astype(np.float32)
        return out[0] if single else out

    def bounds(self) -> tuple[float, float, float, float]:
        """``(x_min, x_max, y_min, y_max)`` of the map, for fixed plot axes."""
        self._check_fitted()
        lo, hi = self.embedding_.min(axis=0), self.embedding_.max(axis=0)
        return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])

    def extent(self) -> float:
        """The diagonal of the map's bounding box, in map units (the scale for relative distances)."""
        x0, x1, y0, y1 = self.bounds()
        return float(math.hypot(x1 - x0, y1 - y0))


def clone_params(projector: MapProjector, **changes: Any) -> MapProjector:
    """An unfitted copy of ``projector``'s parameters, with ``changes`` applied."""
    return MapProjector(**{**projector.get_params(), **changes})


# --------------------------------------------------------------------------- disk cache


@dataclass(frozen=True)
class MapLoad:
    """What happened when a map was looked for on disk.

    Attributes:
        status: ``"loaded"`` (a valid file was used), ``"missing"``, ``"stale"`` (readable but made for
            another key, catalog shape or parameters), ``"corrupt"`` (unreadable or malformed), or
            ``"fitted"`` (from :func:`load_or_fit`: no usable file, so the map was fitted afresh).
        reason: one human-readable sentence saying why.
        path: the file concerned (for ``"fitted"``, where the new map was saved, if it was).
        projector: the fitted projector, or None when nothing usable was found.
    """

    status: str
    reason: str
    path: Path | None
    projector: MapProjector | None = None

    @property
    def ok(self) -> bool:
        return self.projector is not None


def _str_array(text: str) -> np.ndarray:
    return np.array(str(text), dtype=np.str_)  # a 0-d unicode array: loadable without pickle


def save_map(projector: MapProjector, path: str | os.PathLike[str], key: str) -> Path:
    """Write a fitted map to ``path`` (.npz) atomically (:func:`latent.io.atomic_writer`), so readers
    never see a partial file.

    The file holds ``embedding`` (N, 2) float32, ``key`` (the caller's content key, e.g. hashes of the
    checkpoint and the data), ``params`` (JSON of :data:`EMBEDDING_PARAMS`), ``n_features`` (d),
    ``umap_version``, ``format`` and ``version``. The catalog means are not stored: the caller's key
    stands for them, and :func:`load_map` takes them from the catalog.
    """
    projector._check_fitted()
    if not isinstance(key, str) or not key:
        raise ValueError(f"key must be a non-empty string (e.g. hashes of the checkpoint and data); got {key!r}")
    path = Path(path)
    with atomic_writer(path) as out:
        np.savez(
            out,
            format=_str_array(MAP_FORMAT),
            version=np.int64(MAP_FORMAT_VERSION),
            key=_str_array(key),
            params=_str_array(json.dumps(projector.embedding_params(), sort_keys=True)),
            n_features=np.int64(projector.n_features_in_),
            umap_version=_str_array(projector.umap_version_),
            embedding=np.asarray(projector.embedding_, dtype=np.float32),
        )
    return path


def _short(text: str, n: int = 16) -> str:
    return text if len(text) <= n else text[:n] + "…"


def load_map(
    path: str | os.PathLike[str],
    mu: Any,
    key: str,
    *,
    like: MapProjector | None = None,
) -> MapLoad:
    """Load a map saved by :func:`save_map`, refusing files that do not fit. Never raises on a bad file.

    Args:
        path: the .npz file.
        mu: (N, d) catalog means the map must describe (kept, as a read-only float32 copy, for placement).
        key: the content key the file must carry.
        like: parameters the map must have been made with (its :data:`EMBEDDING_PARAMS` are compared;
            its placement parameters are used). None accepts the file's parameters with default placement.

    Returns:
        :class:`MapLoad` with status ``loaded``, ``missing``, ``stale`` or ``corrupt`` and a reason.
        ``np.load`` runs with ``allow_pickle=False``.

    Raises:
        ValueError: only for bad arguments (``mu`` not a finite (N, d) array), never for a bad file.
    """
    path = Path(path)
    mu32 = _as_matrix(mu)
    if not path.is_file():
        return MapLoad("missing", f"{path} does not exist", path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            needed = {"format", "version", "key", "params", "n_features", "umap_version", "embedding"}
            if not needed <= names:
                return MapLoad("corrupt", f"{path} lacks {', '.join(sorted(needed - names))}", path)
            fmt = str(npz["format"][()])
            version = int(npz["version"][()])
            file_key = str(npz["key"][()])
            params = json.loads(str(npz["params"][()]))
            n_features = int(npz["n_features"][()])
            umap_version = str(npz["umap_version"][()])
            embedding = npz["embedding"]
    except Exception as exc:  # any unreadable file is reported, never raised
        return MapLoad("corrupt", f"{path} cannot be read as a map file ({type(exc).__name__}: {exc})", path)
    if fmt != MAP_FORMAT or version != MAP_FORMAT_VERSION:
        wanted = f"{MAP_FORMAT!r} v{MAP_FORMAT_VERSION}"
        return MapLoad("stale", f"{path} is format {fmt!r} v{version}; this code reads {wanted}", path)
    if file_key != key:
        return MapLoad("stale", f"{path} was made for key {_short(file_key)}, not {_short(key)}", path)
    if not isinstance(params, dict):
        return MapLoad("corrupt", f"{path} has malformed parameters {params!r}", path)
    if n_features != mu32.shape[1] or embedding.shape != (mu32.shape[0], 2):
        return MapLoad(
            "stale",
            f"{path} holds a map of {embedding.shape[0]} points from d={n_features}; "
            f"the catalog has {mu32.shape[0]} points with d={mu32.shape[1]}",
            path,
        )
    if embedding.dtype.kind != "f" or not np.isfinite(embedding).all():
        return MapLoad("corrupt", f"{path} holds a non-finite or non-float embedding ({embedding.dtype})", path)
    if like is not None:
        wanted_params = like.embedding_params()
        if any(params.get(name) != value for name, value in wanted_params.items()):
            return MapLoad("stale", f"{path} was made with {params}, not {wanted_params}", path)
        projector = clone_params(like)
    else:
        known = {name: params[name] for name in EMBEDDING_PARAMS if name in params}
        try:
            projector = MapProjector(**known)
            projector._validate_params()
        except (TypeError, ValueError) as exc:
            return MapLoad("corrupt", f"{path} has invalid parameters ({exc})", path)
    projector._set_state(mu32, embedding.astype(np.float32, copy=False), umap_version, 0.0)
    return MapLoad("loaded", f"loaded {path}", path, projector)


def load_or_fit(
    mu: Any,
    key: str,
    path: str | os.PathLike[str] | None,
    *,
    like: MapProjector | None = None,
    also_try: Iterable[str | os.PathLike[str]] = (),
    progress: ProgressFn | None = None,
) -> MapLoad:
    """The map for ``mu`` and ``key``: the first valid file among ``also_try`` then ``path``, else a
    fresh fit saved to ``path``. Never raises on bad files; an unwritable ``path`` is reported, not raised.

    Typical use: ``also_try=[paths.MODELS_DIR / "umap.npz"]`` (the shipped map, read-only) and
    ``path = Settings.from_env().cache_dir / "umap.npz"``.

    Args:
        mu: (N, d) catalog means.
        key: content key the file must carry (e.g. hashes of the checkpoint and data).
        path: where a fresh fit is saved (and looked for); None to not save.
        like: parameters for the map (default: ``MapProjector()``).
        also_try: files tried first, never written.
        progress: passed to :meth:`MapProjector.fit` if a fit is needed.

    Returns:
        :class:`MapLoad`; ``status`` is ``"loaded"`` or ``"fitted"`` and ``projector`` is set. The
        reason of a fit says why each file was refused.
    """
    like = like if like is not None else MapProjector()
    candidates: list[Path] = [Path(p) for p in also_try] + ([Path(path)] if path is not None else [])
    refusals: list[str] = []
    for candidate in candidates:
        result = load_map(candidate, mu, key, like=like)
        if result.ok:
            return result
        refusals.append(f"{result.status}: {result.reason}")
    projector = clone_params(like).fit(mu, progress=progress)
    why = "; ".join(refusals) if refusals else "no map file given"
    saved: Path | None = None
    note = "not saved"
    if path is not None:
        try:
            saved = save_map(projector, path, key)
            note = f"saved to {saved}"
        except OSError as exc:
            note = f"could not be saved to {path} ({exc.strerror or exc})"
    return MapLoad("fitted", f"fitted afresh in {projector.fit_seconds_:.1f} s ({why}); {note}", saved, projector)


# --------------------------------------------------------------------------- agreement with umap's transform


def _majority(labels: np.ndarray) -> np.ndarray:
    """Row-wise most frequent label of (M, m) non-negative ints; ties go to the smaller label."""
    n_classes = int(labels.max()) + 1 if labels.size else 1
    counts = np.zeros((labels.shape[0], n_classes), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(labels.shape[0]), labels.shape[1]), labels.ravel()), 1)
    return counts.argmax(axis=1)


def placement_agreement(
    projector: MapProjector,
    mu_heldout: Any,
    *,
    labels_train: Any = None,
    labels_heldout: Any = None,
    map_neighbors: int = 10,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """How closely :meth:`MapProjector.place` agrees with umap-learn's own ``transform`` on held-out points.

    Args:
        projector: fitted with ``keep_umap=True``.
        mu_heldout: (M, d) points not in the fit.
        labels_train: optional (N,) int class labels of the fitted points.
        labels_heldout: optional (M,) int class labels of ``mu_heldout``.
        map_neighbors: m, the map neighbourhood used by the neighbourhood and class measures.
        progress: optional ``progress(stage, done, total)``.

    Returns:
        A JSON-ready dict, with P = placement and T = transform, both (M, 2):

        - ``extent``: diagonal of the map's bounding box (map units);
        - ``median_offset``, ``p90_offset``: median / 90th percentile of ``||P_i - T_i||`` (map units),
          and ``median_offset_rel``, ``p90_offset_rel``: the same divided by ``extent``;
        - ``within_transform_radius``: fraction of i with ``||P_i - T_i|| <= r_i``, where ``r_i`` is the
          distance from T_i to its m-th nearest fitted map point;
        - ``map_neighbour_overlap``: mean over i of ``|NN_m(P_i) & NN_m(T_i)| / m``, NN_m over fitted map points;
        - with labels: ``class_agreement`` (the majority class among NN_m(P_i) equals that of NN_m(T_i)),
          ``class_accuracy_placement`` and ``class_accuracy_transform`` (that majority equals the true label);
        - timings ``transform_s``, ``placement_s``, ``placement_ms_per_query`` and the parameters used.
    """
    projector._check_fitted()
    model = getattr(projector, "umap_", None)
    if model is None:
        raise ValueError("placement_agreement needs a projector fitted with keep_umap=True (it calls umap's transform)")
    held = _as_matrix(mu_heldout, "mu_heldout")
    if held.shape[1] != projector.n_features_in_:
        raise ValueError(f"mu_heldout has d={held.shape[1]}; the map was fitted with d={projector.n_features_in_}")
    n_train = projector.mu_.shape[0]
    m = min(_check_int("map_neighbors", map_neighbors, 1), n_train)
    with_labels = labels_train is not None and labels_heldout is not None
    if with_labels:
        lt = np.asarray(labels_train)
        lh = np.asarray(labels_heldout)
        if lt.shape != (n_train,) or lh.shape != (held.shape[0],):
            raise ValueError(
                f"labels must have shapes ({n_train},) and ({held.shape[0]},); got {lt.shape} and {lh.shape}"
            )
        if lt.dtype.kind not in "iu" or lh.dtype.kind not in "iu" or (lt.min() < 0) or (lh.min() < 0):
            raise ValueError("labels must be non-negative integers")
    stages = 3
    if progress:
        progress(f"umap transform of {held.shape[0]:,} held-out points", 0, stages)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs.*overridden.*")
        transformed = np.asarray(model.transform(held), dtype=np.float64)          # (M, 2)
    transform_s = time.perf_counter() - started
    if progress:
        progress("placement by weighted nearest means", 1, stages)
    started = time.perf_counter()
    placed = projector.place(held).astype(np.float64)                             # (M, 2)
    placement_s = time.perf_counter() - started
    if progress:
        progress("comparing", 2, stages)
    from scipy.spatial import cKDTree

    tree = cKDTree(np.asarray(projector.embedding_, dtype=np.float64))
    dist_t, nn_t = tree.query(transformed, k=m)
    _dist_p, nn_p = tree.query(placed, k=m)
    nn_t = np.asarray(nn_t).reshape(len(held), m)
    nn_p = np.asarray(nn_p).reshape(len(held), m)
    radius = np.asarray(dist_t).reshape(len(held), m)[:, -1]
    offset = np.linalg.norm(placed - transformed, axis=1)
    extent = projector.extent()
    overlap = np.mean([len(np.intersect1d(a, b, assume_unique=True)) / m for a, b in zip(nn_p, nn_t, strict=True)])
    result: dict[str, Any] = {
        "n_train": int(n_train),
        "n_heldout": int(held.shape[0]),
        "placement_k": int(projector.placement_k),
        "placement_power": float(projector.placement_power),
        "map_neighbors": int(m),
        **{f"umap_{k}": v for k, v in projector.embedding_params().items()},
        "extent": extent,
        "median_offset": float(np.median(offset)),
        "p90_offset": float(np.percentile(offset, 90)),
        "median_offset_rel": float(np.median(offset) / extent) if extent > 0 else math.nan,
        "p90_offset_rel": float(np.percentile(offset, 90) / extent) if extent > 0 else math.nan,
        "within_transform_radius": float(np.mean(offset <= radius)),
        "map_neighbour_overlap": float(overlap),
        "transform_s": float(transform_s),
        "placement_s": float(placement_s),
        "placement_ms_per_query": float(1000.0 * placement_s / held.shape[0]),
    }
    if with_labels:
        cls_p = _majority(lt[nn_p].astype(np.int64))
        cls_t = _majority(lt[nn_t].astype(np.int64))
        result["class_agreement"] = float(np.mean(cls_p == cls_t))
        result["class_accuracy_placement"] = float(np.mean(cls_p == lh))
        result["class_accuracy_transform"] = float(np.mean(cls_t == lh))
    if progress:
        progress("done", stages, stages)
    return result


def measure_placement_agreement(
    mu_train: Any,
    mu_heldout: Any,
    *,
    labels_train: Any = None,
    labels_heldout: Any = None,
    like: MapProjector | None = None,
    map_neighbors: int = 10,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Fit a map on ``mu_train`` (N, d) and report :func:`placement_agreement` on ``mu_heldout`` (M, d).

    For the README: e.g. ``mu_train = catalog.mu[~is_test]``, ``mu_heldout = catalog.mu[is_test]``.
    The result also holds ``fit_s``, the UMAP fit time. Slow (a full UMAP fit plus a cold ``transform``).
    """
    projector = clone_params(like if like is not None else MapProjector(), keep_umap=True)
    projector.fit(mu_train, progress=progress)
    result = placement_agreement(
        projector, mu_heldout, labels_train=labels_train, labels_heldout=labels_heldout,
        map_neighbors=map_neighbors, progress=progress,
    )
    result["fit_s"] = float(projector.fit_seconds_)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m latent.projection MU.npy [--labels L.npy] [--heldout-mask M.npy | --n-heldout N]``:
    print :func:`measure_placement_agreement` as JSON. Arrays are read with ``allow_pickle=False``.
    """
    import argparse

    summary = (main.__doc__ or "").partition("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m latent.projection", description=summary)
    parser.add_argument("mu", help=".npy file of (N, d) encoded means")
    parser.add_argument("--labels", default=None, help=".npy file of (N,) class labels (adds class agreement)")
    parser.add_argument("--heldout-mask", default=None, help=".npy (N,) bool, True for held-out rows "
                        "(e.g. the test split); default: a seeded random --n-heldout rows")
    parser.add_argument("--n-heldout", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-neighbors", type=int, default=15)
    parser.add_argument("--min-dist", type=float, default=0.1)
    parser.add_argument("--placement-k", type=int, default=10)
    parser.add_argument("--placement-power", type=float, default=1.0)
    parser.add_argument("--json", default=None, help="also write the result to this file")
    args = parser.parse_args(argv)

    mu = np.load(args.mu, allow_pickle=False)
    labels = np.load(args.labels, allow_pickle=False) if args.labels else None
    if args.heldout_mask:
        mask = np.load(args.heldout_mask, allow_pickle=False).astype(bool)
    else:
        rng = np.random.default_rng(args.seed)
        mask = np.zeros(len(mu), dtype=bool)
        mask[rng.choice(len(mu), size=min(args.n_heldout, len(mu) - 1), replace=False)] = True
    like = MapProjector(n_neighbors=args.n_neighbors, min_dist=args.min_dist, seed=args.seed,
                        placement_k=args.placement_k, placement_power=args.placement_power)

    def progress(label: str, done: int, total: int | None) -> None:
        print(f"[{done}/{total}] {label}", flush=True)

    result = measure_placement_agreement(
        mu[~mask], mu[mask],
        labels_train=None if labels is None else labels[~mask],
        labels_heldout=None if labels is None else labels[mask],
        like=like, progress=progress,
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        write_text_atomic(args.json, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
