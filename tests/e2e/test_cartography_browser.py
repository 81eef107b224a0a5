"""The Cartography page in real headless Chromium: the magnification map, a computed geodesic, a screenshot."""

from __future__ import annotations

import urllib.parse

import pytest

from tests.e2e.conftest import save_screenshot
from tests.e2e.test_browser import wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: A dress and a shirt: their geodesic bends visibly away from the straight latent line.
QUERY_ITEM, TARGET_ITEM = 17444, 32003


def test_cartography_shows_the_map_the_garments_and_a_geodesic(server, page):
    page.goto(f"{server}/")  # open the app first, as a visitor would, then go to the page
    wait_idle(page)
    page.goto(f"{server}/cartography?item={QUERY_ITEM}&target={TARGET_ITEM}")
    wait_idle(page)
    page.get_by_text("Cartography of the latent space").wait_for(state="visible")
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 2")
    heat = page.evaluate("() => document.querySelector('.js-plotly-plot').data[0].type")
    assert heat == "heatmap"

    page.get_by_role("button", name="Compute the geodesic").click()
    page.get_by_text("Geodesic (constant decoded speed)").wait_for(state="visible", timeout=120_000)
    wait_idle(page)
    names = page.evaluate("() => document.querySelector('.js-plotly-plot').data.map(t => t.name || '')")
    assert any(n.startswith("geodesic") for n in names)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(page.url).query))
    assert query["item"] == str(QUERY_ITEM) and query["target"] == str(TARGET_ITEM)

    page.locator('[data-testid="stMain"]').evaluate("el => el.scrollTo(0, 0)")
    page.mouse.wheel(0, -5000)
    page.mouse.move(800, 40)  # away from the charts and the sidebar, so no toolbar or hover label shows
    page.wait_for_timeout(800)
    save_screenshot(page, "cartography")
