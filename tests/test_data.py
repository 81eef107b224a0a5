"""latent/data.py: IDX parsing and validation, canonical order, folder resolution."""

from __future__ import annotations

import gzip
import hashlib
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from latent import data as D
from latent.data import FILES, DataError, canonical_order, load_fashion_mnist, read_idx, resolve_data_dir, write_idx
from tests.conftest import make_images, write_dataset


def gz(path: Path, payload: bytes) -> Path:
    with gzip.open(path, "wb") as fh:
        fh.write(payload)
    return path


def idx_header(magic: int, *dims: int) -> bytes:
    return struct.pack(f">i{len(dims)}i", magic, *dims)


# --------------------------------------------------------------------------- good files


def test_read_idx_parses_images_and_labels_exactly(tmp_path):
    images, labels = make_images(5)
    # Written by hand (not with write_idx) so the parser is checked against the IDX format itself.
    gz(tmp_path / "i.gz", idx_header(2051, 5, 28, 28) + images.tobytes())
    gz(tmp_path / "l.gz", idx_header(2049, 5) + labels.tobytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "i.gz", "images", 5), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "l.gz", "labels", 5), labels)


def test_write_idx_round_trips(tmp_path):
    images, labels = make_images(3)
    write_idx(tmp_path / "i.gz", images)
    write_idx(tmp_path / "l.gz", labels)
    np.testing.assert_array_equal(read_idx(tmp_path / "i.gz", "images"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "l.gz", "labels"), labels)


def test_empty_file_of_zero_items_is_valid(tmp_path):
    gz(tmp_path / "l.gz", idx_header(2049, 0))
    assert read_idx(tmp_path / "l.gz", "labels").shape == (0,)


# --------------------------------------------------------------------------- bad files


BAD_CASES = {
    "not gzip": (lambda p: p.write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 100), "labels", "not a gzip file"),
    "truncated gzip": (
        lambda p: p.write_bytes(gzip.compress(idx_header(2049, 50) + bytes(50))[:-12]),
        "labels",
        "truncated",
    ),
    "corrupt gzip": (
        lambda p: p.write_bytes(gzip.compress(idx_header(2049, 4) + bytes(4))[:10] + b"\xff" * 30),
        "labels",
        "gzip",
    ),
    "wrong magic": (lambda p: gz(p, idx_header(2051, 4) + bytes(4)), "labels", "magic number 2051"),
    "labels given to images": (lambda p: gz(p, idx_header(2049, 4) + bytes(4)), "images", "magic number 2049"),
    "wrong dimensions": (lambda p: gz(p, idx_header(2051, 2, 27, 28) + bytes(2 * 27 * 28)), "images", "27x28"),
    "short header": (lambda p: gz(p, b"\x00\x00\x08"), "labels", "too short"),
    "body truncated": (lambda p: gz(p, idx_header(2049, 10) + bytes(7)), "labels", "truncated"),
    "trailing bytes": (lambda p: gz(p, idx_header(2049, 3) + bytes(5)), "labels", "trailing bytes"),
    "label out of range": (lambda p: gz(p, idx_header(2049, 3) + bytes([1, 10, 2])), "labels", "label 10"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_each_bad_file_gets_an_error_naming_file_problem_and_fix(tmp_path, case):
    make, kind, problem = BAD_CASES[case]
    path = tmp_path / "bad-file.gz"
    make(path)
    with pytest.raises(DataError) as info:
        read_idx(path, kind)
    message = str(info.value)
    assert str(path) in message
    assert problem in message
    assert "download it afresh" in message or "official file" in message


def test_wrong_count_is_reported(tmp_path):
    gz(tmp_path / "l.gz", idx_header(2049, 3) + bytes(3))
    with pytest.raises(DataError, match="holds 3 labels, expected 60000"):
        read_idx(tmp_path / "l.gz", "labels", 60000)


def test_unknown_kind_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="'images' or 'labels'"):
        read_idx(tmp_path / "x.gz", "pixels")


def test_image_and_label_counts_must_agree(tmp_path):
    write_dataset(tmp_path, n_train=10, n_test=4)
    write_idx(tmp_path / FILES["train-labels"], make_images(9)[1])
    with pytest.raises(DataError, match=r"holds 10 images but .* holds 9 labels"):
        load_fashion_mnist(tmp_path, download=False, expected_counts=None)


def test_official_counts_are_enforced_by_default(tmp_path):
    write_dataset(tmp_path, n_train=10, n_test=4)
    with pytest.raises(DataError, match="expected 60000"):
        load_fashion_mnist(tmp_path, download=False)


def test_missing_files_without_download_name_the_files_and_the_folder(tmp_path):
    write_dataset(tmp_path)
    (tmp_path / FILES["test-labels"]).unlink()
    with pytest.raises(DataError) as info:
        load_fashion_mnist(tmp_path, download=False, expected_counts=None)
    assert FILES["test-labels"] in str(info.value) and str(tmp_path) in str(info.value)
    assert FILES["train-images"] not in str(info.value).split("missing from")[1].split(":")[1]


# --------------------------------------------------------------------------- canonical order


def reference_order(images: np.ndarray, labels: np.ndarray) -> list[int]:
    """Brute force: Python's sort on (SHA-1 digest bytes, label)."""
    keys = [(hashlib.sha1(images[i].tobytes()).digest(), int(labels[i])) for i in range(len(labels))]
    return sorted(range(len(labels)), key=lambda i: keys[i])


