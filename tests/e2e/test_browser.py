"""End to end in real headless Chromium against ``streamlit run``: what a user does and sees."""

from __future__ import annotations

import re
import urllib.parse

import numpy as np
import pytest

from latent.urlstate import format_float32
from tests.e2e.conftest import save_screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MAIN = '[data-testid="stMain"]'


def wait_idle(page, timeout: float = 120_000) -> None:
    """Wait until a run has finished: the app writes the full query (with ``score=``) into the URL at
    the end of every run, and Streamlit's running indicator is gone."""
    page.wait_for_function(
        "() => location.search.includes('score=')"
        " && !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)
    page.wait_for_timeout(300)


def decoded_src(page) -> str:
    image = page.locator('[data-testid="stImage"]').filter(has_text="Decoded garment").locator("img")
    image.wait_for(state="visible")
    return image.get_attribute("src")


def wait_for_new_image(page, old_src: str, timeout: float = 60_000) -> None:
    page.wait_for_function(
        """old => [...document.querySelectorAll('[data-testid="stImage"] img')].some(
               img => img.closest('[data-testid="stImage"]').innerText.includes('Decoded garment') && img.src !== old
               && !img.src.endsWith(old))""", arg=old_src, timeout=timeout)


def gallery_captions(page) -> list[str]:
    """Every neighbour caption ('Class #item · value') on the page, in order."""
    texts = page.locator(f'{MAIN} [data-testid="stImage"]').filter(has_text=re.compile(r"#\d+ · ")).all_inner_texts()
    return [line.strip() for text in texts for line in text.split("\n") if re.search(r"#\d+ · ", line)]


def url_params(page) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlparse(page.url).query))


def test_explore_slider_changes_the_image_and_the_neighbours(server, page):
    page.goto(f"{server}/?z=0,0,0,0,0,0,0,0,0,0&k=6")
    wait_idle(page)
    before_src, before_neighbours = decoded_src(page), gallery_captions(page)
    assert len(before_neighbours) == 18  # 3 scores x k
    save_screenshot(page, "explore")

    slider = page.locator('input[type="range"][aria-label="z0"]')
    slider.focus()
    slider.press("End")  # z0 to the top of its range
    page.wait_for_function("() => new URLSearchParams(location.search).get('z').startsWith('5.5')", timeout=60_000)
    wait_for_new_image(page, before_src)
    wait_idle(page)
    after_src = decoded_src(page)
    assert after_src != before_src
    assert gallery_captions(page) != before_neighbours
    assert float(url_params(page)["z"].split(",")[0]) > 4.9


def test_atlas_shows_the_map_and_a_click_sets_the_query(server, page, real_data):
    page.goto(f"{server}/atlas?z=0,0,0,0,0,0,0,0,0,0")
    wait_idle(page)
    plot = page.locator(".js-plotly-plot").first
    plot.wait_for(state="visible")
    page.wait_for_function("() => document.querySelector('.js-plotly-plot canvas') !== null")
    info = page.evaluate(
        """() => {
            const gd = document.querySelector('.js-plotly-plot');
            const classes = gd._fullData.filter(t => !t.name.startsWith('top-') && t.name !== 'query z');
            return {points: classes.reduce((s, t) => s + t.x.length, 0), types: gd._fullData.map(t => t.type),
                    webgl: !!gd.querySelector('canvas')};
        }""")
    assert info["points"] == 70000 and set(info["types"]) == {"scattergl"} and info["webgl"]
    save_screenshot(page, "atlas")

    # Click on one catalog point: find where plotly draws it, and which points lie under the cursor.
    target = page.evaluate(
        """() => {
            const gd = document.querySelector('.js-plotly-plot');
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
            const trace = gd._fullData[8];  // one class trace (Bag)
            const i = Math.floor(trace.x.length / 2);
            const px = xa.l2p(trace.x[i]) + xa._offset, py = ya.l2p(trace.y[i]) + ya._offset;
            const near = [];
            gd._fullData.slice(0, 10).forEach(t => { for (let j = 0; j < t.x.length; j++) {
                const dx = xa.l2p(t.x[j]) + xa._offset - px, dy = ya.l2p(t.y[j]) + ya._offset - py;
                if (dx * dx + dy * dy <= 36) near.push(Number(t.customdata[j])); } });
            return {px, py, near};
        }""")
    box = plot.bounding_box()
    page.mouse.move(box["x"] + target["px"], box["y"] + target["py"])
    page.wait_for_timeout(500)
    page.mouse.click(box["x"] + target["px"], box["y"] + target["py"])
    page.wait_for_function("() => location.search.includes('item=')", timeout=60_000)
    wait_idle(page)
    item = int(url_params(page)["item"])
    assert item in target["near"], "the query is not the clicked point"

    # Explore follows: the sliders now hold that item's mean.
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Explore", exact=True).click()
    page.get_by_text(f"Item #{item}").wait_for(state="visible")
    page.wait_for_function(
        "item => { const p = new URLSearchParams(location.search); return p.get('item') === item && p.has('z'); }",
        arg=str(item), timeout=60_000)
    from tests.apptest_support import load_expected

    mu = load_expected(real_data).catalog.mu[item]
    assert url_params(page)["z"] == ",".join(format_float32(v) for v in mu)
    assert np.array_equal(np.array(url_params(page)["z"].split(","), np.float32), mu)


def test_compare_page_renders(server, page):
    page.goto(f"{server}/compare?z=1,0,0,0,0,0,0,0,0,0&k=8")
    wait_idle(page)
    page.get_by_text("How much do the rankings agree?").wait_for(state="visible")
    page.get_by_text("Why they differ").scroll_into_view_if_needed()
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length === 3", timeout=60_000)
    page.mouse.wheel(0, -10_000)
    save_screenshot(page, "compare")


def test_a_deep_link_is_the_first_request_to_a_fresh_server(page, real_data_dir, tmp_path):
    """Shared links must work even when nobody has opened the app's root on this server yet."""
    from tests.e2e.conftest import free_port, start_server, wait_healthy

    port = free_port()
    process = start_server(port, log=tmp_path / "streamlit.log")
    try:
        wait_healthy(port, process)
        page.goto(f"http://127.0.0.1:{port}/compare?z=1,0,0,0,0,0,0,0,0,0&k=5")
        wait_idle(page)
        page.get_by_text("Compare the scores").wait_for(state="visible")
        nav = page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()
        expected = ["Explore", "Atlas", "Compare", "Cartography", "Learn", "Model"]
        assert [text.strip().split("\n")[-1] for text in nav] == expected
        assert url_params(page)["k"] == "5" and url_params(page)["z"].startswith("1,")
        assert "Compare" in page.title()
    finally:
        process.terminate()
        process.wait(timeout=20)
