"""ui/serve.py and ui.resources.preload: the server process loads the resources before its first visit."""

from __future__ import annotations

from latent.search import SearchIndex
from ui import resources


def test_preload_leaves_missing_data_to_the_first_page(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_DATA_DIR", str(tmp_path))  # an empty folder: the page downloads with progress
    assert resources.preload() is False
    assert list(tmp_path.iterdir()) == []  # nothing was downloaded or written there


def test_preload_leaves_a_bad_setting_to_the_first_page(monkeypatch):
    monkeypatch.setenv("LATENT_TORCH_THREADS", "many")
    assert resources.preload() is False


def test_preload_fills_the_caches_that_the_pages_read(real_data_dir, monkeypatch):
    monkeypatch.setenv("LATENT_DATA_DIR", str(real_data_dir))
    assert resources.preload() is True
    fits: list[int] = []
    original = SearchIndex.fit
    monkeypatch.setattr(SearchIndex, "fit", lambda self, *a, **k: (fits.append(1), original(self, *a, **k))[1])
    assert resources.preload() is True  # everything came from the caches: no index was fitted again
    assert fits == []
