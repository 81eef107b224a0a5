"""latent/catalog.py: encoding, the on-disk cache, and its invalidation."""

from __future__ import annotations

import numpy as np
import torch

from latent.catalog import encode_images, load_or_build_catalog
from latent.model import VAE, save_checkpoint
from tests.conftest import small_dataset


def model_and_checkpoint(tmp_path, seed=0, name="m.pt"):
    torch.manual_seed(seed)
    model = VAE().eval()
    return model, save_checkpoint(model, tmp_path / name)


def test_catalog_matches_the_encoder_and_carries_the_data(tmp_path):
    data = small_dataset()
    model, ckpt = model_and_checkpoint(tmp_path)
    catalog = load_or_build_catalog(model, ckpt, data, cache_dir=tmp_path / "cache")
    with torch.no_grad():
        x = torch.from_numpy(data.images).float().unsqueeze(1) / 255
        mu, logvar = model.encode(x)
    # The catalog encodes through encode_images' own tensors and batches, so the float32 convolutions may
    # sum in another order: a few ulps (1e-7 relative) per layer; rtol 1e-5 is ~100 ulps, atol for mu near 0.
    np.testing.assert_allclose(catalog.mu, mu.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(catalog.sigma, torch.exp(0.5 * logvar).numpy(), rtol=1e-5)
    assert catalog.mu.dtype == catalog.sigma.dtype == np.float32
    assert catalog.mu.shape == (80, 10) and (catalog.sigma > 0).all()
    np.testing.assert_array_equal(catalog.labels, data.labels)
    np.testing.assert_array_equal(catalog.is_test, data.is_test)
    np.testing.assert_array_equal(catalog.index, np.arange(80))


def test_second_call_loads_the_cache(tmp_path):
    data = small_dataset()
    model, ckpt = model_and_checkpoint(tmp_path)
    first = load_or_build_catalog(model, ckpt, data, cache_dir=tmp_path)
    second = load_or_build_catalog(model, ckpt, data, cache_dir=tmp_path)
    assert first.built and not second.built and first.path == second.path
    np.testing.assert_array_equal(first.mu, second.mu)


def test_cache_is_invalidated_when_the_checkpoint_changes(tmp_path):
    data = small_dataset()
    model, ckpt = model_and_checkpoint(tmp_path, seed=0)
    first = load_or_build_catalog(model, ckpt, data, cache_dir=tmp_path)
    other, _ = model_and_checkpoint(tmp_path, seed=1)  # overwrite the same file with new weights
    second = load_or_build_catalog(other, ckpt, data, cache_dir=tmp_path)
    assert second.built and second.key != first.key
    assert not np.allclose(first.mu, second.mu)
    np.testing.assert_allclose(second.mu, encode_images(other, data.images)[0])


def test_cache_is_invalidated_when_the_data_changes(tmp_path):
    model, ckpt = model_and_checkpoint(tmp_path)
    first = load_or_build_catalog(model, ckpt, small_dataset(seed=0), cache_dir=tmp_path)
    second = load_or_build_catalog(model, ckpt, small_dataset(seed=5), cache_dir=tmp_path)
    assert second.built and second.key != first.key


def test_corrupt_cache_is_rebuilt(tmp_path):
    data = small_dataset()
    model, ckpt = model_and_checkpoint(tmp_path)
    first = load_or_build_catalog(model, ckpt, data, cache_dir=tmp_path)
    first.path.write_bytes(first.path.read_bytes()[:200])
    again = load_or_build_catalog(model, ckpt, data, cache_dir=tmp_path)
    assert again.built
    # The same model, images and batches in one process run the same kernels: the rebuild repeats the first
    # build bit for bit (a different batch or thread count would need a tolerance).
    np.testing.assert_array_equal(again.mu, first.mu)
    assert not load_or_build_catalog(model, ckpt, data, cache_dir=tmp_path).built
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_stale_cache_under_the_same_name_is_rebuilt(tmp_path):
    data = small_dataset()
    model, ckpt = model_and_checkpoint(tmp_path)
    first = load_or_build_catalog(model, ckpt, data, cache_dir=tmp_path)
    with np.load(first.path) as npz:
        arrays = dict(npz)
    arrays["key"] = np.array("something else")
    np.savez(first.path, **arrays)
    assert load_or_build_catalog(model, ckpt, data, cache_dir=tmp_path).built


def test_progress_callback_reaches_the_total(tmp_path):
    data = small_dataset()
    model, ckpt = model_and_checkpoint(tmp_path)
    seen = []
    load_or_build_catalog(model, ckpt, data, cache_dir=tmp_path, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (80, 80)


def test_a_matching_shipped_catalog_is_used_and_a_foreign_one_ignored(tmp_path):
    from latent.catalog import save_catalog

    data = small_dataset()
    model, ckpt = model_and_checkpoint(tmp_path)
    built = load_or_build_catalog(model, ckpt, data, cache_dir=tmp_path / "a", shipped=None)
    shipped = save_catalog(built, tmp_path / "shipped.npz")
    used = load_or_build_catalog(model, ckpt, data, cache_dir=tmp_path / "b", shipped=shipped)
    assert not used.built and used.path == shipped
    np.testing.assert_array_equal(used.mu, built.mu)
    other, other_ckpt = model_and_checkpoint(tmp_path, seed=3, name="other.pt")
    rebuilt = load_or_build_catalog(other, other_ckpt, data, cache_dir=tmp_path / "b", shipped=shipped)
    assert rebuilt.built and rebuilt.path != shipped
