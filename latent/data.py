"""Fashion-MNIST: find, download, validate and load the IDX files in a canonical item order.

Item numbers must mean the same garment on every machine. Copies of Fashion-MNIST hold the same
images in different row orders (the official files, and redistributions such as the one in
``../shared/fashion-mnist``), so each split is put into a canonical order that does not depend on
the source: rows sorted by the SHA-1 of the image's 784 bytes, ties broken by label. The item index
used everywhere in the product is ``0..59999`` for the training split in that order, followed by
``60000..69999`` for the test split.

The data folder is resolved in this order: an explicit argument (or the CLI's ``--data-dir``),
the environment variable ``LATENT_DATA_DIR``, then a per-user cache folder
(``$XDG_CACHE_HOME/latent-explorer/fashion-mnist``, by default ``~/.cache/...``); see
:class:`latent.config.Settings`. Files missing there are downloaded from ``LATENT_DATA_URL`` (by
default Zalando Research's mirror), verified against the official MD5s, and written atomically
(:func:`latent.io.atomic_writer`).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import struct
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import Settings
from .io import atomic_writer

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGE_SIDE = 28
N_TRAIN = 60_000
N_TEST = 10_000

#: Where a user can fetch the files by hand.
PROJECT_PAGE = "https://github.com/zalandoresearch/fashion-mnist"

#: File names and the official MD5s (they apply to the official downloads only).
FILES: dict[str, str] = {
    "train-images": "train-images-idx3-ubyte.gz",
    "train-labels": "train-labels-idx1-ubyte.gz",
    "test-images": "t10k-images-idx3-ubyte.gz",
    "test-labels": "t10k-labels-idx1-ubyte.gz",
}
OFFICIAL_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension

#: ``progress(label, done, total)``; ``total`` is None when unknown.
ProgressFn = Callable[[str, int, "int | None"], None]


class DataError(RuntimeError):
    """A data file is missing, corrupt or cannot be fetched; the message says what to do."""


@dataclass(frozen=True)
class FashionMNIST:
    """Both splits in canonical order.

    Attributes:
        images: (70000, 28, 28) uint8, training items first, then test items.
        labels: (70000,) uint8 in 0..9, names in :data:`CLASS_NAMES`.
        is_test: (70000,) bool, True for the 10,000 test items.
        fingerprint: SHA-256 hex of the canonical arrays; equal on every machine for the same data.
        source: the folder the files were read from.
    """

    images: np.ndarray
    labels: np.ndarray
    is_test: np.ndarray
    fingerprint: str
    source: Path

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def train_images(self) -> np.ndarray:
        """(n_train, 28, 28) uint8."""
        return self.images[~self.is_test]

    @property
    def train_labels(self) -> np.ndarray:
        return self.labels[~self.is_test]

    @property
    def test_images(self) -> np.ndarray:
        """(n_test, 28, 28) uint8."""
        return self.images[self.is_test]

    @property
    def test_labels(self) -> np.ndarray:
        return self.labels[self.is_test]


# --------------------------------------------------------------------------- folders


def resolve_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data folder: ``explicit`` if given, else :attr:`Settings.data_dir <latent.config.Settings>`
    (``$LATENT_DATA_DIR``, else the user cache)."""
    if explicit:
        return Path(explicit).expanduser()
    return Settings.from_env().data_dir


def missing_files(data_dir: Path) -> list[str]:
    """Names of the four files that are not present in ``data_dir``."""
    return [name for name in FILES.values() if not (Path(data_dir) / name).is_file()]


# --------------------------------------------------------------------------- IDX parsing


def _bad(path: Path, problem: str) -> DataError:
    return DataError(
        f"{path}: {problem}. Delete this file and run again to download it afresh, "
        f"or replace it with the official file from {PROJECT_PAGE}."
    )


