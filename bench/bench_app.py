"""Dashboard performance: rerun latency, browser latency (1 and 5 sessions), start-up, and the Atlas.

    LATENT_DATA_DIR=../shared/fashion-mnist .venv/bin/python bench/bench_app.py [--quick] [--out FILE]

Prints one Markdown table from a single run on this machine, with a baseline in the same run:

- server-side rerun after a slider change on Explore (AppTest: the page script plus Streamlit's
  element serialisation), against a naive rerun that reloads the catalog and refits the search
  index every time (what an app without ``st.cache_resource`` would do);
- in real headless Chromium against ``streamlit run``: time from a slider key press to the updated
  page (the new z in the URL, which the app writes at the end of the run, and the new image shown),
  with 1 and with 5 concurrent browser sessions;
- start-up, from ``streamlit run`` to the first usable page (decoded garment visible), for a fresh
  clone with the shipped artefacts and an empty cache, and for a warm restart;
- the Atlas: navigation to the WebGL map until all 70,000 points are drawn.

Timings are medians; the machine is described in the output. Nothing here is asserted: these are
measurements, reported in the README.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from latent.io import write_text_atomic  # noqa: E402
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, free_port, start_server, wait_healthy  # noqa: E402

DECODED = ("[...document.querySelectorAll('[data-testid=\"stImage\"]')]"
           ".find(e => e.innerText.includes('Decoded garment'))")

#: The pages in menu order, as (title, URL path); the query in the link is the same for every page.
PAGES = (("Explore", ""), ("Atlas", "atlas"), ("Compare", "compare"), ("Cartography", "cartography"),
         ("Learn", "learn"), ("Model", "model"))
#: A page is shown when its script run has ended and its title is on screen.
PAGE_SHOWN = ("() => document.querySelector('[data-testid=\"stApp\"][data-test-script-state=\"notRunning\"]')"
              " && document.querySelector('[data-testid=\"stMain\"] h1')")


def machine() -> str:
    import torch

    from bench.machine import cpu_model

    cpu = cpu_model()
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}"


def median_ms(values: list[float]) -> float:
    return 1000.0 * statistics.median(values)


# --------------------------------------------------------------------------- server side


def bench_rerun(n: int) -> tuple[float, float]:
    """Median seconds of the Explore script after a slider change (the server-side rerun, as timed by
    ``ui.timing`` around the page), and the same plus what an app without ``st.cache_resource``
    would redo on every rerun (decode the dataset, load the catalog, fit the search index)."""
    from streamlit.testing.v1 import AppTest

    from latent.catalog import load_or_build_catalog
    from latent.data import load_fashion_mnist
    from latent.model import load_checkpoint
    from latent.search import SearchIndex
    from ui import timing
    from ui.resources import checkpoint_path

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600).run()
    for i in range(n + 3):
        at.slider(key="w_z0").set_value(round(-2.0 + 4.0 * (i % 7) / 6, 2)).run()
    assert not at.exception, at.exception
    script = timing.recent("Explore")[-n:]  # the warm reruns
    naive = []
    for _ in range(max(3, n // 6)):
        started = time.perf_counter()
        data = load_fashion_mnist(download=False)
        model, _ = load_checkpoint(checkpoint_path())
        catalog = load_or_build_catalog(model, checkpoint_path(), data)
        SearchIndex().fit(catalog.mu, catalog.sigma)
        naive.append(time.perf_counter() - started)
    return statistics.median(script), statistics.median(script) + statistics.median(naive)


def server_script_ms(log: Path, since: int) -> list[float]:
    """Script times the server logged (``LATENT_LOG_TIMING=1``) for Explore, from line ``since`` on."""
    lines = log.read_text().splitlines()[since:]
    return [float(line.rsplit("ms=", 1)[1]) for line in lines if "latent-timing page='Explore'" in line]


# --------------------------------------------------------------------------- browser


async def slider_latencies(url: str, sessions: int, moves: int) -> list[float]:
    """Seconds from a key press on slider z0 to the updated page, for ``sessions`` pages at once."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        pages = []
        for _ in range(sessions):
            context = await browser.new_context(viewport={"width": 1500, "height": 1000})
            page = await context.new_page()
            page.set_default_timeout(120_000)
            await page.goto(f"{url}/?z=0,0,0,0,0,0,0,0,0,0&k=8")
            await page.wait_for_function("() => location.search.includes('score=')")
            await page.wait_for_function(f"() => {{ const e = {DECODED}; return e && e.querySelector('img'); }}")
            pages.append(page)

        async def drive(page) -> list[float]:
            slider = page.locator('input[type="range"][aria-label="z0"]')
            await slider.focus()
            out = []
            for i in range(moves):
                before_url = page.url
                before_src = await page.evaluate(f"() => {DECODED}.querySelector('img').src")
                started = time.perf_counter()
                await slider.press("PageUp" if (i // 3) % 2 == 0 else "PageDown")
                await page.wait_for_function(
                    f"([u, s]) => location.href !== u && {DECODED}.querySelector('img').src !== s",
                    arg=[before_url, before_src], polling="raf")
                out.append(time.perf_counter() - started)
                await page.wait_for_timeout(50)
            return out

        results = await asyncio.gather(*(drive(p) for p in pages))
        await browser.close()
    return [t for per_page in results[:] for t in per_page[1:]]  # drop each page's first move (warm-up)


async def atlas_seconds(url: str) -> float:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1500, "height": 1000})
        page.set_default_timeout(120_000)
        await page.goto(f"{url}/?z=0,0,0,0,0,0,0,0,0,0")
        await page.wait_for_function("() => location.search.includes('score=')")
        started = time.perf_counter()
        await page.goto(f"{url}/atlas?z=0,0,0,0,0,0,0,0,0,0")
        await page.wait_for_function(
            """() => { const gd = document.querySelector('.js-plotly-plot');
                       if (!gd || !gd._fullData || !gd.querySelector('canvas')) return false;
                       return gd._fullData.slice(0, 10).reduce((s, t) => s + t.x.length, 0) === 70000; }""",
            polling="raf")
        seconds = time.perf_counter() - started
        await browser.close()
    return seconds


