"""Shared fixtures: the real dataset (when present), tiny synthetic IDX folders, small models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latent.data import (
    FILES,
    FashionMNIST,
    fingerprint_arrays,
    load_fashion_mnist,
    missing_files,
    resolve_data_dir,
    write_idx,
)


def make_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n random uint8 images (n, 28, 28) and labels (n,) in 0..9."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def write_dataset(folder: Path, n_train: int = 40, n_test: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny but well-formed set of the four IDX files; returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    tr_x, tr_y = make_images(n_train, seed)
    te_x, te_y = make_images(n_test, seed + 1)
    arrays = {"train-images": tr_x, "train-labels": tr_y, "test-images": te_x, "test-labels": te_y}
    for key, array in arrays.items():
        write_idx(folder / FILES[key], array)
    return arrays


def small_dataset(n_train: int = 64, n_test: int = 16, seed: int = 0) -> FashionMNIST:
    """An in-memory FashionMNIST of random images, for model and catalog tests."""
    tr_x, tr_y = make_images(n_train, seed)
    te_x, te_y = make_images(n_test, seed + 1)
    images = np.concatenate([tr_x, te_x])
    labels = np.concatenate([tr_y, te_y])
    is_test = np.arange(n_train + n_test) >= n_train
    return FashionMNIST(images, labels, is_test, fingerprint_arrays(images, labels, is_test), Path("."))


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real Fashion-MNIST folder ($LATENT_DATA_DIR); tests that need it skip when it is absent."""
    folder = resolve_data_dir()
    if missing_files(folder):
        pytest.skip(f"Fashion-MNIST not found in {folder}; set LATENT_DATA_DIR (CI uses ../shared/fashion-mnist)")
    return folder


@pytest.fixture(scope="session")
def real_data(real_data_dir: Path) -> FashionMNIST:
    return load_fashion_mnist(real_data_dir, download=False)
