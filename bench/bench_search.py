"""Benchmark: exact top-k search over the catalog, against the naive torch approach and the memory floor.

Run from the repository root::

    python bench/bench_search.py            # full run (N = 70,000 and 1,000,000), writes bench/results/search.md
    python bench/bench_search.py --quick    # smoke run on a small catalog, prints the table only

Items are synthetic, d = 10, k = 20, shaped like a VAE's posteriors: 7 active dimensions (mu ~ N(0, 1),
sigma log-uniform in [0.03, 0.6]) and 3 collapsed ones (mu ~ N(0, 0.05^2), sigma ~ U(0.9, 1)).
Queries are drawn from the prior N(0, I), as a user moving sliders would. For each score, each catalog
size and each thread count (1, and the default; the count applies to torch, to numpy's BLAS through
threadpoolctl, and to numba) it reports the median latency per query of

- (a) naive: the committed brute-force torch code below, in float32 (torch's default dtype), then
  ``torch.topk``: ``Normal(mu, sigma).log_prob(z).sum(-1)`` for likelihood,
  ``kl_divergence(Normal(z, s), Normal(mu, sigma)).sum(-1)`` for kl, the direct formula for the others;
- (b) ``SearchIndex(backend="fused").search`` (exact, float64 results; the scan reads int16 codes of the
  features, half the bytes that (d) reads);
- (c) ``SearchIndex(backend="blas").search`` (one float32 sgemv over the features, then group maxima);
- (d) the memory floor: the fastest single read of the index's contiguous float32 feature matrix for
  that score, with torch's flat ``.sum()``;

and the ratios a/x (x = the backend that ``SearchIndex()`` picks at that size, marked "auto"), x/d and
c/b (how much faster "fused" is than "blas"). The timers run interleaved for a few rounds and each keeps
its best round's median, so that other jobs on a shared machine disturb all columns alike. Both
backends' top-k are also checked against the naive code run in float64 ("exact" column). The features
of kl_reverse, jeffreys, wasserstein2 and bhattacharyya (and kl's rescoring terms) are built per spread
s; the table times a fixed s (the dashboard moves z far more often than s), and the lines under the
table give the cost of the first query at a new s and of ``SearchIndex.prepare`` for one more spread.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Normal, kl_divergence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: make the library importable
    sys.path.insert(0, str(ROOT))

from latent.scores import SCORES  # noqa: E402 (importable once the sys.path line above has run)
from latent.search import FUSED_MIN_ITEMS, SearchIndex  # noqa: E402 (likewise)

SPREAD_FEATURE_SCORES = [name for name, score in SCORES.items() if score.spread_features]

D = 10
K = 20
DEFAULT_OUT = ROOT / "bench" / "results" / "search.md"

# --------------------------------------------------------------------------------------------------
# The naive approach: what one would write without an index. z (d,), s (d,), mu and sigma (N, d).

Naive = Callable[[Tensor, Tensor, Tensor, Tensor, int], tuple[Tensor, Tensor]]


def naive_likelihood(z: Tensor, mu: Tensor, sigma: Tensor, s: Tensor, k: int) -> tuple[Tensor, Tensor]:
    return torch.topk(Normal(mu, sigma).log_prob(z).sum(-1), k)


def naive_kl(z: Tensor, mu: Tensor, sigma: Tensor, s: Tensor, k: int) -> tuple[Tensor, Tensor]:
    return torch.topk(kl_divergence(Normal(z, s), Normal(mu, sigma)).sum(-1), k, largest=False)


def naive_euclidean(z: Tensor, mu: Tensor, sigma: Tensor, s: Tensor, k: int) -> tuple[Tensor, Tensor]:
    return torch.topk(((z - mu) ** 2).sum(-1).sqrt(), k, largest=False)


def naive_mahalanobis(z: Tensor, mu: Tensor, sigma: Tensor, s: Tensor, k: int) -> tuple[Tensor, Tensor]:
    return torch.topk((((z - mu) / sigma) ** 2).sum(-1).sqrt(), k, largest=False)


def naive_kl_reverse(z: Tensor, mu: Tensor, sigma: Tensor, s: Tensor, k: int) -> tuple[Tensor, Tensor]:
    values = (torch.log(s / sigma) + (sigma**2 + (mu - z) ** 2) / (2 * s**2) - 0.5).sum(-1)
    return torch.topk(values, k, largest=False)


def naive_jeffreys(z: Tensor, mu: Tensor, sigma: Tensor, s: Tensor, k: int) -> tuple[Tensor, Tensor]:
    forward = torch.log(sigma / s) + (s**2 + (z - mu) ** 2) / (2 * sigma**2) - 0.5
    reverse = torch.log(s / sigma) + (sigma**2 + (mu - z) ** 2) / (2 * s**2) - 0.5
    return torch.topk((forward + reverse).sum(-1), k, largest=False)


def naive_bhattacharyya(z: Tensor, mu: Tensor, sigma: Tensor, s: Tensor, k: int) -> tuple[Tensor, Tensor]:
    var_sum = s**2 + sigma**2
    values = ((z - mu) ** 2 / (4 * var_sum) + 0.5 * torch.log(var_sum / (2 * s * sigma))).sum(-1)
    return torch.topk(values, k, largest=False)


def naive_wasserstein2(z: Tensor, mu: Tensor, sigma: Tensor, s: Tensor, k: int) -> tuple[Tensor, Tensor]:
    return torch.topk((((z - mu) ** 2).sum(-1) + ((s - sigma) ** 2).sum(-1)).sqrt(), k, largest=False)


NAIVE: dict[str, Naive] = {
    "likelihood": naive_likelihood,
    "euclidean": naive_euclidean,
    "mahalanobis": naive_mahalanobis,
    "kl": naive_kl,
    "kl_reverse": naive_kl_reverse,
    "jeffreys": naive_jeffreys,
    "bhattacharyya": naive_bhattacharyya,
    "wasserstein2": naive_wasserstein2,
}

# --------------------------------------------------------------------------------------------------


def synthetic_catalog(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """mu and sigma, float64 (n, D), shaped like a VAE's posteriors (see the module docstring)."""
    rng = np.random.default_rng(seed)
    active = 7
    mu = rng.normal(size=(n, D))
    mu[:, active:] *= 0.05
    sigma = np.exp(rng.uniform(np.log(0.03), np.log(0.6), size=(n, D)))
    sigma[:, active:] = rng.uniform(0.9, 1.0, size=(n, D - active))
    return mu, sigma


