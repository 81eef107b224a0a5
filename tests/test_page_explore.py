"""The Explore page (AppTest): what the user sees equals independent computations."""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from latent.data import CLASS_NAMES
from latent.model import decode_images
from latent.render import to_uint8, upscale
from tests.apptest_support import MediaSpy, captions_with, load_expected, new_app, param, params

PAGE = "pages/explore.py"
SCORES_SHOWN = ("likelihood", "euclidean", "kl")


@pytest.fixture(scope="module")
def expected(real_data):
    return load_expected(real_data)


@pytest.fixture
def media(monkeypatch):
    return MediaSpy(monkeypatch)


def query_z(at) -> np.ndarray:
    return np.array([float(v) for v in param(at, "z").split(",")], np.float32)


def assert_same_picture(shown: np.ndarray, reference: np.ndarray) -> None:
    """The page decodes in numpy, the reference in torch: float32 rounding may move a grey level by one
    where a pixel sits on a rounding boundary, and nowhere by more."""
    assert shown.shape == reference.shape
    diff = np.abs(shown.astype(np.int16) - reference.astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())


def galleries(at) -> dict[str, list[int]]:
    """Item numbers in each neighbour gallery, in the order shown (captions 'Class #item · value')."""
    captions = [c for c, _ in captions_with(at, r"#\d+ · ")]
    k = len(captions) // len(SCORES_SHOWN)
    items = [int(re.search(r"#(\d+)", c).group(1)) for c in captions]
    return {name: items[i * k : (i + 1) * k] for i, name in enumerate(SCORES_SHOWN)}


def test_decoded_image_is_the_decoder_mean_and_follows_the_sliders(expected, media):
    at = new_app(PAGE).run()
    assert not at.exception
    (_, url), = captions_with(at, "Decoded garment")
    z0 = query_z(at)
    np.testing.assert_array_equal(z0, np.zeros(10, np.float32))
    reference = upscale(to_uint8(decode_images(expected.model, z0)), 12)
    assert_same_picture(media.pixels(url), reference)

    at.slider(key="w_z0").set_value(2.5).run()
    at.slider(key="w_z3").set_value(-1.25).run()
    (_, url2), = captions_with(at, "Decoded garment")
    z1 = query_z(at)
    assert z1[0] == 2.5 and z1[3] == -1.25
    assert url2 != url
    assert_same_picture(media.pixels(url2), upscale(to_uint8(decode_images(expected.model, z1)), 12))


@pytest.mark.parametrize("k, spread", [(8, None), (3, 0.01), (13, 1.0)])
def test_neighbour_galleries_equal_the_search_index(expected, k, spread):
    z = "0.5,-1,1.5,0,0.25,-0.5,0,0,1,-2"
    at = new_app(PAGE, z=z, k=str(k)).run()
    if spread is not None:
        at.select_slider(key="w_spread").set_value(spread).run()
    assert not at.exception
    zq = query_z(at)
    shown = galleries(at)
    for name in SCORES_SHOWN:
        items, _values = expected.index.search(zq, score=name, k=k, s=spread)
        assert shown[name] == items.tolist(), name
    captions = [c for c, _ in captions_with(at, r"#\d+ · ")]
    first = captions[0]
    assert first.startswith(CLASS_NAMES[int(expected.catalog.labels[shown["likelihood"][0]])])


def test_rankings_csv_download_matches_the_galleries(expected, media):
    at = new_app(PAGE, z="1,1,1,1,1,0,0,0,0,0", k="5").run()
    button = next(b for b in at.get("download_button") if b.proto.label.startswith("Download rankings"))
    frame = pd.read_csv(io.BytesIO(media.files[re.search(r"([0-9a-f]{20,})\.\w+$", button.proto.url).group(1)]))
    zq = query_z(at)
    for name in SCORES_SHOWN:
        rows = frame[frame["score"] == name]
        items, values = expected.index.search(zq, score=name, k=5)
        assert rows["item"].tolist() == items.tolist()
        np.testing.assert_allclose(rows["value"].to_numpy(), values, rtol=1e-9)


def test_starting_from_an_item_shows_original_and_reconstruction(expected, media):
    item = 61234
    at = new_app(PAGE).run()
    at.number_input(key="w_item").set_value(item).run()
    at.button(key="btn_item").click().run()
    np.testing.assert_array_equal(query_z(at), expected.catalog.mu[item])
    assert param(at, "item") == str(item)
    (_, original), = captions_with(at, "^Original")
    (_, recon), = captions_with(at, "^Reconstruction")
    np.testing.assert_array_equal(media.pixels(original), upscale(expected.data.images[item], 6))
    decoded = to_uint8(decode_images(expected.model, expected.catalog.mu[item]))
    assert_same_picture(media.pixels(recon), upscale(decoded, 6))
    # Moving a slider leaves the item: z is no longer its mean.
    at.slider(key="w_z1").set_value(0.0).run()
    assert "item" not in at.query_params


