"""The Learn page and presentation mode in real headless Chromium, with screenshots for the README."""

from __future__ import annotations

import urllib.parse

import pytest

from tests.e2e.conftest import save_screenshot
from tests.e2e.test_browser import wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def open_view(page, server: str, path: str) -> None:
    """Open a link the way a user does, and wait for the run to finish."""
    page.goto(f"{server}/{path}")
    wait_idle(page)


def url_params(page) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlparse(page.url).query))


def plot_traces(page, key: str) -> list[dict]:
    """Name and meta of every trace of the plotly chart whose Streamlit key is ``key``."""
    return page.evaluate(
        """key => {
            const box = document.querySelector(`.st-key-${key} .js-plotly-plot`);
            return box ? box.data.map(t => ({name: t.name, meta: t.meta || null})) : null;
        }""", key)


def test_learn_page_walks_the_steps(server, page):
    open_view(page, server, "learn?item=4242")
    page.get_by_text("Encoding: an item becomes a Gaussian").first.wait_for(state="visible")
    page.locator(".js-plotly-plot").first.wait_for(state="visible")
    page.wait_for_timeout(800)
    save_screenshot(page, "learn")

    page.get_by_role("button", name="The reparameterisation trick →").click()
    page.wait_for_function("() => location.search.includes('step=reparam')")

    open_view(page, server, "learn?item=4242&step=uncertainty&k=5&cover=1")
    page.wait_for_function("() => document.querySelector('.st-key-learn_map .js-plotly-plot') !== null")
    page.wait_for_timeout(800)
    traces = plot_traces(page, "learn_map")
    ellipses = [t for t in traces if (t["meta"] or {}).get("what") == "ellipse"]
    assert len(ellipses) == 10
    assert {" · ".join(t["name"].split(" · ")[-2:]) for t in ellipses} == {"1σ · 39%", "2σ · 86%"}
    save_screenshot(page, "learn-uncertainty")


def test_presentation_mode_hides_the_controls_and_enlarges_the_pictures(server, page):
    open_view(page, server, "?item=4242&k=6&present=1")
    image = page.locator('[data-testid="stImage"]').filter(has_text="Decoded garment").locator("img")
    image.wait_for(state="visible")
    page.wait_for_timeout(500)
    sidebar = page.locator('[data-testid="stSidebar"]')
    assert sidebar.count() == 0 or not sidebar.is_visible()
    assert page.locator('input[type="range"]').count() == 0, "no sliders in presentation mode"
    assert image.evaluate("img => img.getBoundingClientRect().width") >= 440
    body_px = page.locator('[data-testid="stMain"] [data-testid="stMarkdownContainer"] p').first.evaluate(
        "p => parseFloat(getComputedStyle(p).fontSize)")
    assert body_px >= 22, f"text for a projector must be large; got {body_px}px"
    save_screenshot(page, "present")

    open_view(page, server, "learn?item=4242&step=uncertainty&k=5&present=1")
    page.wait_for_function("() => document.querySelector('.st-key-learn_map .js-plotly-plot') !== null")
    page.wait_for_timeout(800)
    save_screenshot(page, "present-learn")

    page.get_by_role("button", name="Exit presentation").click()
    page.wait_for_function("() => !location.search.includes('present=')")
    wait_idle(page)
    assert page.locator('[data-testid="stSidebar"]').is_visible()
    assert url_params(page)["step"] == "uncertainty"
