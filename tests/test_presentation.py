"""Presentation mode (ui/presentation.py, AppTest): a URL key that round-trips, no controls, large pictures."""

from __future__ import annotations

import numpy as np
import pytest

from latent.model import decode_images
from latent.render import to_uint8, upscale
from tests.apptest_support import MediaSpy, captions_with, load_expected, new_app, param, params

CONTROLS = ("slider", "select_slider", "selectbox", "number_input", "radio", "toggle", "text_input", "checkbox")


@pytest.fixture(scope="module")
def expected(real_data):
    return load_expected(real_data)


def controls(at) -> list[str]:
    return [f"{kind}:{w.key}" for kind in CONTROLS for w in getattr(at, kind)]


@pytest.mark.parametrize("page, extra", [
    ("pages/learn.py", {"step": "uncertainty", "axes": "0,2", "cover": "1", "level": "0.9"}),
    ("pages/explore.py", {"k": "5", "s": "0.1"}),
    ("pages/compare.py", {"k": "4"}),
])
def test_presentation_mode_round_trips_through_the_link(page, extra):
    first = new_app(page, item="4321", present="1", **extra).run()
    assert not first.exception and not first.warning
    link = params(first)
    assert link["present"] == "1" and all(link[key] == value for key, value in extra.items())
    second = new_app(page, **link).run()
    assert not second.warning
    assert params(second) == link
    assert controls(second) == [], "presentation mode must not draw controls"
    assert [b.key for b in second.button if b.key == "btn_present_exit"] == ["btn_present_exit"]
    styles = [h.proto.body for h in second.get("html")]
    assert any('[data-testid="stSidebar"]' in css and "display: none" in css for css in styles)


def test_the_switch_turns_it_on_and_the_exit_button_off():
    at = new_app("pages/learn.py", step="prior").run()
    assert controls(at), "the normal page has controls"
    assert at.sidebar.toggle(key="w_present").value is False
    at.sidebar.toggle(key="w_present").set_value(True).run()
    assert param(at, "present") == "1" and param(at, "step") == "prior"
    assert controls(at) == []
    at.button(key="btn_present_exit").click().run()
    assert param(at, "present") is None
    assert at.sidebar.toggle(key="w_present").value is False and controls(at)
    # present=0 is the default, so it is not written back
    assert param(new_app("pages/learn.py", present="0").run(), "present") is None


def test_explore_shows_a_larger_garment_when_presenting(expected, monkeypatch):
    media = MediaSpy(monkeypatch)
    z = "1,0.5,0,0,0,0,0,0,0,-1"
    at = new_app("pages/explore.py", z=z, present="1").run()
    (_, url), = captions_with(at, "Decoded garment")
    zq = np.array([float(v) for v in param(at, "z").split(",")], np.float32)
    # The page decodes with the numpy decoder, the reference with torch: their float32 means agree
    # within 1e-4 (tests/test_numpy_decoder.py), far below half a grey level (1/510), so a level that
    # sits at a rounding boundary of x * 255 may round to its neighbour; no pixel can be off by more.
    shown = media.pixels(url).astype(np.int16)
    reference = upscale(to_uint8(decode_images(expected.model, zq)), 16).astype(np.int16)
    assert shown.shape == reference.shape
    assert np.abs(shown - reference).max() <= 1
    assert media.pixels(url).shape == (448, 448)
    normal = new_app("pages/explore.py", z=z).run()
    (_, url), = captions_with(normal, "Decoded garment")
    assert media.pixels(url).shape == (336, 336)


def test_cartography_keeps_its_keys_and_hides_the_sidebar_when_presenting():
    at = new_app("pages/cartography.py", present="1", dims="0,2", measure="bernoulli_kl").run()
    assert not at.exception and not at.warning
    link = params(at)
    assert (link["present"], link["dims"], link["measure"]) == ("1", "0,2", "bernoulli_kl")
    styles = [h.proto.body for h in at.get("html")]
    assert any('[data-testid="stSidebar"]' in css and "display: none" in css for css in styles)


def test_cartography_draws_no_controls_when_presenting():
    normal = new_app("pages/cartography.py", view="map", weight="mf").run()
    presenting = new_app("pages/cartography.py", present="1", view="map", weight="mf").run()
    assert not presenting.exception
    controls = ("selectbox", "number_input", "radio", "toggle", "slider", "select_slider")
    assert sum(len(normal.get(kind)) for kind in controls) > 0  # the page does have controls
    assert sum(len(presenting.get(kind)) for kind in controls) == 0
    labels = [b.label for b in presenting.button]
    assert labels == ["Exit presentation"], labels
    assert [c for c in presenting.get("plotly_chart") if c.proto.id.endswith("carto_heatmap")]  # the pictures stay