def test_a_link_round_trips_exactly(expected):
    item = 4321
    first = new_app(PAGE, item=str(item), k="11", score="kl").run()
    link = params(first)
    np.testing.assert_array_equal(query_z(first), expected.catalog.mu[item])  # bit for bit
    second = new_app(PAGE, **link).run()
    assert not second.warning
    assert params(second) == link
    assert [second.slider(key=f"w_z{j}").value for j in range(10)] == [float(v) for v in expected.catalog.mu[item]]
    assert second.slider(key="w_k").value == 11


def test_random_draw_is_reproduced_by_its_seed(expected):
    at = new_app(PAGE).run()
    at.button(key="btn_random").click().run()
    seed = int(param(at, "seed"))
    reference = np.clip(np.random.default_rng(seed).standard_normal(10), -5, 5).astype(np.float32)
    np.testing.assert_array_equal(query_z(at), reference)
    at.button(key="btn_origin").click().run()
    assert "seed" not in at.query_params and query_z(at).tolist() == [0.0] * 10


def test_class_button_starts_from_an_item_of_that_class(expected):
    at = new_app(PAGE).run()
    at.selectbox(key="w_class").set_value(7).run()
    at.button(key="btn_class").click().run()
    item = int(param(at, "item"))
    assert expected.catalog.labels[item] == 7


def test_unused_dimensions_are_marked(expected):
    at = new_app(PAGE).run()
    with torch.no_grad():
        mu = torch.tensor(expected.catalog.mu, dtype=torch.float64)
        sigma = torch.tensor(expected.catalog.sigma, dtype=torch.float64)
        kl = kl_divergence(Normal(mu, sigma), Normal(0.0, 1.0)).mean(0)
    labels = [at.slider(key=f"w_z{j}").label for j in range(10)]
    assert [("unused" in label) for label in labels] == [bool(v <= 0.01) for v in kl]


BAD_LINKS = {
    "nan in z": ({"z": "nan,0,0,0,0,0,0,0,0,0"}, "z[0]"),
    "inf in z": ({"z": "0,inf,0,0,0,0,0,0,0,0"}, "z[1]"),
    "z too short": ({"z": "1,2,3"}, "z"),
    "z out of range": ({"z": "0,0,0,0,0,0,0,0,0,99"}, "clamped"),
    "text in z": ({"z": "a,b,c,d,e,f,g,h,i,j"}, "z[0]"),
    "unknown score": ({"score": "cosine"}, "cosine"),
    "negative k": ({"k": "-4"}, "k"),
    "huge k": ({"k": "100000"}, "k"),
    "negative s": ({"s": "-1"}, "s"),
    "item out of range": ({"item": "70000"}, "item"),
    "bad seed": ({"seed": "abc"}, "seed"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINKS))
def test_each_bad_link_value_gives_a_warning_and_no_exception(expected, case):
    link, mention = BAD_LINKS[case]
    at = new_app(PAGE, **link).run()
    assert not at.exception
    assert len(at.warning) == 1 and mention in at.warning[0].value
    z = query_z(at)
    assert len(z) == 10 and np.isfinite(z).all() and (np.abs(z) <= 5.5).all()
    at.run()  # shown once per session
    assert not at.warning


def test_the_spread_of_a_link_is_prepared_before_the_page_queries(monkeypatch, expected):
    """A page builds the features of its spread before its first query there (behind a spinner), and
    never rebuilds a spread that is ready."""
    import ui.page
    from latent.search import SearchIndex
    from ui.resources import prepare_spread

    asked: list[float | None] = []
    monkeypatch.setattr(ui.page, "prepare_spread", lambda index, s: (asked.append(s), prepare_spread(index, s)))
    at = new_app(PAGE, s="0.3").run()
    assert not at.exception
    assert asked and asked[-1] == pytest.approx(0.3)

    index = SearchIndex().fit(expected.catalog.mu[:500], expected.catalog.sigma[:500]).prepare()
    assert not index.is_prepared(0.3)
    prepare_spread(index, 0.3)  # outside a script run the spinner is skipped
    assert index.is_prepared(0.3)
    builds: list[object] = []
    monkeypatch.setattr(SearchIndex, "prepare", lambda self, *a, **k: builds.append(a))
    prepare_spread(index, 0.3)
    assert builds == []
