"""Atomic file writes: a reader sees the old file or the complete new one, never a partial file.

Every file the project writes (checkpoints, caches, maps, JSON reports, PNG sheets, downloads) goes
through :func:`atomic_writer`:

1. the bytes go to a new temporary file in the destination's folder (same file system, so the
   rename below is atomic), created with mode ``0o666`` minus the umask, as ``open(path, "w")`` would;
2. the file is flushed and ``fsync``-ed, so that its data is on disk before its name is;
3. ``os.replace`` renames it over the destination (atomic on POSIX and Windows);
4. the folder is ``fsync``-ed where the platform allows it, so that the rename itself survives a crash.

On any failure before the rename, an exception in the caller's code included (``KeyboardInterrupt``
too), the temporary file is removed and the destination is left as it was. Missing parent folders
are created: every caller writes into a cache or output folder that may not exist yet.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal

#: Suffix of the temporary files (``.<name>.<random>.tmp`` beside the destination).
TEMP_SUFFIX = ".tmp"


def _open_temporary(folder: Path, name: str) -> tuple[int, Path]:
    """A new, exclusively created file ``folder/.name.<random>.tmp``: (descriptor, path)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = folder / f".{name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # 2**-48 per try: another writer picked the same name
            continue


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; a no-op where folders cannot be opened (Windows)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the file itself is already in place
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(
    path: str | os.PathLike[str], mode: Literal["wb", "w"] = "wb", encoding: str = "utf-8"
) -> Iterator[IO[Any]]:
    """Open a temporary file that replaces ``path`` when the ``with`` block ends without an exception.

    Args:
        path: the destination; its parent folder is created when missing.
        mode: ``"wb"`` for a binary file object, ``"w"`` for text (in ``encoding``).
        encoding: the text encoding for ``mode="w"``.

    Yields:
        A writable file object (write to it; do not close it).

    Raises:
        Whatever the block raises, after removing the temporary file; ``path`` is then untouched.

    Example::

        with atomic_writer(path) as fh:
            np.savez(fh, mu=mu)
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w'; got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _open_temporary(path.parent, path.name)
    try:
        with os.fdopen(fd, mode, encoding=None if mode == "wb" else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_writer(path) as fh:
        fh.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (in ``encoding``); returns the path."""
    with atomic_writer(path, "w", encoding=encoding) as fh:
        fh.write(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON (with a final newline) to ``path`` atomically; returns the path.

    The object is serialised before the file is opened, so a value that JSON cannot hold raises
    ``TypeError`` without touching the disk.
    """
    return write_text_atomic(path, json.dumps(obj, indent=2) + "\n")