def test_canonical_order_matches_a_brute_force_sort_including_ties():
    images, labels = make_images(60, seed=3)
    images[10] = images[20] = images[30]  # duplicate images with different labels: ties by label
    labels[10], labels[20], labels[30] = 7, 2, 5
    order = canonical_order(images, labels)
    assert order.tolist() == reference_order(images, labels)
    tied = [i for i in order if i in (10, 20, 30)]
    assert [labels[i] for i in tied] == [2, 5, 7]


def test_shuffled_copy_of_the_files_loads_to_identical_arrays(tmp_path):
    arrays = write_dataset(tmp_path / "a", n_train=50, n_test=20)
    rng = np.random.default_rng(1)
    b = tmp_path / "b"
    b.mkdir()
    for split in ("train", "test"):
        perm = rng.permutation(len(arrays[f"{split}-labels"]))
        write_idx(b / FILES[f"{split}-images"], arrays[f"{split}-images"][perm])
        write_idx(b / FILES[f"{split}-labels"], arrays[f"{split}-labels"][perm])
    first = load_fashion_mnist(tmp_path / "a", download=False, expected_counts=None)
    second = load_fashion_mnist(b, download=False, expected_counts=None)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert first.fingerprint == second.fingerprint
    # The order is a real reordering, train first then test.
    assert first.is_test.tolist() == [False] * 50 + [True] * 20
    assert not np.array_equal(first.train_images, arrays["train-images"])


@pytest.mark.slow
def test_real_data_shuffled_loads_to_identical_arrays(real_data, tmp_path):
    rng = np.random.default_rng(0)
    for split, imgs, labs in (("train", real_data.train_images, real_data.train_labels),
                              ("test", real_data.test_images, real_data.test_labels)):
        perm = rng.permutation(len(labs))
        write_idx(tmp_path / FILES[f"{split}-images"], imgs[perm])
        write_idx(tmp_path / FILES[f"{split}-labels"], labs[perm])
    shuffled = load_fashion_mnist(tmp_path, download=False)
    np.testing.assert_array_equal(shuffled.images, real_data.images)
    np.testing.assert_array_equal(shuffled.labels, real_data.labels)
    assert shuffled.fingerprint == real_data.fingerprint


def test_real_data_shape_split_and_class_balance(real_data):
    assert real_data.images.shape == (70000, 28, 28) and real_data.images.dtype == np.uint8
    assert real_data.is_test.sum() == 10000 and not real_data.is_test[:60000].any()
    assert np.bincount(real_data.train_labels).tolist() == [6000] * 10
    assert np.bincount(real_data.test_labels).tolist() == [1000] * 10
    assert len(D.CLASS_NAMES) == 10
    # Canonical: item i's SHA-1 is non-decreasing within each split.
    digests = [hashlib.sha1(img.tobytes()).digest() for img in real_data.test_images[:2000]]
    assert digests == sorted(digests)


def test_arrays_are_read_only(real_data):
    with pytest.raises(ValueError):
        real_data.images[0, 0, 0] = 1


# --------------------------------------------------------------------------- folders


def test_data_folder_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("LATENT_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("LATENT_DATA_DIR")
    assert resolve_data_dir() == tmp_path / "xdg" / "latent-explorer" / "fashion-mnist"


def test_decoded_array_cache_is_equal_rebuilt_when_damaged_and_keyed_by_the_files(tmp_path):
    write_dataset(tmp_path / "d", n_train=30, n_test=10)
    cache = tmp_path / "cache"
    cold = load_fashion_mnist(tmp_path / "d", download=False, expected_counts=None, cache_dir=cache)
    (cached_file,) = cache.glob("fashion-mnist-*.npz")
    warm = load_fashion_mnist(tmp_path / "d", download=False, expected_counts=None, cache_dir=cache)
    np.testing.assert_array_equal(warm.images, cold.images)
    assert warm.fingerprint == cold.fingerprint and not warm.images.flags.writeable
    cached_file.write_bytes(cached_file.read_bytes()[:300])  # damaged: rebuilt, not trusted
    again = load_fashion_mnist(tmp_path / "d", download=False, expected_counts=None, cache_dir=cache)
    np.testing.assert_array_equal(again.images, cold.images)
    # One flipped byte inside the image payload, the zip structure intact: the CRC-32 check catches it.
    raw = bytearray(cached_file.read_bytes())
    at = raw.index(cold.images.tobytes()[:64]) + 100
    raw[at] ^= 0xFF
    cached_file.write_bytes(bytes(raw))
    with pytest.raises(zipfile.BadZipFile, match="CRC"), np.load(cached_file) as npz:
        npz["images"]
    flipped = load_fashion_mnist(tmp_path / "d", download=False, expected_counts=None, cache_dir=cache)
    np.testing.assert_array_equal(flipped.images, cold.images)
    assert flipped.fingerprint == cold.fingerprint
    write_idx(tmp_path / "d" / FILES["test-labels"], (cold.test_labels + 1) % 10)  # new content, new key
    changed = load_fashion_mnist(tmp_path / "d", download=False, expected_counts=None, cache_dir=cache)
    assert changed.fingerprint != cold.fingerprint and len(list(cache.glob("fashion-mnist-*.npz"))) == 2