def _gunzip(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    if raw[:2] != b"\x1f\x8b":
        raise _bad(path, "is not a gzip file (the IDX files must be the .gz downloads)")
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise _bad(path, "is truncated (the gzip stream ends early)") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise _bad(path, f"is a corrupt gzip file ({exc})") from None


def read_idx(path: str | os.PathLike[str], kind: str, expected_count: int | None = None) -> np.ndarray:
    """Read and validate one gzipped IDX file of unsigned bytes.

    Args:
        path: the ``.gz`` file.
        kind: ``"images"`` (magic 2051, shape (n, 28, 28)) or ``"labels"`` (magic 2049, shape (n,),
            values in 0..9).
        expected_count: the number of items the file must hold, or None to accept any.

    Returns:
        uint8 array of shape (n, 28, 28) or (n,).

    Raises:
        DataError: naming the file, what is wrong and what to do.
    """
    path = Path(path)
    if kind not in ("images", "labels"):
        raise ValueError(f"unknown IDX kind {kind!r}; choose 'images' or 'labels'")
    data = _gunzip(path)
    ndim = 3 if kind == "images" else 1
    magic_expected = IDX_IMAGES_MAGIC if kind == "images" else IDX_LABELS_MAGIC
    header_len = 4 + 4 * ndim
    if len(data) < 4:
        raise _bad(path, f"is too short for an IDX {kind} header ({len(data)} bytes)")
    (magic,) = struct.unpack(">i", data[:4])
    if magic != magic_expected:
        raise _bad(path, f"has IDX magic number {magic}, expected {magic_expected} for {kind}")
    if len(data) < header_len:
        raise _bad(path, f"is too short for an IDX {kind} header ({len(data)} bytes)")
    dims = struct.unpack(f">{ndim}i", data[4:header_len])
    if kind == "images" and dims[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise _bad(path, f"holds images of {dims[1]}x{dims[2]} pixels, expected {IMAGE_SIDE}x{IMAGE_SIDE}")
    count = dims[0]
    if expected_count is not None and count != expected_count:
        raise _bad(path, f"holds {count} {kind}, expected {expected_count}")
    n_bytes = int(np.prod(dims))
    body = len(data) - header_len
    if body != n_bytes:
        what = "is truncated" if body < n_bytes else "has trailing bytes"
        raise _bad(path, f"{what}: the header promises {n_bytes} data bytes, the file has {body}")
    array = np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)
    if kind == "labels" and array.size and array.max() >= len(CLASS_NAMES):
        raise _bad(path, f"has label {int(array.max())}, outside the range 0..{len(CLASS_NAMES) - 1}")
    return array.copy()


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write a uint8 array of shape (n, 28, 28) or (n,) as a gzipped IDX file (for tests and tools)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = IDX_IMAGES_MAGIC if array.ndim == 3 else IDX_LABELS_MAGIC
    header = struct.pack(f">i{array.ndim}i", magic, *array.shape)
    with atomic_writer(path) as out, gzip.GzipFile(Path(path).name, "wb", compresslevel=1, fileobj=out) as fh:
        fh.write(header + array.tobytes())


# --------------------------------------------------------------------------- canonical order


def canonical_order(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The permutation that sorts items by SHA-1 of their 784 image bytes, ties broken by label.

    Args:
        images: (n, 28, 28) uint8.
        labels: (n,) uint8.

    Returns:
        (n,) int64 indices such that ``images[order]`` is in canonical order.
    """
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    digests = np.frombuffer(b"".join(hashlib.sha1(row.tobytes()).digest() for row in flat), dtype=np.uint8)
    digests = digests.reshape(len(images), 20)
    # np.lexsort sorts by the last key first: byte 0 of the digest, then 1, ..., then the label.
    keys = [labels] + [digests[:, j] for j in range(19, -1, -1)]
    return np.lexsort(keys)


def fingerprint_arrays(*arrays: np.ndarray) -> str:
    """SHA-256 hex over the arrays' shapes and bytes: a content key for caches."""
    h = hashlib.sha256()
    for array in arrays:
        h.update(repr((array.dtype.str, array.shape)).encode())
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- download


def download_file(
    url: str,
    destination: Path,
    md5: str | None,
    progress: ProgressFn | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` to ``destination`` atomically, verifying its MD5.

    The bytes go to a temporary file in the same folder, which is renamed into place only when the
    download is complete and its MD5 matches; on any failure the temporary file is removed, so no
    partial or corrupt file is ever left at ``destination``.
    """
    destination = Path(destination)
    digest = hashlib.md5()
    done = 0
    try:
        with atomic_writer(destination) as out:  # renamed into place only if the block completes
            try:
                response = urllib.request.urlopen(url, timeout=timeout)  # a fixed https/http mirror
            except urllib.error.HTTPError as exc:
                raise DataError(f"Downloading {url} failed: HTTP {exc.code} {exc.reason}.") from None
            with response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                if progress:
                    progress(destination.name, 0, total)
                while True:
                    chunk = response.read(1 << 16)
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress(destination.name, done, total)
            if total is not None and done != total:
                raise DataError(f"Downloading {url} was cut off: got {done} of {total} bytes. Run again to retry.")
            got = digest.hexdigest()
            if md5 is not None and got != md5:
                raise DataError(
                    f"Downloading {url} gave a file with MD5 {got}, expected {md5}: the download is corrupt "
                    "or the mirror has changed. Nothing was saved; run again to retry."
                )
        return destination
    except http.client.HTTPException as exc:
        raise DataError(f"Downloading {url} was cut off ({exc!r}). Nothing was saved; run again to retry.") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DataError(
            f"Could not download {url} ({reason}). Without network access, copy the four Fashion-MNIST "
            f".gz files ({', '.join(FILES.values())}) from {PROJECT_PAGE} into {destination.parent} by "
            "hand, or point LATENT_DATA_DIR (or --data-dir) at a folder that holds them."
        ) from None


def download_fashion_mnist(
    data_dir: str | os.PathLike[str],
    base_url: str | None = None,
    progress: ProgressFn | None = None,
    checksums: dict[str, str] | None = None,
) -> list[Path]:
    """Download the files missing from ``data_dir`` from ``base_url``; returns the paths fetched.

    ``base_url`` defaults to :attr:`Settings.data_url <latent.config.Settings>` (``$LATENT_DATA_URL``,
    else :data:`latent.config.OFFICIAL_MIRROR`). Each file is verified against ``checksums[name]`` (MD5
    hex; default :data:`OFFICIAL_MD5`).
    """
    base_url = Settings.from_env().data_url if base_url is None else base_url
    checksums = OFFICIAL_MD5 if checksums is None else checksums
    data_dir = Path(data_dir)
    fetched = []
    for name in missing_files(data_dir):
        url = base_url.rstrip("/") + "/" + name
        fetched.append(download_file(url, data_dir / name, checksums[name], progress=progress))
    return fetched


# --------------------------------------------------------------------------- loading


def _files_digest(folder: Path) -> str:
    """SHA-256 over the four files' names and bytes: the key of the decoded-array cache."""
    h = hashlib.sha256()
    for name in FILES.values():
        h.update(name.encode())
        with open(folder / name, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def _read_array_cache(path: Path, digest: str, folder: Path) -> FashionMNIST | None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            if str(npz["digest"]) != digest:
                return None
            arrays = [npz["images"], npz["labels"], npz["is_test"]]
            fingerprint = str(npz["fingerprint"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    # A damaged file fails zipfile's CRC-32 check while np.load reads it (BadZipFile, above), so the
    # fingerprint stored beside the arrays is trusted rather than recomputed (hashing every load is slow).
    images, labels, is_test = arrays
    if images.dtype != np.uint8 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE) or not (
            len(images) == len(labels) == len(is_test)) or len(fingerprint) != 64:
        return None
    for array in arrays:
        array.setflags(write=False)
    return FashionMNIST(images=images, labels=labels, is_test=is_test, fingerprint=fingerprint, source=folder)


def _write_array_cache(path: Path, digest: str, data: FashionMNIST) -> None:
    with atomic_writer(path) as fh:
        np.savez(fh, digest=np.array(digest), images=data.images, labels=data.labels, is_test=data.is_test,
                 fingerprint=np.array(data.fingerprint))


def load_fashion_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    base_url: str | None = None,
    progress: ProgressFn | None = None,
    expected_counts: tuple[int, int] | None = (N_TRAIN, N_TEST),
    checksums: dict[str, str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> FashionMNIST:
    """Load both splits in canonical order, downloading missing files first if ``download``.

    Args:
        data_dir: the folder; None resolves it as described in the module docstring.
        download: fetch missing files from ``base_url``; if False, missing files raise DataError.
        base_url: the mirror to download from (default ``$LATENT_DATA_URL``, else the official mirror).
        progress: called as ``progress(label, done, total)`` during downloads.
        expected_counts: (train, test) item counts every file must hold; None accepts any (tests).
        checksums: MD5 hex per file name for downloads (default: the official MD5s). Files already
            present are validated structurally, not by MD5: other copies hold other row orders.
        cache_dir: if given, the decoded canonical arrays are cached there as an uncompressed
            ``.npz`` keyed by the SHA-256 of the four files (a warm load skips gunzip and hashing;
            a damaged cache fails the zip format's CRC-32 check and is rebuilt).

    Returns:
        A :class:`FashionMNIST` with the 70,000 items (60,000 train then 10,000 test).
    """
    folder = resolve_data_dir(data_dir)
    missing = missing_files(folder)
    if missing:
        if not download:
            raise DataError(
                f"Fashion-MNIST files missing from {folder}: {', '.join(missing)}. Copy them there from "
                f"{PROJECT_PAGE}, or set LATENT_DATA_DIR to a folder that holds them."
            )
        download_fashion_mnist(folder, base_url=base_url, progress=progress, checksums=checksums)

    cache_path = digest = None
    if cache_dir is not None:
        digest = _files_digest(folder)
        cache_path = Path(cache_dir) / f"fashion-mnist-{digest[:20]}.npz"
        cached = _read_array_cache(cache_path, digest, folder)
        if cached is not None:
            return cached

    images, labels, flags = [], [], []
    for split, count in zip(("train", "test"), expected_counts or (None, None), strict=True):
        imgs = read_idx(folder / FILES[f"{split}-images"], "images", count)
        labs = read_idx(folder / FILES[f"{split}-labels"], "labels", count)
        if len(imgs) != len(labs):
            raise DataError(
                f"{folder}: {FILES[f'{split}-images']} holds {len(imgs)} images but "
                f"{FILES[f'{split}-labels']} holds {len(labs)} labels; the files come from different "
                f"sets. Replace both with the official files from {PROJECT_PAGE}."
            )
        order = canonical_order(imgs, labs)
        images.append(imgs[order])
        labels.append(labs[order])
        flags.append(np.full(len(labs), split == "test"))
    all_images = np.concatenate(images)
    all_labels = np.concatenate(labels)
    is_test = np.concatenate(flags)
    for array in (all_images, all_labels, is_test):
        array.setflags(write=False)
    data = FashionMNIST(
        images=all_images,
        labels=all_labels,
        is_test=is_test,
        fingerprint=fingerprint_arrays(all_images, all_labels, is_test),
        source=folder,
    )
    if cache_path is not None and digest is not None and (expected_counts is None or len(data) == sum(expected_counts)):
        with contextlib.suppress(OSError):  # a read-only cache folder only costs speed
            _write_array_cache(cache_path, digest, data)
    return data