async def first_usable_seconds(url: str, started: float | None = None) -> float:
    """From ``started`` (default: the moment the browser, already open, asks for the page) until the
    decoded garment is visible and the page's script has finished (the neighbours are shown too)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1500, "height": 1000})
        page.set_default_timeout(180_000)
        if started is None:
            started = time.perf_counter()
        while True:
            try:
                await page.goto(url)
                break
            except Exception:
                await asyncio.sleep(0.1)
        await page.wait_for_function(f"() => {{ const e = {DECODED}; return e && e.querySelector('img')"
                                     f" && e.querySelector('img').complete && ({PAGE_SHOWN})(); }}", polling="raf")
        seconds = time.perf_counter() - started
        await browser.close()
    return seconds


def bench_startup(clone: Path, cache: Path) -> float:
    """What ``scripts/app.sh`` runs once the venv exists: compile the bytecode, then ``streamlit run``."""
    port = free_port()
    started = time.perf_counter()
    env = {"LATENT_CACHE_DIR": str(cache)}
    subprocess.run([sys.executable, "-m", "compileall", "-q", "app.py", "latent", "ui", "pages"], cwd=clone,
                   check=True, stdout=subprocess.DEVNULL)
    process = subprocess.Popen(
        [sys.executable, "-m", "ui.serve", "--server.port", str(port), "--server.address",
         "127.0.0.1", "--server.headless", "true"], cwd=clone, env={**os.environ, **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return asyncio.run(first_usable_seconds(f"http://127.0.0.1:{port}", started))
    finally:
        process.terminate()
        process.wait(timeout=30)


async def page_visits(url: str, rounds: int) -> dict[str, list[float]]:
    """Seconds from opening each page's link in a new tab until it is shown, for ``rounds`` rounds
    over all pages in menu order: round 0 is each page's first visit since the server started. Each
    round asks for another query, so that the later (warm) visits compute as much as the first."""
    from playwright.async_api import async_playwright

    out: dict[str, list[float]] = {title: [] for title, _ in PAGES}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        blank = await browser.new_page()  # the browser is up before the first visit is timed
        await blank.goto("about:blank")
        for round_ in range(rounds):
            z0 = 0.5 + 0.25 * round_  # a new query each round: a warm visit does the same work as the first
            for title, path in PAGES:
                page = await browser.new_page(viewport={"width": 1500, "height": 1000})
                page.set_default_timeout(300_000)
                started = time.perf_counter()
                await page.goto(f"{url}/{path}?z={z0},0,0,0,0,0,0,0,0,0&k=8")
                await page.wait_for_function(PAGE_SHOWN, polling="raf")
                out[title].append(time.perf_counter() - started)
                await page.close()
        await browser.close()
    return out


def bench_first_visits(warm_up: bool, rounds: int, servers: int) -> tuple[float, dict[str, list[list[float]]]]:
    """A fresh clone and an empty cache; optionally the set-up's warm-up; then ``servers`` times a fresh
    server process as ``scripts/app.sh`` starts it (``python -m ui.serve``), each visited ``rounds`` times.

    Returns the median seconds until a server is healthy, and per page, per server, the visit times in
    a browser that was already open (first visit first; Explore's is the first visit of the server)."""
    visits: dict[str, list[list[float]]] = {title: [] for title, _ in PAGES}
    ready: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = {**os.environ, "LATENT_CACHE_DIR": str(Path(tmp) / "cache")}
        if warm_up:
            subprocess.run([sys.executable, "-m", "latent", "warm-up"], cwd=clone, env=env, check=True)
        for _ in range(servers):
            port = free_port()
            started = time.perf_counter()
            process = subprocess.Popen(
                [sys.executable, "-m", "ui.serve", "--server.port", str(port), "--server.address",
                 "127.0.0.1", "--server.headless", "true"], cwd=clone, env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_healthy(port, process)
                ready.append(time.perf_counter() - started)
                for title, times in asyncio.run(page_visits(f"http://127.0.0.1:{port}", rounds)).items():
                    visits[title].append(times)
            finally:
                process.terminate()
                process.wait(timeout=30)
    return statistics.median(ready), visits


def first_visit_rows(warm_up: bool, rounds: int, servers: int) -> list[tuple[str, str, str]]:
    label = "after set-up (`python -m latent warm-up`)" if warm_up else "without set-up's warm-up"
    ready, visits = bench_first_visits(warm_up, rounds, servers)
    rows = [(f"Fresh clone, empty cache, {label}: start until the server is ready", f"{ready:.1f} s",
             "`python -m ui.serve` loads every page's modules, the search kernels, the data and the index "
             f"before it listens; median of {servers} starts")]
    for title, per_server in visits.items():
        first = statistics.median(times[0] for times in per_server)
        warm = statistics.median(t for times in per_server for t in times[1:])
        rows.append((f"{title}, first visit {label}", f"{first:.2f} s",
                     f"warm visit {warm:.2f} s; first - warm {first - warm:+.2f} s (medians over {len(per_server)} "
                     f"fresh servers, {rounds - 1} warm visits each)"))
    return rows


def steady_state_rows(n: int, moves: int, quick: bool) -> list[tuple[str, str, str]]:
    """Reruns, slider latency in Chromium (1 and 5 sessions), the Atlas, and start-up."""
    rows: list[tuple[str, str, str]] = []
    print("server-side rerun ...", flush=True)
    rerun, naive = bench_rerun(n)
    rows.append(("Explore rerun after a slider change: the page script on the server", f"{rerun * 1000:.0f} ms",
                 f"baseline without resource caching: {naive * 1000:.0f} ms, {naive / rerun:.1f}x slower"))

    port = free_port()
    log = Path(tempfile.mkdtemp()) / "server.log"
    server = start_server(port, env={"LATENT_LOG_TIMING": "1"}, log=log)
    try:
        wait_healthy(port, server)
        url = f"http://127.0.0.1:{port}"
        print("browser, 1 session ...", flush=True)
        mark = len(log.read_text().splitlines())
        one = asyncio.run(slider_latencies(url, 1, moves))
        one_server = server_script_ms(log, mark)
        print("browser, 5 sessions ...", flush=True)
        mark = len(log.read_text().splitlines())
        five = asyncio.run(slider_latencies(url, 5, moves))
        five_server = server_script_ms(log, mark)
        rows.append(("Slider change to updated page in Chromium, 1 session", f"{median_ms(one):.0f} ms",
                     f"p90 {1000 * sorted(one)[int(0.9 * (len(one) - 1))]:.0f} ms, {len(one)} moves; server script "
                     f"median {statistics.median(one_server):.0f} ms"))
        rows.append(("Slider change to updated page in Chromium, 5 concurrent sessions", f"{median_ms(five):.0f} ms",
                     f"p90 {1000 * sorted(five)[int(0.9 * (len(five) - 1))]:.0f} ms, {len(five)} moves; "
                     f"{median_ms(five) / median_ms(one):.1f}x the 1-session median; server script median "
                     f"{statistics.median(five_server):.0f} ms"))
        print("atlas ...", flush=True)
        atlas = statistics.median(asyncio.run(atlas_seconds(url)) for _ in range(1 if quick else 3))
        rows.append(("Atlas: navigation until all 70,000 points are drawn (WebGL)", f"{atlas:.1f} s", ""))
    finally:
        server.terminate()
        server.wait(timeout=30)

    print("start-up from a fresh clone ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        cache = Path(tmp) / "cache"
        fresh = bench_startup(clone, cache)
        warm = statistics.median(bench_startup(clone, cache) for _ in range(1 if quick else 3))
        shutil.rmtree(clone, ignore_errors=True)
    rows.append(("Start-up, fresh clone with shipped artefacts, empty cache: `python -m ui.serve` to usable page "
                 "(no set-up: it compiles the kernels)",
                 f"{fresh:.1f} s", "includes the browser's start, Python imports, data load and index fit"))
    rows.append(("Start-up, warm restart", f"{warm:.1f} s", f"{fresh / warm:.1f}x faster than fresh"))

    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--out", default=None, help="also write the table to this Markdown file")
    parser.add_argument("--only", choices=["first-visits"], default=None,
                        help="measure only this part (first visits of every page from a fresh clone)")
    args = parser.parse_args(argv)
    n = 5 if args.quick else 30
    moves = 4 if args.quick else 15
    rows: list[tuple[str, str, str]] = []

    if args.only is None:
        rows += steady_state_rows(n, moves, args.quick)
    rounds = 2 if args.quick else 4
    for warm_up, servers in ((False, 1), (True, 1 if args.quick else 3)):
        print(f"first visits from a fresh clone ({'with' if warm_up else 'without'} the warm-up) ...", flush=True)
        rows += first_visit_rows(warm_up, rounds, servers)

    lines = [f"Machine: {machine()}.", "", "| measurement | median | notes |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    table = "\n".join(lines)
    print(table)
    if args.out:
        write_text_atomic(Path(args.out), table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
