"""The encoded catalog: every Fashion-MNIST item's posterior q(z|x) = N(mu(x), diag(sigma(x)^2)).

All 70,000 items (canonical order, train then test; see :mod:`latent.data`) are encoded once and
cached on disk as an uncompressed ``.npz``, keyed by the SHA-256 of the checkpoint file and the
fingerprint of the canonical data. Writes are atomic (:func:`latent.io.atomic_writer`); a
cache file that is unreadable, stale (another key) or malformed is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import os
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import paths
from .config import Settings
from .data import FashionMNIST
from .io import atomic_writer

if TYPE_CHECKING:  # torch loads only to encode: reading a cached catalog needs numpy alone
    from .model import VAE

CATALOG_VERSION = 1
#: ``progress(done, total)`` in items.
EncodeProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class Catalog:
    """Posterior parameters of every item, read-only.

    Attributes:
        mu: (N, d) float32 encoder means.
        sigma: (N, d) float32 encoder standard deviations, > 0.
        labels: (N,) uint8 class labels.
        is_test: (N,) bool split flags.
        index: (N,) int64 item numbers in the canonical order (0..N-1).
        key: the cache key (checkpoint hash + data fingerprint).
        path: the cache file, or None when not cached.
        built: True when this call encoded the items, False when loaded from the cache.
        encode_seconds: wall time of the encoding when it was built (stored in the cache).
    """

    mu: np.ndarray
    sigma: np.ndarray
    labels: np.ndarray
    is_test: np.ndarray
    index: np.ndarray
    key: str
    path: Path | None = None
    built: bool = False
    encode_seconds: float = float("nan")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def latent_dim(self) -> int:
        return self.mu.shape[1]


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """SHA-256 hex of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def catalog_key(checkpoint_sha256: str, data_fingerprint: str) -> str:
    """The cache key: a hash of the format version, the checkpoint hash and the data fingerprint."""
    text = f"catalog-v{CATALOG_VERSION}:{checkpoint_sha256}:{data_fingerprint}"
    return hashlib.sha256(text.encode()).hexdigest()


