"""Geometry timings behind the Cartography page, with the shipped model and the real catalog.

    LATENT_DATA_DIR=../shared/fashion-mnist .venv/bin/python bench/bench_geometry.py [--quick] [--out FILE]

Prints one Markdown table of median wall times (torch on one thread, as the app runs it) for each interactive
step of the page, each with a baseline from the same run where one is meaningful:

- slice decode + grid-difference magnification, 32 x 32 nodes (the page's default) and 64 x 64; baseline: the
  exact magnification from two JVPs per cell on the same slice (and the largest difference in log MF_2);
- the 8 x 8 garment mosaic;
- a continuous geodesic with K = 32 points (L-BFGS), between an item and its nearest other item by
  likelihood; baseline: the straight line's length;
- Dijkstra from a query on the cached 70,000-item graph (query edges included); baseline: loading the graph
  from disk, and building it (decoding all means and weighing the edges; measured once);
- the slice cartogram at L = 64, and the UMAP-map cartogram (splat, flow, and carrying all 70,000 points);
- the UMAP map: a warm load of the shipped file, and the kNN placement of one query on it;
- the whole page (AppTest): a rerun with everything cached, and a run at a new query.

Nothing is asserted: these are measurements for the README. The machine is described in the output.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: make the library importable
    sys.path.insert(0, str(ROOT))


def machine() -> str:
    import torch

    from bench.machine import cpu_model

    cpu = cpu_model()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores (load average {load:.1f} at the start), Python "
            f"{platform.python_version()}, torch {torch.__version__}, 1 torch thread")


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median seconds over ``repeats`` calls (after one warm-up call), and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def ms(seconds: float) -> str:
    return f"{1000 * seconds:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, and a 10,000-item graph")
    parser.add_argument("--out", default=None, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    reps = 3 if args.quick else 7

    from latent.cartography import (
        build_slice,
        graph_stretch,
        magnification_map,
        map_cartogram,
        slice_cartogram,
        slice_thumbnails,
    )
    from latent.catalog import kl_per_dimension, load_or_build_catalog
    from latent.data import load_fashion_mnist, resolve_data_dir
    from latent.geodesic import LatentGraph, continuous_geodesic
    from latent.geometry import torch_threads, vae_decoder
    from latent.model import load_checkpoint
    from latent.search import SearchIndex
    from ui.resources import checkpoint_path

    header = machine()
    ckpt = checkpoint_path()
    model, _ = load_checkpoint(ckpt)
    data = load_fashion_mnist(resolve_data_dir(), download=False)
    catalog = load_or_build_catalog(model, ckpt, data)
    decoder = vae_decoder(model)
    index = SearchIndex().fit(catalog.mu, catalog.sigma)
    kl = kl_per_dimension(catalog)
    i, j = (int(v) for v in np.argsort(-kl, kind="stable")[:2])
    rng = np.random.default_rng(0)
    items = rng.choice(len(catalog), reps + 1, replace=False)
    rows: list[tuple[str, str, str, str]] = []

    with torch_threads(1):
        # Slices: a new query each call (the page's case after a slider move).
        counter = iter(range(10**6))

        def next_z() -> np.ndarray:
            return catalog.mu[items[next(counter) % len(items)]].astype(np.float64)

        for n in (32, 64):
            grid_s, _ = timed(lambda n=n: magnification_map(decoder, build_slice(next_z(), dims=(i, j), resolution=n),
                                                            "l2", "grid"), reps)
            sl = build_slice(next_z(), dims=(i, j), resolution=n)
            exact_s, exact = timed(lambda sl=sl: magnification_map(decoder, sl, "l2", "exact"), max(1, reps // 3))
            diff = np.abs(exact.log_mf - magnification_map(decoder, sl, "l2", "grid").log_mf)
            rows.append((f"slice {n} x {n}: decode + grid-difference log MF₂ (L2)", ms(grid_s),
                         f"exact JVP log MF₂: {ms(exact_s)} ({exact_s / grid_s:.1f}x)",
                         f"estimate - exact in log MF₂: median {np.nanmedian(diff):.3f}, max {np.nanmax(diff):.3f}"))
        kl_s, _ = timed(lambda: magnification_map(decoder, build_slice(next_z(), dims=(i, j)), "bernoulli_kl", "grid"),
                        reps)
        rows.append(("slice 32 x 32: decode + grid-difference log MF₂ (Bernoulli KL)", ms(kl_s), "", ""))
        tiles_s, _ = timed(lambda: slice_thumbnails(decoder, build_slice(next_z(), dims=(i, j)), 8), reps)
        rows.append(("8 x 8 garment mosaic", ms(tiles_s), "", "64 decodes"))

        # Geodesics between an item and its nearest other item by likelihood.
        pairs = []
        for a in items[: max(2, reps // 2)]:
            near, _ = index.search(catalog.mu[a], score="likelihood", k=2)
            b = next(int(v) for v in near if v != a)
            pairs.append((catalog.mu[a].astype(np.float64), catalog.mu[b].astype(np.float64)))
        geo = [continuous_geodesic(decoder, a, b, n_points=32) for a, b in pairs]
        geo_s = statistics.median(g.seconds for g in geo)
        ratio = statistics.median(g.length / g.straight_length for g in geo)
        evals = statistics.median(g.n_evaluations for g in geo)
        rows.append(("continuous geodesic, K = 32 (L-BFGS)", ms(geo_s), f"length {ratio:.3f} x the straight line's",
                     f"{evals:.0f} evaluations, median over {len(geo)} pairs"))

        # The catalog graph: build once, cache, load, query.
        n_graph = 10_000 if args.quick else len(catalog)
        means = catalog.mu[:n_graph]
        t0 = time.perf_counter()
        graph = LatentGraph(k=10, measure="l2").fit(decoder, means)
        build_s = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            path = graph.save(Path(tmp) / "graph.npz", "bench")
            load_s, graph = timed(lambda: LatentGraph.load(path, "bench"), max(1, reps // 3))
        dijkstra_s, _ = timed(lambda: graph.query(decoder, next_z()), reps)
        rows.append((f"Dijkstra from a query on the cached {n_graph:,}-item graph", ms(dijkstra_s),
                     f"load {ms(load_s)}; build {ms(build_s)} (once, behind a button)",
                     f"{len(graph.edges_):,} edges, k = 10"))

        # Cartograms.
        mag32 = magnification_map(decoder, build_slice(next_z(), dims=(i, j)), "l2", "grid")
        sl32 = build_slice(next_z(), dims=(i, j))
        carto_s, cart = timed(lambda: slice_cartogram(mag32, sl32, 64), reps)
        rows.append(("slice cartogram, L = 64", ms(carto_s), "", f"{cart.n_steps} flow steps"))
        from latent.projection import load_map
        from ui.resources import SHIPPED_MAP

        loaded = load_map(SHIPPED_MAP, catalog.mu, catalog.key)
        if loaded.ok and n_graph == len(catalog):
            embedding, map_name = loaded.projector.embedding_, "the shipped UMAP map"
        else:  # any 2-D map of the same size costs the same
            embedding, map_name = catalog.mu[:n_graph, [i, j]].astype(np.float64), f"the (z{i}, z{j}) plane"
        weights = graph_stretch(graph) ** 2

        def stretch_map():
            c = map_cartogram(embedding, weights, 64)
            return c, c.map_points(embedding)

        map_s, (mcart, _) = timed(stretch_map, max(1, reps // 2))
        rows.append((f"map cartogram, L = 64, carrying {len(embedding):,} points", ms(map_s), "",
                     f"{map_name}; {mcart.n_steps} flow steps; computed once per graph"))

        # The UMAP map itself: a warm load of its file, and placing one query on it (kNN average).
        if loaded.ok:
            map_load_s, _ = timed(lambda: load_map(SHIPPED_MAP, catalog.mu, catalog.key), max(1, reps // 2))
            place_s, _ = timed(lambda: loaded.projector.place(next_z()), reps)
            rows.append((f"warm load of the {len(catalog):,}-point UMAP map", ms(map_load_s), "", "the shipped file"))
            rows.append(("kNN placement of one query on the UMAP map", f"{1000 * place_s:.2f} ms", "",
                         f"k = {loaded.projector.placement_k}, inverse-distance weights"))

    # The whole page, server side (AppTest).
    from streamlit.testing.v1 import AppTest

    def page_run(z: str | None = None) -> AppTest:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
        at.query_params.update({"z": z or ",".join(f"{v:g}" for v in catalog.mu[items[0]])})
        at.switch_page("pages/cartography.py")
        return at.run()

    at = page_run()
    rerun_s, _ = timed(lambda: at.run(), reps)
    fresh = iter(catalog.mu[items[1:]])
    fresh_s, _ = timed(lambda: page_run(",".join(f"{v:g}" for v in next(fresh))), min(reps - 1, len(items) - 2))
    rows.append(("Cartography page rerun, everything cached (AppTest)", ms(rerun_s), "", "the page script"))
    rows.append(("Cartography page at a new query (AppTest)", ms(fresh_s), "", "new session, slice not cached"))

    lines = [f"Machine: {header}. The machine was shared with other work; medians of {reps} runs.", "",
             "| step | median | baseline in the same run | note |", "| --- | ---: | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    table = "\n".join(lines)
    print(table)
    if args.out:
        from latent.io import write_text_atomic

        write_text_atomic(args.out, table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