def machine() -> str:
    import numba

    from bench.machine import cpu_model

    cpu = cpu_model()
    return (
        f"{cpu}, {os.cpu_count()} logical cores; Python {platform.python_version()}, torch {torch.__version__}, "
        f"numpy {np.__version__}, numba {numba.__version__}; torch default threads {torch.get_num_threads()}"
    )


def median_seconds(fn: Callable[[int], object], repeats: int) -> float:
    """Median wall time of fn(i) over i = 0..repeats-1, after one warm-up call."""
    fn(0)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def min_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def set_threads(threads: int) -> None:
    """One thread count for torch (the naive code), BLAS and numba (the index)."""
    torch.set_num_threads(threads)
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    threadpool_limits(limits=threads, user_api="blas")  # stays in effect until the next call
    import numba

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))  # the fused scan's threads


def interleaved(timers: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Run each timer once per round, in turn, and keep each one's best round.

    Other jobs on a shared machine slow whole stretches of a run; alternating the timers gives every
    one of them the same chances, and the best round is the least disturbed estimate of each."""
    best = {name: float("inf") for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            best[name] = min(best[name], timer())
    return best


@dataclass(frozen=True)
class Repeats:
    index: int  # timed single queries for (b), (c) and (d), per round
    naive: int  # timed single queries for (a), per round
    exact: int  # queries checked against the naive code in float64
    rounds: int  # interleaved rounds; each latency is its best round's median


@dataclass
class Row:
    n: int
    threads: int
    score: str
    naive_s: float
    fused_s: float
    blas_s: float
    floor_s: float
    auto: str  # the backend SearchIndex() picks at this size
    exact: bool

    @property
    def index_s(self) -> float:
        return self.fused_s if self.auto == "fused" else self.blas_s


def check_exact(
    index: SearchIndex, name: str, queries: np.ndarray, mu: np.ndarray, sigma: np.ndarray, spread: np.ndarray
) -> bool:
    """Does the index's top-k equal the naive code's top-k, run in float64?"""
    mu64, sigma64, s64 = torch.from_numpy(mu), torch.from_numpy(sigma), torch.from_numpy(np.array(spread))
    for z in queries:
        ids, values = index.search(z, name, K)
        naive_values, naive_ids = NAIVE[name](torch.from_numpy(z), mu64, sigma64, s64, K)
        if not np.array_equal(np.sort(ids), np.sort(naive_ids.numpy())):
            return False
        if not np.allclose(values, naive_values.numpy(), rtol=1e-9, atol=1e-9):
            return False
    return True


def bench_size(
    n: int, thread_counts: list[int], repeats: Repeats, names: list[str], spread_builds: bool,
    log: Callable[[str], None],
) -> tuple[list[Row], dict[str, float], float | None]:
    """The scores at one catalog size: rows for each thread count, each spread-feature score's latency
    at a new spread, and the seconds that ``prepare`` takes for one more spread."""
    mu, sigma = synthetic_catalog(n)
    indexes = {}
    for backend in ("fused", "blas"):
        start = time.perf_counter()
        indexes[backend] = SearchIndex(backend=backend).fit(mu, sigma)
        log(f"N={n:,}: fitted the {backend} index in {time.perf_counter() - start:.1f} s")
    auto = "fused" if n >= FUSED_MIN_ITEMS else "blas"
    index = indexes[auto]
    spread = index.default_spread_
    mu32, sigma32 = torch.from_numpy(mu.astype(np.float32)), torch.from_numpy(sigma.astype(np.float32))
    s32 = torch.from_numpy(spread.astype(np.float32))
    rng = np.random.default_rng(1)
    queries = rng.normal(size=(max(repeats.index, repeats.naive) + 1, D))
    queries32 = torch.from_numpy(queries.astype(np.float32))

    # One query first, so that loading the compiled kernels (once per process) is not counted below.
    for backend_index in indexes.values():
        backend_index.search(queries[0], "euclidean", K)
    colds: dict[str, float] = {}
    prepare_s = None
    if spread_builds:
        for name in SPREAD_FEATURE_SCORES:
            start = time.perf_counter()
            index.search(queries[0], name, K, s=spread * 1.01)
            colds[name] = time.perf_counter() - start
        log(f"N={n:,}: first query at a new spread (builds its features): " + cold_text(colds))
        start = time.perf_counter()
        index.prepare([spread * 1.02])
        prepare_s = time.perf_counter() - start
        log(f"N={n:,}: prepare() for one more spread: {prepare_s:.2f} s")

    rows = []
    for threads in thread_counts:
        set_threads(threads)
        for name in names:
            matrix = torch.from_numpy(index.feature_matrix(name))  # (m, N_pad) float32: what one query reads

            def timers(name: str = name, matrix: Tensor = matrix) -> dict[str, Callable[[], float]]:
                naive, fused, blas = NAIVE[name], indexes["fused"], indexes["blas"]
                return {
                    "naive": lambda: median_seconds(
                        lambda i: naive(queries32[i], mu32, sigma32, s32, K), repeats.naive
                    ),
                    "fused": lambda: median_seconds(lambda i: fused.search(queries[i], name, K), repeats.index),
                    "blas": lambda: median_seconds(lambda i: blas.search(queries[i], name, K), repeats.index),
                    "floor": lambda: min_seconds(lambda: matrix.sum(), repeats.index),
                }

            best = interleaved(timers(), repeats.rounds)
            exact = all(
                check_exact(indexes[b], name, queries[: repeats.exact], mu, sigma, spread) for b in ("fused", "blas")
            )
            rows.append(Row(n, threads, name, best["naive"], best["fused"], best["blas"], best["floor"], auto, exact))
            log(
                f"N={n:,} threads={threads} {name}: naive {best['naive'] * 1e3:.2f} ms, fused "
                f"{best['fused'] * 1e3:.3f} ms, blas {best['blas'] * 1e3:.3f} ms"
            )
    return rows, colds, prepare_s


def cold_text(colds: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds * 1e3:.1f} ms" for name, seconds in colds.items())


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def render(
    rows: list[Row], colds: dict[int, dict[str, float]], prepares: dict[int, float | None], header: str
) -> str:
    lines = [
        header,
        "",
        f"d = {D}, k = {K}; median latency per query in ms. auto: the backend that SearchIndex() picks at that N.",
        "",
        (
            "| N | threads | score | (a) naive | (b) fused | (c) blas | (d) floor | auto | a/auto | auto/d "
            "| c/b | exact |"
        ),
        "|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    lines.extend(
        f"| {r.n:,} | {r.threads} | {r.score} | {ms(r.naive_s)} | {ms(r.fused_s)} | {ms(r.blas_s)} | "
        f"{ms(r.floor_s)} | {r.auto} | {r.naive_s / r.index_s:.1f} | {r.index_s / r.floor_s:.2f} | "
        f"{r.blas_s / r.fused_s:.2f} | {'yes' if r.exact else 'NO'} |"
        for r in rows
    )
    lines.append("")
    for n, cold in colds.items():
        if cold:
            lines.append(
                f"- N = {n:,}, the first query at a new spread s (it builds that s's features): {cold_text(cold)}."
            )
    for n, seconds in prepares.items():
        if seconds is not None:
            lines.append(f"- N = {n:,}, ``SearchIndex.prepare`` for one more spread (every score): {seconds:.2f} s.")
    lines.append("")
    lines.extend(target_lines(rows))
    return "\n".join(lines) + "\n"


def target_lines(rows: list[Row]) -> list[str]:
    """The issue's targets, checked on this run's ratios."""

    def verdict(misses: list[str]) -> str:
        return "met" if not misses else "MISSED: " + ", ".join(misses)

    out = ["Targets (from this run):"]
    at_70k = [r for r in rows if r.n == 70_000]
    at_1m = [r for r in rows if r.n == 1_000_000 and r.threads == 1]
    if at_70k:
        misses = [
            f"{r.score} ({r.threads} thr: {r.naive_s / r.index_s:.1f}x)" for r in at_70k if r.naive_s < 8 * r.index_s
        ]
        out.append(f"- 70k, index >= 8x faster than naive for every score: {verdict(misses)}")
    if at_1m:
        misses = [f"{r.score} ({r.naive_s / r.index_s:.1f}x)" for r in at_1m if r.naive_s < 30 * r.index_s]
        out.append(f"- 1M, one thread, index >= 30x faster than naive: {verdict(misses)}")
    misses = [
        f"{r.score} (N={r.n:,}, {r.threads} thr: {r.index_s / r.floor_s:.2f}x)"
        for r in rows
        if r.index_s > (8 if r.score == "bhattacharyya" else 3) * r.floor_s
    ]
    out.append(f"- index within 3x of the floor (bhattacharyya 8x): {verdict(misses)}")
    fused_wins = [f"{r.score} (N={r.n:,}, {r.threads} thr: {r.blas_s / r.fused_s:.2f}x)" for r in rows
                  if r.blas_s >= 1.5 * r.fused_s]
    out.append(f"- fused >= 1.5x faster than blas somewhere: {'; '.join(fused_wins) if fused_wins else 'NOWHERE'}")
    out.append(f"- index top-k equals the naive float64 top-k: {'yes' if all(r.exact for r in rows) else 'NO'}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: a small catalog, few repeats, no file")
    parser.add_argument("--n", type=int, nargs="+", help="catalog sizes (default: 70000 1000000; --quick: 5000)")
    parser.add_argument("--out", type=Path, help=f"write the table here (default for a full run: {DEFAULT_OUT})")
    parser.add_argument("--scores", nargs="+", choices=list(SCORES), help="scores to time (default: all)")
    parser.add_argument("--note", default="", help="a sentence for the header, e.g. what else ran on the machine")
    parser.add_argument(
        "--no-spread-builds", action="store_true", help="skip timing the builds of new spreads (saves memory)"
    )
    args = parser.parse_args(argv)

    sizes = args.n or ([5_000] if args.quick else [70_000, 1_000_000])
    default_threads = torch.get_num_threads()
    thread_counts = sorted({1, default_threads})
    names = args.scores or list(SCORES)
    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    header = f"# Search benchmark\n\nMachine: {machine()}." + (f" {args.note}" if args.note else "")
    rows: list[Row] = []
    colds: dict[int, dict[str, float]] = {}
    prepares: dict[int, float | None] = {}
    for n in sizes:
        if args.quick:
            repeats = Repeats(index=5, naive=3, exact=2, rounds=1)
        elif n <= 100_000:
            repeats = Repeats(index=60, naive=10, exact=3, rounds=5)
        else:
            repeats = Repeats(index=10, naive=3, exact=1, rounds=3)
        size_rows, colds[n], prepares[n] = bench_size(n, thread_counts, repeats, names, not args.no_spread_builds, log)
        rows.extend(size_rows)
    set_threads(default_threads)

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load is not None:  # other processes on the machine make every latency noisier
        header += f" Load average at the end of the run: {load[0]:.2f} (1 min), {load[2]:.2f} (15 min)."
    table = render(rows, colds, prepares, header)
    print(table)
    out = args.out if args.out is not None else (None if args.quick else DEFAULT_OUT)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table)
        log(f"wrote {out}")
    return 0 if all(r.exact for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
