"""Support for the page tests (AppTest): the app's own resources, and the images a page showed.

AppTest runs the real app script in this process. To assert what the user *sees*, a spy records the
bytes of every media file the page stores (Streamlit's in-memory media storage keys each file by a
hash of its content), so a test can decode the exact PNG that was shown.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from latent import paths
from latent.catalog import Catalog, load_or_build_catalog
from latent.config import Settings
from latent.data import FashionMNIST
from latent.model import VAE, load_checkpoint
from latent.search import SearchIndex

APP = str(paths.REPO_ROOT / "app.py")
TIMEOUT = 600  # the first run of a session may encode the catalog (tens of seconds on 2 cores)


def checkpoint() -> Path:
    return Settings.from_env().checkpoint


@dataclass
class Expected:
    """Independent copies of what the app loads, for computing expected values."""

    model: VAE
    catalog: Catalog
    index: SearchIndex
    data: FashionMNIST


def load_expected(data: FashionMNIST) -> Expected:
    model, _ = load_checkpoint(checkpoint())
    catalog = load_or_build_catalog(model, checkpoint(), data)
    return Expected(model, catalog, SearchIndex().fit(catalog.mu, catalog.sigma), data)


def new_app(page: str | None = None, **params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if params:
        at.query_params.update(params)
    if page:
        at.switch_page(page)
    return at


class MediaSpy:
    """Records every media file Streamlit stores during the test: id -> bytes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.files: dict[str, bytes] = {}
        original = MemoryMediaFileStorage.load_and_get_id
        spy = self

        def recording(storage, path_or_data, mimetype, kind, filename=None):
            file_id = original(storage, path_or_data, mimetype, kind, filename)
            if isinstance(path_or_data, bytes):
                spy.files[file_id] = path_or_data
            return file_id

        monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", recording)

    def pixels(self, url: str) -> np.ndarray:
        """The grayscale pixels of the image behind a media URL, (H, W) uint8."""
        file_id = re.search(r"([0-9a-f]{20,})\.\w+$", url).group(1)
        return np.asarray(Image.open(io.BytesIO(self.files[file_id])).convert("L"))


def image_urls(at: AppTest) -> list[tuple[str, str]]:
    """(caption, url) of every image on the page, in order."""
    return [(img.caption, img.url) for element in at.get("image") for img in element.proto.imgs]


def captions_with(at: AppTest, pattern: str) -> list[tuple[str, str]]:
    return [(caption, url) for caption, url in image_urls(at) if re.search(pattern, caption)]


def param(at: AppTest, key: str) -> str | None:
    """One URL query parameter as the page left it (None when absent)."""
    if key not in at.query_params:
        return None
    value = at.query_params[key]
    return value[-1] if isinstance(value, list) else value


def params(at: AppTest) -> dict[str, str]:
    return {key: param(at, key) for key in at.query_params}


def plotly_array(value) -> np.ndarray:
    """A data array from a plotly figure spec: a plain list, or plotly's base64 typed array."""
    import base64

    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        if shape:
            array = array.reshape([int(v) for v in str(shape).split(",")])
        return array
    return np.asarray(value)
