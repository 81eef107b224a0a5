r"""The search index: exact top-k search of the catalog under any score of :mod:`latent.scores`.

See docs/search.md for the feature maps, the float32 error bound and certificate, the widening, the
int16 codes of the "fused" backend and the argument that the results are exact.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from latent.scores import SCORES, Score, check_catalog, check_query, check_spread, default_spread, get_score
from latent.search import _query, _tiles
from latent.search._features import Catalog, Prepared, build, private

#: Search backends by name: "auto" (default: "fused" from FUSED_MIN_ITEMS items, else "blas"), "fused"
#: (a compiled scan over int16 codes of the features) and "blas" (one float32 matrix-vector product
#: through BLAS, then a compiled selection through group maxima).
BACKENDS: tuple[str, ...] = ("auto", "fused", "blas")

#: From this catalog size "auto" picks "fused": it reads half the bytes, which pays once the features no
#: longer fit in the CPU's caches (bench/results/search.md measures both).
FUSED_MIN_ITEMS = 200_000

#: Feature sets kept beyond those pinned by fit's default spread and :meth:`SearchIndex.prepare`.
SPREAD_CACHE_SIZE = 8

#: A callback for progress: ``progress(done, total, message)``.
Progress = Callable[[int, int, str], None]


class NotFittedError(ValueError, AttributeError):
    """The index is used before :meth:`SearchIndex.fit` (same bases as scikit-learn's)."""


def _exact_top_k(values: np.ndarray, k: int, higher_is_nearer: bool) -> np.ndarray:
    """Indices of the k nearest of the float64 values (N,), nearest first, ties by lower index."""
    nearness = -values if higher_is_nearer else values  # lower = nearer
    n = values.shape[0]
    if k >= n:
        return np.lexsort((np.arange(n), nearness))
    kth = np.partition(nearness, k - 1)[k - 1]
    ids = np.flatnonzero(nearness <= kth)  # every item as near as the k-th, ties included
    return ids[np.lexsort((ids, nearness[ids]))][:k]


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative integer (0 gives empty results, k > N gives all N); got {k!r}")
    return int(k)


def _auto_group_size(n: int) -> int:
    """The power of two nearest sqrt(n)/2, clipped to [16, 1024]: 128 for 70,000 items, 512 for 1,000,000."""
    return int(2 ** min(10, max(4, round(math.log2(max(math.sqrt(n) / 2.0, 1.0))))))


class SearchIndex:
    """Exact top-k search over a catalog of diagonal Gaussians, for every score in ``latent.scores.SCORES``.

    scikit-learn's estimator contract: ``__init__`` stores parameters only, :meth:`fit` validates and
    copies the catalog and returns ``self``, and fitted state ends in ``_``. Results are exact: the
    top k, with their float64 values, are what sorting ``SCORES[name].fn(z, mu, sigma, s)`` over the
    whole catalog gives, nearest first, ties broken by the lower item index.

    Each score's features are built the first time it is searched at a spread; :meth:`prepare` builds
    them ahead for given spreads (with progress), so that no query waits for them. Per item, one score
    at one spread takes 4 m + 4 n_seg bytes (float32 features and their norms), plus 2 m with the
    "fused" backend and 8 d for the scores whose rescoring reads a logarithm (likelihood, kl,
    kl_reverse, bhattacharyya); m = 2d + 1 (d + 1 for euclidean, kl_reverse and wasserstein2),
    n_seg = 3 (2). One more spread, for the five scores that use it, is about (60 d + 64) N bytes with
    "fused" and (48 d + 56) N with "blas" (d = 10, N = 1,000,000: 664 MB and 536 MB).

    Args:
        backend: "auto" (default): "fused" for catalogs of at least :data:`FUSED_MIN_ITEMS` items, else
            "blas"; or one of them explicitly. Both give identical, exact results.
        group_size: items per group in the "blas" selection (item i is in group i mod (N_pad /
            group_size), N_pad = N rounded up to a multiple of it). None (default): the power of two
            nearest sqrt(N)/2 within [16, 1024].

    Fitted attributes:
        mu_, sigma_: float64 (N, d) read-only copies of the catalog.
        n_items_, dim_: N and d.
        group_size_: the group size in use.
        backend_: the backend in use ("fused" or "blas").
        center_: (d,) the catalog mean of mu, the origin of the feature maps.
        default_spread_: (d,) the spread used when ``s`` is None: ``latent.scores.default_spread``.

    Thread safety: after ``fit`` the index is only read, except for its lock-protected feature cache,
    so one fitted index can serve many threads. The library never changes BLAS's or numba's thread
    counts; callers (the benchmark) may.
    """

    def __init__(self, backend: str = "auto", group_size: int | None = None) -> None:
        self.backend = backend
        self.group_size = group_size

    # -- fitting -----------------------------------------------------------------------------------

    def fit(self, mu: ArrayLike, sigma: ArrayLike) -> SearchIndex:
        """Validate the catalog, mu and sigma of shape (N, d), and keep float64 copies; return self."""
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of: {', '.join(BACKENDS)}")
        size = self.group_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1):
            raise ValueError(f"group_size must be a positive integer or None (automatic); got {size!r}")
        mu_array, sigma_array = check_catalog(mu, sigma)
        _query.refresh_cache()
        self.mu_ = private(mu_array)
        self.sigma_ = private(sigma_array)
        n, d = self.mu_.shape
        self.n_items_, self.dim_ = n, d
        self.group_size_ = _auto_group_size(n) if size is None else int(size)
        self.backend_ = ("fused" if n >= FUSED_MIN_ITEMS else "blas") if self.backend == "auto" else self.backend
        self.center_ = self.mu_.mean(axis=0)
        self.default_spread_ = default_spread(self.sigma_)
        self._catalog_ = Catalog(
            centered_mu=self.mu_ - self.center_, sigma=self.sigma_, log_sigma=np.log(self.sigma_),
            mu_sigma=np.stack([self.mu_, self.sigma_], axis=1), center=private(self.center_),
            group_size=self.group_size_, fused=self.backend_ == "fused",
        )
        for array in (self.mu_, self.sigma_, self.center_, self.default_spread_):
            array.flags.writeable = False
        self._pinned_: dict[tuple[str, bytes | None], Prepared] = {}
        self._recent_: OrderedDict[tuple[str, bytes | None], Prepared] = OrderedDict()
        self._lock_ = threading.RLock()  # held while building, so that each set is built once
        self._scratch_ = threading.local()  # per-thread key buffers
        return self

    def prepare(
        self, spreads: Iterable[ArrayLike | float | None] = (None,), progress: Progress | None = None
    ) -> SearchIndex:
        """Build every score's features for each spread in ``spreads`` (None: the default spread) and keep
        them for the index's lifetime; return self. ``progress(done, total, message)`` is called before
        each of the ``total`` builds and once at the end (done = total).

        Scores that do not use a spread are built once. A spread is any value ``search`` accepts as ``s``.
        At the end one query is run, so that numba's compiled kernels are loaded (from its disk cache,
        see :func:`warm_up`) here rather than in the first user query.
        """
        self._check_fitted()
        unique: dict[bytes, np.ndarray] = {}
        for s in spreads:
            spread_d = self._spread_d(self._spread(s))
            unique.setdefault(spread_d.tobytes(), spread_d)
        jobs: list[tuple[str, np.ndarray | None]] = [(n, None) for n, score in SCORES.items() if not score.needs_spread]
        jobs += [(n, spread_d) for spread_d in unique.values() for n, score in SCORES.items() if score.needs_spread]
        for done, (name, job_spread) in enumerate(jobs):
            if progress is not None:
                where = "" if job_spread is None else f" at spread {_describe(job_spread)}"
                progress(done, len(jobs), f"preparing the {name} features{where}")
            self._prepared(SCORES[name], self.default_spread_ if job_spread is None else job_spread, pin=True)
        if self.n_items_ > 1:
            self.search(self.center_, "likelihood", 1)  # loads the compiled query kernels
        if progress is not None:
            progress(len(jobs), len(jobs), "search features ready")
        return self

    def is_prepared(self, s: ArrayLike | float | None = None) -> bool:
        """True when the features of every score at spread ``s`` are built and kept, so that no query at s
        waits for a build. ``s`` as :meth:`search` accepts it (None: the default spread).

        Kept means built by :meth:`prepare`, or by a query: the default spread's for the index's lifetime,
        another spread's while it is among the :data:`SPREAD_CACHE_SIZE` most recent. Builds nothing.
        """
        self._check_fitted()
        spread = self._spread(s)
        spread_id = None if spread is self.default_spread_ else self._spread_id(spread)[0]
        for score in SCORES.values():
            key = (score.name, spread_id if score.needs_spread else None)
            if key not in self._pinned_ and key not in self._recent_:
                return False
        return True

    def _check_fitted(self) -> None:
        if not hasattr(self, "_catalog_"):
            raise NotFittedError("this SearchIndex is not fitted yet; call fit(mu, sigma) first")

    def _spread(self, s: ArrayLike | float | None) -> np.ndarray:
        """The spread as float64 of shape () or (d,): the default when None, checked when given."""
        return self.default_spread_ if s is None else check_spread(s, self.dim_)

    def _spread_d(self, spread: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.broadcast_to(spread, (self.dim_,)), dtype=np.float64)

    def _spread_id(self, spread: np.ndarray) -> tuple[bytes | None, np.ndarray]:
        """The feature cache's key for a spread (() or (d,)): None where it equals the default spread,
        else its bytes as (d,) float64; and the spread as (d,) float64."""
        spread_d = self._spread_d(spread)
        return (None if np.array_equal(spread_d, self.default_spread_) else spread_d.tobytes()), spread_d

    def _prepared(self, score: Score, spread: np.ndarray, pin: bool = False) -> Prepared:
        """The prepared features of ``score`` at the spread (() or (d,)), built on first use."""
        if spread is self.default_spread_ or not score.needs_spread:
            key: tuple[str, bytes | None] = (score.name, None)  # the default spread: no conversion
        else:
            spread_id, spread = self._spread_id(spread)
            key = (score.name, spread_id)
        prepared = self._pinned_.get(key)
        if prepared is not None:
            return prepared
        with self._lock_:
            prepared = self._pinned_.get(key) or self._recent_.get(key)
            spread_d = self.default_spread_ if key[1] is None else spread
            if prepared is None:
                shared = None
                if score.features_from != score.name:  # kl reads likelihood's features
                    shared = self._prepared(SCORES[score.features_from], self.default_spread_, pin=True)
                prepared = build(score, spread_d, self._catalog_, shared)
            if pin or key[1] is None:
                self._recent_.pop(key, None)
                self._pinned_[key] = prepared
            else:
                self._recent_[key] = prepared
                self._recent_.move_to_end(key)
                while len(self._recent_) > SPREAD_CACHE_SIZE:
                    self._recent_.popitem(last=False)
            return prepared

    # -- public queries ----------------------------------------------------------------------------

    def scores_all(self, z: ArrayLike, score: str = "likelihood", s: ArrayLike | float | None = None) -> np.ndarray:
        """Every item's score for one query z (d,), float64 (N,), natural units; identical to
        ``SCORES[score].fn(z, mu_, sigma_, s)`` with the catalog's default spread when s is None."""
        self._check_fitted()
        record = get_score(score)
        z_array = check_query(z, self.dim_)
        return record.kernel(z_array, self.mu_, self.sigma_, self._spread(s))

    def search(
        self, z: ArrayLike, score: str = "likelihood", k: int = 10, s: ArrayLike | float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest items to one query z (d,) under ``score``.

        Returns ``(indices, scores)``: int64 (k',) and float64 (k',) with k' = min(k, N), nearest first,
        ties broken by the lower index, scores in natural units (exactly ``SCORES[score].fn``'s values).
        ``s`` is the query spread (a positive scalar or (d,); None: ``default_spread_``), ignored by
        scores that do not need one but checked when given.
        """
        self._check_fitted()
        record = get_score(score)
        k = min(_check_k(k), self.n_items_)
        z_array = private(check_query(z, self.dim_))  # one array type for the kernels
        spread = self._spread(s)
        if k == 0:
            return np.empty(0, np.int64), np.empty(0)
        if k == self.n_items_:
            return self._brute_force(z_array, record, k, spread)
        prepared = self._prepared(record, spread)
        if prepared.groups is None:  # psi does not fit in float32
            return self._brute_force(z_array, record, k, spread)
        if not prepared.compiled_rescore:
            return self._search_numpy_rescoring(z_array, record, k, spread, prepared)
        if prepared.codes is not None and k + prepared.codes.extra_tiles < prepared.codes.tiles.shape[0]:
            return self._search_fused(z_array, record, k, spread, prepared)
        return self._search_blas(z_array, record, k, spread, prepared)

    def feature_matrix(self, score: str, s: ArrayLike | float | None = None) -> np.ndarray | None:
        """The contiguous float32 matrix (m, N_pad) that one "blas" query of ``score`` reads (the
        benchmark's memory floor); None where float64 brute force answers (psi too large for float32)."""
        self._check_fitted()
        groups = self._prepared(get_score(score), self._spread(s)).groups
        return None if groups is None else groups.features

    # -- the search itself -------------------------------------------------------------------------

    def _keys_buffer(self, n_pad: int) -> np.ndarray:
        """This thread's float32 buffer (n_pad,) for one query's keys, reused from query to query: a
        fresh array per query costs a page-fault round whenever the allocator has returned it."""
        buffer = getattr(self._scratch_, "keys", None)
        if buffer is None or buffer.shape[0] != n_pad:
            buffer = self._scratch_.keys = np.empty(n_pad, dtype=np.float32)
        return buffer

    def _search_blas(
        self, z: np.ndarray, score: Score, k: int, spread: np.ndarray, prepared: Prepared
    ) -> tuple[np.ndarray, np.ndarray]:
        groups = prepared.groups
        assert groups is not None  # else search() answers by brute force
        keys = self._keys_buffer(groups.features.shape[1])
        ids, values, candidates, phi32, norms, underflow, threshold, status = _query.blas_query(
            keys, z, k, prepared.plan, groups
        )
        if status == _query.OK:
            return ids, values
        if status == _query.UNSAFE:
            return self._brute_force(z, score, k, spread)
        return self._widen(prepared, keys, phi32, norms, underflow, candidates, threshold, z, score, spread, k)

    def _search_fused(
        self, z: np.ndarray, score: Score, k: int, spread: np.ndarray, prepared: Prepared
    ) -> tuple[np.ndarray, np.ndarray]:
        """Compiled before and after the tile scan, which is called from Python (latent.search._tiles)."""
        codes = prepared.codes
        assert codes is not None  # search() picks this path only with codes
        phi, phi32, phi_codes, const, magnitude, norms, underflow, safe = _query.fused_start(z, prepared.plan, codes)
        if not safe:
            return self._brute_force(z, score, k, spread)
        heap_maxima, heap_tiles = _tiles.scan(
            codes.tiles, phi_codes, codes.n_items, k + codes.extra_tiles, _tiles.n_parts(codes.tiles, codes.n_items)
        )
        ids, values, candidates, threshold, status = _query.fused_finish(
            z, k, phi, phi_codes, const, magnitude, heap_maxima, heap_tiles, prepared.plan, codes
        )
        if status == _query.OK:
            return ids, values
        return self._widen(prepared, None, phi32, norms, underflow, candidates, threshold, z, score, spread, k)

    def _search_numpy_rescoring(
        self, z: np.ndarray, score: Score, k: int, spread: np.ndarray, prepared: Prepared
    ) -> tuple[np.ndarray, np.ndarray]:
        """The search where the compiled rescoring does not reproduce numpy's kernel (d > 128, or a numpy
        that sums differently): compiled candidates, then numpy's kernel and the certificate here."""
        plan = prepared.plan
        phi, const, magnitude, norms, safe, underflow, max_error = _query.start(z, plan)
        if not safe:
            return self._brute_force(z, score, k, spread)
        phi32 = phi.astype(np.float32)
        groups = prepared.groups
        assert groups is not None  # else search() answers by brute force
        keys = self._keys_buffer(groups.features.shape[1])
        candidates, kappa = _query.blas_candidates(keys, phi32, k, groups)
        values = self._rescore(z, score, spread, prepared, candidates)
        order = np.lexsort((candidates, -values if score.higher_is_nearer else values))[:k]
        ids, values = candidates[order], values[order]
        threshold = _query.key_threshold(
            plan.squared, plan.higher_is_nearer, float(values[-1]), const, magnitude, plan.slack
        )
        if kappa + max_error < threshold:
            return ids, values
        return self._widen(prepared, keys, phi32, norms, underflow, candidates, threshold, z, score, spread, k)

    @staticmethod
    def _rescore(z: np.ndarray, score: Score, spread: np.ndarray, prepared: Prepared, ids: np.ndarray) -> np.ndarray:
        """Float64 values of the items ids (M,) by numpy's kernel: exactly ``fn``'s."""
        plan = prepared.plan
        rows = plan.mu_sigma[ids]  # (M, 2, d)
        terms = plan.terms[ids] if plan.has_terms else None
        return score.kernel(z, rows[:, 0], rows[:, 1], spread, terms)

    def _brute_force(
        self, z: np.ndarray, score: Score, k: int, spread: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Float64 brute force: exact by definition, used where float32 cannot help."""
        values = score.kernel(z, self.mu_, self.sigma_, spread)  # (N,)
        ids = _exact_top_k(values, k, score.higher_is_nearer)
        return ids, values[ids]

    def _widen(
        self,
        prepared: Prepared,
        keys: np.ndarray | None,
        phi32: np.ndarray,
        query_norms: np.ndarray,
        underflow: float,
        candidates: np.ndarray,
        threshold: float,
        z: np.ndarray,
        score: Score,
        spread: np.ndarray,
        k: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top k of one query when its first candidates could not be certified: every item whose
        float32 key (N_pad,) plus its own error bound reaches the threshold (found through the per-group
        bounds first) is rescored with the candidates (docs/search.md, "Widening")."""
        groups, item_norms, group_norms = prepared.groups, prepared.item_norms, prepared.group_norms
        assert groups is not None and item_norms is not None and group_norms is not None  # else brute force
        features = groups.features
        if keys is None:  # the fused scan keeps no keys
            keys = phi32 @ features  # (N_pad,)
        plan = prepared.plan
        size = groups.group_size
        grid = keys.reshape(size, -1)  # (size, n_groups): group g is column g
        group_error = plan.error_factor * (group_norms @ query_norms) + underflow  # (n_groups,)
        open_groups = np.flatnonzero(grid.max(axis=0).astype(np.float64) + group_error >= threshold)
        ids = (np.arange(size)[:, None] * grid.shape[1] + open_groups).reshape(-1)
        ids = ids[ids < self.n_items_]
        item_error = plan.error_factor * (item_norms[ids] @ query_norms) * (1.0 + 1e-5) + underflow
        reach = keys[ids].astype(np.float64) + item_error
        keep = np.union1d(ids[reach >= threshold], candidates)
        values = self._rescore(z, score, spread, prepared, keep)
        order = np.lexsort((keep, -values if score.higher_is_nearer else values))[:k]
        return keep[order], values[order]


def _describe(spread_d: np.ndarray) -> str:
    """A short text for a spread (d,): its value if all equal, else its range."""
    low, high = float(spread_d.min()), float(spread_d.max())
    return f"{low:g}" if low == high else f"{low:.3g}..{high:.3g}"


def warm_up(progress: Progress | None = None) -> None:
    """Compile every numba kernel that the search can call, with the argument types it uses, on a tiny
    catalog; numba keeps them on disk (``cache=True``), so that later processes load them instead of
    compiling inside a user's first query. Run once per machine (scripts/setup.sh); a second run only
    loads. ``progress(done, total, message)`` as in :meth:`SearchIndex.prepare`.
    """
    rng = np.random.default_rng(0)
    n, d = 4096, 3  # enough tiles for the fused scan to keep k + EXTRA_TILES of them
    mu = rng.normal(size=(n, d))
    sigma = np.exp(rng.uniform(-2.0, 0.0, size=(n, d)))
    z = rng.normal(size=d)
    steps = [(backend, name) for backend in ("blas", "fused") for name in SCORES]
    total = len(steps) + 2
    done = 0
    indexes = {backend: SearchIndex(backend=backend).fit(mu, sigma) for backend in ("blas", "fused")}
    for backend, name in steps:
        if progress is not None:
            progress(done, total, f"compiling the search ({backend}, {name})")
        indexes[backend].search(z, name, 5)
        indexes[backend].search(z, name, 5, s=0.5)
        done += 1
    if progress is not None:
        progress(done, total, "compiling the search (numpy rescoring fallback)")
    index = indexes["blas"]
    score = SCORES["kl"]
    index._search_numpy_rescoring(z, score, 5, index.default_spread_, index._prepared(score, index.default_spread_))
    done += 1
    if progress is not None:
        progress(done, total, "compiling the search (parallel scan)")
    codes = indexes["fused"]._prepared(SCORES["euclidean"], indexes["fused"].default_spread_).codes
    assert codes is not None  # a "fused" index codes every score whose features fit in float32
    _tiles.scan(codes.tiles, np.ones(codes.tiles.shape[1], np.float32), codes.n_items, 5, 2)
    if progress is not None:
        progress(total, total, "search compiled")
