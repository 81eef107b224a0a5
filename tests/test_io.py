"""latent.io: the one atomic write, and the project's writers that go through it."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from latent import io as lio
from latent.io import TEMP_SUFFIX, atomic_writer, write_bytes_atomic, write_json_atomic, write_text_atomic


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_the_file_appears_complete_and_alone(tmp_path):
    data = os.urandom(300_000)
    path = write_bytes_atomic(tmp_path / "blob.bin", data)
    assert path == tmp_path / "blob.bin"
    assert path.read_bytes() == data
    assert listing(tmp_path) == ["blob.bin"]


def test_the_temporary_file_is_beside_the_destination_and_the_destination_is_untouched_until_the_end(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("old")
    with atomic_writer(path, "w") as fh:
        fh.write("new")
        fh.flush()
        (tmp,) = [name for name in listing(tmp_path) if name != "report.json"]
        assert tmp.startswith(".report.json.") and tmp.endswith(TEMP_SUFFIX)
        assert (tmp_path / tmp).read_text() == "new"
        assert path.read_text() == "old"  # a reader still sees the old file
    assert path.read_text() == "new"
    assert listing(tmp_path) == ["report.json"]


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_an_exception_in_the_writer_leaves_the_old_file_and_no_temporary_file(tmp_path, error):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"old contents")
    with pytest.raises(type(error)), atomic_writer(path) as fh:
        fh.write(b"half of the new")
        raise error
    assert path.read_bytes() == b"old contents"
    assert listing(tmp_path) == ["weights.npz"]


def test_an_exception_without_an_old_file_leaves_nothing(tmp_path):
    with pytest.raises(ValueError), atomic_writer(tmp_path / "new.bin") as fh:
        fh.write(b"partial")
        raise ValueError("stop")
    assert listing(tmp_path) == []


def test_a_failing_rename_removes_the_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    path.write_text("old")

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(lio.os, "replace", refuse)
    with pytest.raises(PermissionError):
        write_text_atomic(path, "new")
    assert path.read_text() == "old" and listing(tmp_path) == ["a.txt"]


def test_a_pre_existing_file_is_replaced_by_a_rename_not_rewritten_in_place(tmp_path):
    """A reader that opened the old file keeps reading the old bytes: the new file is a new inode."""
    path = tmp_path / "catalog.npz"
    path.write_bytes(b"old" * 1000)
    with open(path, "rb") as reader:
        before = os.stat(path).st_ino
        write_bytes_atomic(path, b"new" * 10)
        assert reader.read() == b"old" * 1000
    assert path.read_bytes() == b"new" * 10
    if sys.platform != "win32":
        assert os.stat(path).st_ino != before


def test_the_data_is_fsynced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync-folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def replace(src, dst):
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(lio.os, "fsync", fsync)
    monkeypatch.setattr(lio.os, "replace", replace)
    write_bytes_atomic(tmp_path / "x.bin", b"payload")
    assert events[:2] == ["fsync-file", "replace"]
    if hasattr(os, "O_DIRECTORY"):  # folders can be opened and fsynced (POSIX)
        assert events == ["fsync-file", "replace", "fsync-folder"]


def test_missing_parent_folders_are_created(tmp_path):
    path = write_text_atomic(tmp_path / "a" / "b" / "c.txt", "hello")
    assert path.read_text() == "hello"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_a_new_file_gets_the_permissions_of_a_plain_open(tmp_path):
    old = os.umask(0o027)
    try:
        write_bytes_atomic(tmp_path / "a.bin", b"x")
        with open(tmp_path / "b.bin", "wb") as fh:
            fh.write(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o640


def test_json_round_trips_and_an_unserialisable_object_touches_nothing(tmp_path):
    path = write_json_atomic(tmp_path / "h.json", {"epoch": 3, "loss": [1.5, 0.25]})
    assert json.loads(path.read_text()) == {"epoch": 3, "loss": [1.5, 0.25]}
    assert path.read_text().endswith("\n")
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"epoch": 3, "loss": [1.5, 0.25]}
    assert listing(tmp_path) == ["h.json"]


def test_text_is_written_in_the_given_encoding(tmp_path):
    write_text_atomic(tmp_path / "t.md", "négatif ELBO ≥ 0")
    assert (tmp_path / "t.md").read_bytes() == "négatif ELBO ≥ 0".encode()


def test_unknown_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'wb' or 'w'"), atomic_writer(tmp_path / "x", mode="ab"):  # type: ignore[arg-type]
        pass
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------- the project's writers


def _interrupt_after_some_bytes(*args, **kwargs):
    """Stands in for np.savez(file, ...) and torch.save(obj, file): writes a little, then is interrupted."""
    (fh,) = [a for a in args if hasattr(a, "write")]
    fh.write(b"PK\x03\x04 partial zip")
    raise KeyboardInterrupt


def _writers(tmp_path: Path):
    """(name, write(path), patch target) for writers that serialise with np.savez or torch.save."""
    from latent.catalog import save_catalog
    from latent.data import FashionMNIST
    from latent.model import VAE, VAEConfig, save_checkpoint
    from latent.numpy_decoder import NumpyDecoder
    from latent.projection import MapProjector, save_map
    from tests.conftest import small_dataset

    rng = np.random.default_rng(0)
    mu = rng.normal(size=(40, 3)).astype(np.float32)
    model = VAE(VAEConfig(latent_dim=2, image_side=8))
    data: FashionMNIST = small_dataset(8, 4)
    from latent.catalog import _catalog

    catalog = _catalog("k", data, np.zeros((12, 2), np.float32), np.ones((12, 2), np.float32), None, True, 0.0)
    return [
        ("save_checkpoint", lambda p: save_checkpoint(model, p), "torch.save"),
        ("NumpyDecoder.save", lambda p: NumpyDecoder.from_model(model, "s").save(p), "numpy.savez"),
        ("save_map", lambda p: save_map(MapProjector.from_embedding(mu, mu[:, :2]), p, "key"), "numpy.savez"),
        ("save_catalog", lambda p: save_catalog(catalog, p), "numpy.savez"),
    ]


@pytest.mark.parametrize("which", range(4))
def test_the_project_writers_leave_the_old_file_when_interrupted(tmp_path, monkeypatch, which):
    name, write, target = _writers(tmp_path)[which]
    path = tmp_path / "out.bin"
    path.write_bytes(b"the previous good file")
    module, attr = target.split(".")
    monkeypatch.setattr({"torch": torch, "numpy": np}[module], attr, _interrupt_after_some_bytes)
    with pytest.raises(KeyboardInterrupt):
        write(path)
    assert path.read_bytes() == b"the previous good file", name
    assert listing(tmp_path) == ["out.bin"], f"{name} left a temporary file"