def encode_images(
    model: VAE,
    images: np.ndarray,
    batch_size: int = 2000,
    progress: EncodeProgress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Encode uint8 images (N, 28, 28) into mu and sigma = exp(logvar / 2), each (N, d) float32."""
    import torch  # here, not at import: reading a cached catalog needs numpy alone

    was_training = model.training
    with torch.no_grad():
        model.eval()
        device = next(model.parameters()).device
        n = len(images)
        mu = np.empty((n, model.config.latent_dim), np.float32)
        sigma = np.empty_like(mu)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            x = torch.tensor(images[start:stop], device=device)  # a copy: the input may be read-only
            x = x.unsqueeze(1).float().div_(255.0)  # (B, 1, 28, 28)
            m, logvar = model.encode(x)
            mu[start:stop] = m.cpu().numpy()
            sigma[start:stop] = torch.exp(0.5 * logvar).cpu().numpy()
            if progress:
                progress(stop, n)
    model.train(was_training)
    return mu, sigma


def _cache_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / f"catalog-{key[:20]}.npz"


def cache_file_for(key: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the catalog for ``key`` is cached (it may not exist yet)."""
    return _cache_path(Path(cache_dir) if cache_dir is not None else Settings.from_env().cache_dir, key)


def _read_cache(path: Path, key: str, n: int, d: int) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None if the file is missing, unreadable, stale or malformed."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in ("key", "mu", "sigma", "encode_seconds")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None
    ok = (
        str(arrays["key"]) == key
        and arrays["mu"].shape == (n, d)
        and arrays["sigma"].shape == (n, d)
        and arrays["mu"].dtype == np.float32
        and arrays["sigma"].dtype == np.float32
        and bool(np.isfinite(arrays["mu"]).all())
        and bool((arrays["sigma"] > 0).all())
    )
    return arrays if ok else None


def _write_cache(path: Path, key: str, mu: np.ndarray, sigma: np.ndarray, encode_seconds: float) -> None:
    with atomic_writer(path) as fh:
        np.savez(fh, key=np.array(key), mu=mu, sigma=sigma, encode_seconds=np.array(encode_seconds))


#: The catalog shipped with the repository for the shipped model (read-only; used when its key matches).
SHIPPED_CATALOG = paths.MODELS_DIR / "catalog.npz"


def find_cached(key: str, n: int, d: int, cache_dir: str | os.PathLike[str] | None = None,
                shipped: Path | None = SHIPPED_CATALOG) -> tuple[Path, dict[str, np.ndarray]] | None:
    """The first valid file for ``key``: the shipped catalog, then the cache; None when neither fits."""
    for candidate in (shipped, cache_file_for(key, cache_dir)):
        if candidate is not None:
            arrays = _read_cache(Path(candidate), key, n, d)
            if arrays is not None:
                return Path(candidate), arrays
    return None


def load_catalog(key: str, data: FashionMNIST, latent_dim: int, cache_dir: str | os.PathLike[str] | None = None,
                 shipped: Path | None = SHIPPED_CATALOG) -> Catalog | None:
    """The catalog for ``key`` (see :func:`catalog_key`) over ``data`` from disk, the shipped file first, then the
    cache; None when neither holds a valid one (then :func:`load_or_build_catalog` encodes it). No model needed."""
    found = find_cached(key, len(data), latent_dim, cache_dir, shipped)
    if found is None:
        return None
    path, cached = found
    seconds = float(cached["encode_seconds"])
    return _catalog(key, data, cached["mu"], cached["sigma"], path, built=False, seconds=seconds)


def _catalog(key: str, data: FashionMNIST, mu: np.ndarray, sigma: np.ndarray, path: Path | None, built: bool,
             seconds: float) -> Catalog:
    arrays = [mu, sigma, data.labels, data.is_test, np.arange(len(data), dtype=np.int64)]
    for array in arrays:
        array.setflags(write=False)
    return Catalog(
        mu=arrays[0], sigma=arrays[1], labels=arrays[2], is_test=arrays[3], index=arrays[4],
        key=key, path=path, built=built, encode_seconds=seconds,
    )


def save_catalog(catalog: Catalog, path: str | os.PathLike[str]) -> Path:
    """Write ``catalog`` atomically to ``path`` in the cache format (e.g. to ship it in ``models/``)."""
    path = Path(path)
    _write_cache(path, catalog.key, np.asarray(catalog.mu), np.asarray(catalog.sigma), catalog.encode_seconds)
    return path


def load_or_build_catalog(
    model: VAE,
    checkpoint_path: str | os.PathLike[str],
    data: FashionMNIST,
    cache_dir: str | os.PathLike[str] | None = None,
    rebuild: bool = False,
    progress: bool | EncodeProgress = False,
    shipped: Path | None = SHIPPED_CATALOG,
) -> Catalog:
    """The catalog for ``model`` (loaded from ``checkpoint_path``) over ``data``, cached on disk.

    A valid shipped catalog (``models/catalog.npz``, same key) is used first, then the cache;
    otherwise the items are encoded and the result cached.

    Args:
        model: the VAE loaded from ``checkpoint_path``.
        checkpoint_path: its file; its SHA-256 is part of the cache key.
        data: the dataset in canonical order; its fingerprint is part of the key.
        cache_dir: where the cache lives (default ``Settings.cache_dir``, i.e. ``$LATENT_CACHE_DIR``).
        rebuild: encode again even when a valid cache exists.
        progress: True for a tqdm bar, or a ``progress(done, total)`` callback.
        shipped: a read-only catalog file tried first (None to skip).
    """
    key = catalog_key(file_sha256(checkpoint_path), data.fingerprint)
    folder = Path(cache_dir) if cache_dir is not None else Settings.from_env().cache_dir
    path = _cache_path(folder, key)
    n, d = len(data), model.config.latent_dim
    found = None if rebuild else find_cached(key, n, d, folder, shipped)
    cached: dict[str, np.ndarray] | None = None
    if found is not None:
        path, cached = found
    built = cached is None
    stored: Path | None = path
    if cached is None:
        bar = None
        callback: EncodeProgress | None = None
        if progress is True:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="encoding", unit="img", mininterval=1.0)
            callback = lambda done, total: bar.update(done - bar.n)  # noqa: E731 (fills the typed slot above)
        elif callable(progress):
            callback = progress
        started = time.perf_counter()
        try:
            mu, sigma = encode_images(model, data.images, progress=callback)
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - started
        try:
            _write_cache(path, key, mu, sigma, seconds)
        except OSError:
            stored = None  # a read-only cache folder still gives a working (uncached) catalog
    else:
        mu, sigma, seconds = cached["mu"], cached["sigma"], float(cached["encode_seconds"])
    return _catalog(key, data, mu, sigma, stored, built, seconds)


def kl_per_dimension(catalog: Catalog) -> np.ndarray:
    """Mean KL(q(z_j|x) || N(0, 1)) over the catalog for each latent dimension j, shape (d,), nats.

    KL_j = 1/2 (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2). A dimension with mean KL below about
    0.01 nats carries no information about x: the model does not use it.
    """
    mu = catalog.mu.astype(np.float64)
    var = catalog.sigma.astype(np.float64) ** 2
    return (0.5 * (mu**2 + var - 1.0 - np.log(var))).mean(axis=0)
