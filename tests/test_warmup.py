"""latent/warmup.py: the set-up step fills the cache folder when the dataset is local, and says why not."""

from __future__ import annotations

from dataclasses import replace

from latent import warmup
from latent.catalog import file_sha256
from latent.config import Settings
from latent.numpy_decoder import NumpyDecoder, cache_file


def test_without_a_local_dataset_nothing_is_cached_and_it_says_so(tmp_path):
    settings = replace(Settings.from_env({}), data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    said: list[str] = []
    warmup._prepare_caches(settings, said.append)
    assert any("no dataset" in line and "downloads it" in line for line in said)
    assert not (tmp_path / "cache").exists()


def test_with_a_local_dataset_the_decoded_copy_and_the_decoder_are_cached(real_data_dir, tmp_path):
    settings = replace(Settings.from_env({}), data_dir=real_data_dir, cache_dir=tmp_path / "cache")
    said: list[str] = []
    warmup._prepare_caches(settings, said.append)
    names = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert any(n.startswith("fashion-mnist-") and n.endswith(".npz") for n in names), names
    sha = file_sha256(settings.checkpoint)
    assert NumpyDecoder.load(cache_file(settings.cache_dir, sha), sha) is not None  # a valid decoder file
    assert any("cached in" in line for line in said)
